"""Batch transforms applied at the ``on_batch`` hook: they see training batches only."""

from __future__ import annotations

import torch

from .core import Interval, Regularizer

__all__ = ["GaussianNoise", "gaussian_noise"]


def gaussian_noise(
    x: torch.Tensor, std: float | torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``x + std * N(0, 1)``, elementwise, drawn from ``generator``.

    Adding input noise is equivalent to Tikhonov regularization for small noise
    (Bishop 1995, https://doi.org/10.1162/neco.1995.7.1.108).

    Example:
        >>> gaussian_noise(torch.zeros(3), 0.1, torch.Generator().manual_seed(0))
    """
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + noise.mul_(std)


class GaussianNoise(Regularizer):
    """Add Gaussian noise ``N(0, std**2)`` to every training input (not to targets).

    The lab standardizes features on the training split, so ``std`` is in units of each feature's
    standard deviation there.

    Args:
        std: noise standard deviation, ``>= 0``; a float or a tensor that broadcasts.

    Raises:
        ConfigError: for a negative ``std``.

    Example:
        >>> recipe = reglab.chain(reglab.GaussianNoise(0.3))
    """

    constraints = {"std": Interval(float, 0, None)}

    def __init__(self, std: float) -> None:
        self.std = std
        self._generator: torch.Generator | None = None

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None) -> None:
        self._generator = generator

    def on_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_noise(x, self.std, self._generator), y
