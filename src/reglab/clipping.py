"""Gradient clipping, after every penalty gradient has been added."""

from __future__ import annotations

import torch

from .core import PARAMS_CONSTRAINT, Interval, ParamSpec, Regularizer, select_params

__all__ = ["ClipGradNorm"]


class ClipGradNorm(Regularizer):
    """Rescale gradients so their global norm is at most ``max_norm``.

    ``g <- g * min(1, max_norm / ||g||)`` with ``||g||`` the ``norm_type``-norm of all selected
    gradients together, as ``torch.nn.utils.clip_grad_norm_`` (Pascanu et al. 2013,
    https://arxiv.org/abs/1211.5063). Put it after penalties in a chain so their gradients are
    clipped too. ``logs()`` reports ``clip_fraction``, the fraction of steps that were clipped.

    Args:
        max_norm: ``> 0``.
        norm_type: the p of the p-norm, ``> 0`` (``float('inf')`` for the max-norm).
        params: which gradients; default ``'all'`` (every trainable parameter).

    Raises:
        ConfigError: for ``max_norm <= 0`` or ``norm_type <= 0``.

    Example:
        >>> recipe = reglab.chain(reglab.L2(1e-4), reglab.ClipGradNorm(1.0))
    """

    constraints = {
        "max_norm": Interval(float, 0, None, "neither"),
        "norm_type": Interval(float, 0, None, "neither"),
        "params": PARAMS_CONSTRAINT,
    }

    def __init__(
        self, max_norm: float, *, norm_type: float = 2.0, params: ParamSpec = "all"
    ) -> None:
        self.max_norm, self.norm_type = max_norm, norm_type
        self._steps = 0
        self._clipped = torch.zeros((), dtype=torch.long)

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None) -> None:
        self.selection = select_params(model, self._config["params"], owner="ClipGradNorm")
        self._steps = 0
        self._clipped = torch.zeros((), dtype=torch.long)

    def on_after_backward(self) -> None:
        norm = torch.nn.utils.clip_grad_norm_(
            self.selection.params, self.max_norm, self.norm_type, foreach=True
        )
        self._steps += 1
        self._clipped += norm > self.max_norm

    def logs(self) -> dict[str, float]:
        return {"clip_fraction": float(self._clipped) / max(self._steps, 1)}
