"""Data that streams: a user's ``torch.utils.data.Dataset`` splits and image folders.

Nothing here copies a data set into memory. A training subset is an index ``Subset``, label
noise a wrapper that shifts the labels of chosen indices as they are read, and batches come
from a ``DataLoader`` whose shuffling generator is seeded per study seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, Subset, default_collate
from torch.utils.data import Dataset as TorchDataset

from .errors import DataError

__all__ = ["NoisyLabels", "collate", "labels_of", "loader", "sample_target"]


class NoisyLabels(TorchDataset):
    """``dataset`` with the class of each index in ``shifts`` moved by that many classes
    (modulo ``num_classes``): a shift in ``1..K-1`` always gives a different class, and the
    wrapper needs no label in advance. Inputs and the other labels are read as they are.

    Examples:
        >>> noisy = NoisyLabels(train, {3: 1, 8: 4}, num_classes=10)
    """

    def __init__(self, dataset: TorchDataset, shifts: Mapping[int, int], num_classes: int) -> None:
        self.dataset, self.shifts, self.num_classes = dataset, dict(shifts), num_classes

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        x, y = self.dataset[index]
        shift = self.shifts.get(int(index))
        if shift is None:
            return x, y
        return x, (int(y) + shift) % self.num_classes


def collate(batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``default_collate``, with float64 inputs and targets made float32 (as the lab's own data
    are) and Python-int labels as int64."""
    x, y = default_collate(batch)[:2]
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    if x.dtype == torch.float64:
        x = x.float()
    if y.dtype == torch.float64:
        y = y.float()
    return x, y


def loader(
    dataset: TorchDataset,
    batch_size: int,
    *,
    seed: int | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A ``DataLoader`` over ``dataset``: shuffled from ``Generator(seed)`` when a seed is given
    (training), in order otherwise (evaluation). The order comes from the sampler's own
    generator, so it is the same with any number of loader workers, persistent or not (the
    loader's generator, which seeds the workers, is a separate one)."""
    sampler, generator = None, None
    if seed is not None:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
        generator = torch.Generator().manual_seed(seed + 0x5EED)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        generator=generator,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )


def sample_target(dataset: TorchDataset, where: str) -> tuple[Any, Any]:
    """The first ``(x, y)`` of ``dataset``, checked to be a pair.

    Raises:
        DataError: an empty data set or items that are not ``(input, target)`` pairs.
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise DataError(f"The {where} data set is empty.")
    item = dataset[0]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DataError(
            f"The {where} data set must yield (input, target) pairs. Got a {type(item).__name__}."
        )
    return item[0], item[1]


def labels_of(dataset: TorchDataset) -> np.ndarray:
    """Every label of ``dataset``: its ``targets`` attribute when it has one (as torchvision's
    data sets do), else one pass that reads each item once (nothing is kept but the labels)."""
    if isinstance(dataset, Subset) and getattr(dataset.dataset, "targets", None) is not None:
        return labels_of(dataset.dataset)[np.asarray(dataset.indices)]
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):  # type: ignore[arg-type]
        return np.asarray(torch.as_tensor(targets).reshape(-1))
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))])  # type: ignore[arg-type]
