"""A study's data for one seed, whatever its kind: :class:`Dataset`, and how every kind is
split (train, validation and test; stratified for classes; a training subset; noisy labels)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from ...core import Interval, check_param
from ..studies.fields import SETTINGS
from .errors import DataError
from .streams import NoisyLabels, loader

__all__ = ["CURVE_ROWS", "TEST_FRACTION", "VAL_FRACTION", "Dataset"]

TEST_FRACTION = SETTINGS["test_fraction"].default
VAL_FRACTION = SETTINGS["val_fraction"].default

#: Evaluation batch size of streaming data.
STREAM_EVAL_BATCH = 256
#: A training split larger than this has its per-epoch learning curves measured on a fixed
#: stratified sample of this many rows (the final figures use every row).
CURVE_ROWS = 10_000


@dataclass
class Dataset:
    """One seed's split: float32 features and int64 classes or float32 targets in memory, or
    (``splits``) ``torch.utils.data.Dataset`` objects that stream.

    Read a split with :meth:`source`, which gives what :func:`reglab.fit` and
    :func:`reglab.evaluate` take, whatever the kind; ``x_train`` and the other tensors are None
    for streaming data.
    """

    name: str
    task: str
    x_train: torch.Tensor | None
    y_train: torch.Tensor | None
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    num_classes: int | None
    feature_names: list[str]
    image_shape: tuple[int, int, int] | None = None
    informative: list[int] | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, Any] | None = None
    #: one sample's shape as the model receives it: ``(features,)`` for tables, ``(C, H, W)``
    #: for a streamed image folder
    input_shape: tuple[int, ...] = ()
    #: the training labels before label noise (None when no label was made wrong)
    y_train_clean: torch.Tensor | None = None
    #: the training rows each epoch's learning curve is measured on (a fixed sample of a
    #: large in-memory training split, see :data:`CURVE_ROWS`); None: every row
    curve_index: torch.Tensor | None = None

    def curve(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The ``(X, y)`` sample of the training split (its labels as trained on) that each
        epoch's train metrics use, or None when they use every row."""
        if self.curve_index is None or self.streams:
            return None
        return self.x_train[self.curve_index], self.y_train[self.curve_index]

    @property
    def noisy(self) -> bool:
        """True when some training labels were made wrong on purpose (``label_noise``)."""
        if self.streams:
            return isinstance(self.splits["train"], NoisyLabels)
        return self.y_train_clean is not None

    @property
    def streams(self) -> bool:
        """True when the splits are ``Dataset`` objects read batch by batch."""
        return self.splits is not None

    @property
    def n_features(self) -> int:
        """Inputs per sample (flattened)."""
        return math.prod(self.input_shape)

    def size(self, split: str) -> int:
        """The number of samples of ``split`` (``'train'``, ``'val'`` or ``'test'``)."""
        if self.streams:
            return len(self.splits[split])
        return len(getattr(self, f"y_{split}"))

    def source(
        self,
        split: str,
        *,
        batch_size: int = STREAM_EVAL_BATCH,
        seed: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> Any:
        """``split`` in the form :func:`reglab.fit` and :func:`reglab.evaluate` take: the
        ``(X, y)`` tensors of in-memory data, or a ``DataLoader`` over a streaming split
        (shuffled from ``seed`` when one is given: a training split). ``'train_clean'`` is the
        training split with the labels it had before label noise (the training split itself
        when there is none); ``'train_relabelled'`` the training samples whose label the noise
        changed, with the labels they were given (what :meth:`relabelled` counts)."""
        if split == "train_relabelled":
            return self._relabelled(batch_size, num_workers, pin_memory)
        if split == "train_clean":
            if not self.streams:
                clean = self.y_train if self.y_train_clean is None else self.y_train_clean
                return self.x_train, clean
            train = self.splits["train"]
            chosen = train.dataset if isinstance(train, NoisyLabels) else train
            return loader(chosen, batch_size, num_workers=num_workers, pin_memory=pin_memory)
        if not self.streams:
            return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
        return loader(
            self.splits[split],
            batch_size,
            seed=seed,
            num_workers=num_workers,
            pin_memory=pin_memory,
        )

    @property
    def relabelled(self) -> int:
        """The number of training samples whose label the label noise changed (0 without)."""
        if self.streams:
            train = self.splits["train"]
            return len(train.shifts) if isinstance(train, NoisyLabels) else 0
        if self.y_train_clean is None:
            return 0
        return int((self.y_train != self.y_train_clean).sum())

    def _relabelled(self, batch_size: int, num_workers: int, pin_memory: bool) -> Any:
        """The relabelled training samples with their wrong labels (see :meth:`source`)."""
        if not self.streams:
            if self.y_train_clean is None:
                return self.x_train[:0], self.y_train[:0]
            changed = self.y_train != self.y_train_clean
            return self.x_train[changed], self.y_train[changed]
        train = self.splits["train"]
        chosen = sorted(train.shifts) if isinstance(train, NoisyLabels) else []
        return loader(
            Subset(train, chosen), batch_size, num_workers=num_workers, pin_memory=pin_memory
        )

    def sample(self, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` training samples as a batch (a pre-flight check's input)."""
        if not self.streams:
            return self.x_train[:n], self.y_train[:n]
        train = self.splits["train"]
        n = min(n, len(train))
        return next(iter(loader(Subset(train, range(n)), n)))


def _split(
    y: np.ndarray,
    task: str,
    seed: int,
    train_size: int | None,
    val_fraction: float = VAL_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> tuple[np.ndarray, ...]:
    n = len(y)
    idx = np.arange(n)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if n - n_test - n_val < 2 or n_test < 1 or n_val < 1:
        raise DataError(
            f"The data has {n} rows: too few to split into train, validation and test sets "
            f"({val_fraction:g} for validation, {test_fraction:g} for test)."
        )

    rest, test = _cut(idx, n_test, y, task, seed)
    pool, val = _cut(rest, n_val, y, task, seed)
    return _subset(pool, y, task, seed, train_size), val, test


def _cut(
    pool: np.ndarray, size: int, y: np.ndarray | None, task: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``pool`` split into the rest and ``size`` indices, stratified by ``y`` for classes."""
    from sklearn.model_selection import train_test_split  # here: see data._builtin

    strata = y[pool] if task == "classification" and y is not None else None
    try:
        return train_test_split(pool, test_size=size, random_state=seed, stratify=strata)
    except ValueError:  # a class too rare to stratify: fall back to a plain shuffle
        return train_test_split(pool, test_size=size, random_state=seed)


def _subset(
    pool: np.ndarray, y: np.ndarray | None, task: str, seed: int, train_size: int | None
) -> np.ndarray:
    """``train_size`` of the indices ``pool``, stratified when the task has classes."""
    if train_size is None:
        return np.sort(pool)
    check_param("compare", "train_size", train_size, Interval(int, 2, len(pool)))
    if train_size < len(pool):
        pool, _ = _cut(pool, len(pool) - train_size, y, task, seed)
    return np.sort(pool)


def _noise(n: int, label_noise: float, num_classes: int, seed: int) -> dict[int, int]:
    """Which of ``n`` training positions get a wrong label, and by how many classes each
    moves (``1..K-1``: always another class)."""
    rng = np.random.default_rng([seed, 7])
    flip = rng.choice(n, size=round(label_noise * n), replace=False)
    shift = rng.integers(1, num_classes, size=len(flip))
    return {int(i): int(s) for i, s in zip(flip, shift, strict=True)}
