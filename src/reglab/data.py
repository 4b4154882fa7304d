"""The data of :func:`reglab.fit`: in-memory ``(X, y)`` tensors (shuffled into batches from a
seeded generator) or any iterable of batches, the task they imply and the targets as the loss
takes them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .core import ConfigError
from .distributed import rank_and_world

__all__ = ["Data", "infer_task", "prepare_targets"]

Data = tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]


def infer_task(y: torch.Tensor) -> str:
    """``'regression'`` for floating-point targets, ``'classification'`` for integers."""
    return "regression" if y.is_floating_point() else "classification"


class _TensorBatches:
    """Shuffled mini-batches of in-memory tensors; the order comes from ``generator``. Under DDP
    every rank draws the same permutation and takes every ``world``-th sample from ``rank`` on,
    cut to an equal length so that every rank runs the same number of steps."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator
    ) -> None:
        self.x, self.y, self.batch_size, self.generator = x, y, batch_size, generator
        self.rank, self.world = rank_and_world()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # drawn on the CPU (the same order on every device), moved once per epoch
        order = torch.randperm(len(self.x), generator=self.generator)
        order = order.to(self.x.device, non_blocking=True)
        if self.world > 1:
            order = order[: len(order) // self.world * self.world][self.rank :: self.world]
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x[idx], self.y[idx]


def _as_pair(data: Any, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not isinstance(data, (tuple, list)):
        return None
    if len(data) != 2 or not all(isinstance(t, torch.Tensor) for t in data):
        raise ConfigError(
            f"The {name!r} parameter of fit must be a pair (X, y) of tensors or an "
            f"iterable of (x, y) batches. Got a {type(data).__name__} of "
            f"{len(data)} items."
        )
    x, y = data
    if len(x) != len(y) or len(x) == 0:
        raise ConfigError(
            f"The {name!r} parameter of fit must hold as many targets as inputs, "
            f"and at least one. Got {len(x)} inputs and {len(y)} targets."
        )
    return x, y


def prepare_targets(y: torch.Tensor, task: str) -> torch.Tensor:
    """Targets as ``fit``'s loss takes them: class indices as ``long`` for classification;
    floats ``(N, 1)`` (a column when ``y`` is 1-D) in the default dtype for regression.

    Examples:
        >>> prepare_targets(torch.tensor([1.0, 2.0]), "regression").shape
        torch.Size([2, 1])
    """
    if task == "regression":
        y = y.to(torch.get_default_dtype())
        return y.unsqueeze(1) if y.ndim == 1 else y
    return y.long()


@dataclass
class Inputs:
    """``fit``'s data on its device: the ``(X, y)`` pairs of tensor data (None for an iterable
    of batches), the training batches, the task and number of classes, and the loss (an
    iterable's task, and so the default loss, is known from its first batch)."""

    train: Data
    val: Data | None
    train_pair: tuple[torch.Tensor, torch.Tensor] | None
    val_pair: tuple[torch.Tensor, torch.Tensor] | None
    batches: Iterable
    task: str | None
    num_classes: int | None
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None

    @classmethod
    def prepare(
        cls,
        train: Data,
        val: Data | None,
        device: torch.device,
        task: str | None,
        num_classes: int | None,
        batch_size: int,
        generator: torch.Generator,
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
    ) -> Inputs:
        train_pair, val_pair = _as_pair(train, "train"), _as_pair(val, "val")
        if train_pair is not None:
            train_pair = (train_pair[0].to(device), train_pair[1].to(device))
        if val_pair is not None:
            val_pair = (val_pair[0].to(device), val_pair[1].to(device))
        batches: Iterable = train
        if train_pair is not None:
            task = task or infer_task(train_pair[1])
            train_pair = (train_pair[0], prepare_targets(train_pair[1], task))
            if task == "classification" and num_classes is None:
                num_classes = int(max(int(t[1].max()) for t in (train_pair, val_pair) if t)) + 1
            batches = _TensorBatches(*train_pair, batch_size, generator)
        if val_pair is not None:
            val_pair = (val_pair[0], prepare_targets(val_pair[1], task or infer_task(val_pair[1])))
        return cls(train, val, train_pair, val_pair, batches, task, num_classes, criterion)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.batches)


def _loader_generators(*data: Any) -> list[torch.Generator]:
    """The generators of ``DataLoader``-like data (its sampler's, which shuffles, and its own,
    which seeds the loader's workers), each once."""
    found: list[torch.Generator] = []
    for d in data:
        batch_sampler = getattr(d, "batch_sampler", None)
        owners = (getattr(d, "sampler", None), getattr(batch_sampler, "sampler", None), d)
        for owner in owners:
            g = getattr(owner, "generator", None)
            if isinstance(g, torch.Generator) and all(g is not f for f in found):
                found.append(g)
    return found
