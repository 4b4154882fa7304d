"""Mixing augmentations: mixup and cutmix. They pair each training sample with another of the
same batch and mix inputs and targets, so targets become class probabilities (soft targets),
which the cross-entropy loss and :class:`reglab.LabelSmoothing` accept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .augment import _IMAGE_SHAPE, _box_mask, _draw_int, _ImageTransform, _Random
from .core import Interval, Predicate, draw_device
from .targets import resolve_num_classes, soft_targets

__all__ = ["CutMix", "Mixup", "beta_sample", "cutmix", "mixup"]


def beta_sample(alpha: float, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` draws of ``Beta(alpha, alpha)``; ``alpha = 0`` gives 1 (no mixing).

    PyTorch's Beta sampler takes no generator, so a NumPy generator is seeded from ``generator``:
    the draws are reproducible from the torch seed alone.
    """
    device = None if generator is None else generator.device  # a CUDA generator draws there
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
    return _beta(alpha, n, np.random.default_rng(seed))


def _beta(alpha: float, n: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` draws of ``Beta(alpha, alpha)`` from ``rng`` (1 where ``alpha = 0``)."""
    draws = rng.beta(max(alpha, 1e-12), max(alpha, 1e-12), size=n)
    return torch.as_tensor(np.where(alpha > 0, draws, 1.0), dtype=torch.float32)


def mixup(
    x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``lam * a + (1 - lam) * a[perm]`` for inputs and (soft) targets; ``lam`` has one value
    per batch or per sample (Zhang et al. 2018, https://arxiv.org/abs/1710.09412)."""
    lx = lam.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
    ly = lam.to(y.dtype).view(-1, 1)
    return lx * x + (1 - lx) * x[perm], ly * y + (1 - ly) * y[perm]


def cutmix(
    x: torch.Tensor,
    y: torch.Tensor,
    lam: torch.Tensor,
    perm: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a box of ``x[perm]`` with area ``1 - lam`` at a random centre into each image
    (clipped at the border) and mix targets by the area actually pasted, the "correct lambda"
    (Yun et al. 2019, https://arxiv.org/abs/1905.04899). ``x`` is ``(B, C, H, W)``."""
    b, _, h, w = x.shape
    lam = lam.expand(b) if lam.numel() == 1 else lam
    cut = torch.sqrt(1 - lam)
    bh, bw = (cut * h).long(), (cut * w).long()
    cy, cx = _draw_int(h, b, generator, x), _draw_int(w, b, generator, x)
    top, left = (cy - bh // 2).clamp(0, h), (cx - bw // 2).clamp(0, w)
    bottom, right = (cy + bh - bh // 2).clamp(0, h), (cx + bw - bw // 2).clamp(0, w)
    mask = _box_mask(h, w, top, left, bottom - top, right - left)
    mixed = torch.where(mask, x[perm], x)
    kept = 1 - ((bottom - top) * (right - left)).to(y.dtype) / (h * w)
    return mixed, kept[:, None] * y + (1 - kept[:, None]) * y[perm]


class _Mixing(_Random):
    """Shared: the number of classes (from the constructor or ``attach``), pairs and lambdas.

    The Beta draws come from a NumPy generator seeded once from the torch generator's seed
    (PyTorch's Beta sampler takes no generator): reproducible from the torch seed alone, and
    no host round trip per batch when the torch generator lives on a GPU.
    """

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None) -> None:
        super().attach(model, optimizer, num_classes=num_classes, generator=generator)
        self._start(num_classes, generator)

    def _start(self, num_classes: int | None, generator: torch.Generator | None) -> None:
        self._classes = resolve_num_classes(
            type(self).__name__, self._config["num_classes"], num_classes
        )
        seed = None if generator is None else [generator.initial_seed(), 0x6D6978]
        self._rng = np.random.default_rng(seed)

    def state_dict(self) -> dict[str, Any]:
        """The NumPy generator behind the Beta draws (its ``bit_generator.state``)."""
        rng = self.__dict__.get("_rng")
        return {"rng": None if rng is None else rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("rng") is not None:
            self._rng.bit_generator.state = dict(state["rng"])

    def _draw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if "_classes" not in self.__dict__:  # a plain loop without attach: the constructor's
            self._start(None, None)
        g, b = self._generator, x.shape[0]
        n = b if self._config["per_sample"] else 1
        lam = _beta(self._config["alpha"], n, self._rng).to(x.device, non_blocking=True)
        perm = torch.randperm(b, generator=g, device=draw_device(g, x))
        return lam, perm.to(x.device, non_blocking=True)


_MIX_CONSTRAINTS = {
    "alpha": Interval(float, 0, None),
    "per_sample": Predicate(lambda v: isinstance(v, bool), "a bool"),
    "num_classes": Interval(int, 2, None, allow_none=True),
}


class Mixup(_Mixing):
    """Train on convex combinations of pairs of samples and of their targets:
    ``lam * (x, y) + (1 - lam) * (x', y')`` with ``lam ~ Beta(alpha, alpha)`` (Zhang et al. 2018,
    https://arxiv.org/abs/1710.09412). Works on images and tables. ``alpha = 0`` is the identity
    on inputs (targets become one-hot).

    Args:
        alpha: Beta parameter, ``>= 0`` (0.2 to 0.4 is usual).
        per_sample: one ``lam`` per sample instead of one per batch.
        num_classes: taken from ``attach`` when None.

    Raises:
        ConfigError: for a negative ``alpha``; at ``attach``, no number of classes.

    Examples:
        >>> recipe = reglab.chain(reglab.Mixup(0.2))
    """

    constraints = dict(_MIX_CONSTRAINTS)

    def __init__(
        self, alpha: float, *, per_sample: bool = False, num_classes: int | None = None
    ) -> None:
        self.alpha = alpha

    def on_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lam, perm = self._draw(x)
        return mixup(x, soft_targets(y, self._classes, x.dtype), lam, perm)


class CutMix(_Mixing, _ImageTransform):
    """Paste a random box from another image of the batch and mix the targets by the pasted
    area (:func:`cutmix`, with the area after clipping at the border: the correct lambda).
    ``lam ~ Beta(alpha, alpha)``; ``alpha = 0`` is the identity on inputs.

    Args:
        alpha: Beta parameter, ``>= 0`` (1.0 is usual).
        per_sample: one ``lam`` per sample instead of one per batch.
        num_classes: taken from ``attach`` when None.
        image_shape: ``(C, H, W)`` when batches come as flat rows (the lab sets it).

    Raises:
        ConfigError: for a negative ``alpha``; at ``attach``, no number of classes.

    Examples:
        >>> recipe = reglab.chain(reglab.CutMix(1.0))
    """

    constraints = {**_MIX_CONSTRAINTS, "image_shape": _IMAGE_SHAPE}

    def __init__(
        self,
        alpha: float,
        *,
        per_sample: bool = False,
        num_classes: int | None = None,
        image_shape: Sequence[int] | None = None,
    ) -> None:
        self.alpha = alpha

    def on_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = self._as_images(x)
        lam, perm = self._draw(x)
        soft = soft_targets(y, self._classes, x.dtype)
        mixed, targets = cutmix(images, soft, lam, perm, self._generator)
        return mixed.reshape(x.shape), targets
