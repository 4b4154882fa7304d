"""Gradient clipping, after every penalty gradient has been added.

Clipping regularizers act in ``on_after_backward``; a chain refuses to put one before a penalty
that adds its gradient there, since that gradient would escape the clipping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .core import PARAMS_CONSTRAINT, Interval, ParamSpec, Regularizer, select_params

__all__ = ["AdaptiveClip", "ClipGradNorm", "ClipGradValue", "adaptive_clip_grad_", "unitwise_norm"]


def unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each output unit (over every dimension but the first, kept for
    broadcasting); of the whole tensor for biases and other 1-D parameters (as timm's AGC).

    Examples:
        >>> unitwise_norm(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
        tensor([[5.],
                [1.]])
    """
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)


@torch.no_grad()
def adaptive_clip_grad_(
    params: Iterable[torch.Tensor], clip_factor: float | torch.Tensor, eps: float = 1e-3
) -> torch.Tensor:
    """Unit-wise adaptive gradient clipping, in place: each unit's gradient is rescaled to at
    most ``clip_factor * max(||w_unit||, eps)``. Brock et al. 2021,
    https://arxiv.org/abs/2102.06171.

    Args:
        params: parameters whose ``.grad`` to clip (those without a gradient are skipped).
        clip_factor: the largest allowed ratio of gradient norm to weight norm.
        eps: floor of the weight norm, so that zero-initialized units can move.

    Returns:
        A boolean scalar tensor: whether any unit was clipped.

    Examples:
        >>> clipped = adaptive_clip_grad_(model.parameters(), 0.01)
    """
    clipped = None  # on the parameters' device: no host round trip
    for p in params:
        if p.grad is None:
            continue
        max_norm = unitwise_norm(p).clamp_min(eps).mul_(clip_factor)
        grad_norm = unitwise_norm(p.grad)
        hit = (grad_norm > max_norm).any()
        clipped = hit if clipped is None else clipped | hit
        p.grad.mul_((max_norm / grad_norm.clamp_min(1e-6)).clamp_(max=1))
    return clipped if clipped is not None else torch.zeros((), dtype=torch.bool)


class _Clip(Regularizer):
    """Counts the steps that were clipped; ``logs()`` reports the fraction."""

    gradient_role = "clips"

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None) -> None:
        self.selection = select_params(model, self._config["params"], owner=type(self).__name__)
        self._steps = 0
        self._clipped = torch.zeros((), dtype=torch.long)

    def _count(self, clipped: torch.Tensor) -> None:
        self._steps += 1
        if self._clipped.device != clipped.device:  # the count lives where the gradients do
            self._clipped = self._clipped.to(clipped.device)
        self._clipped += clipped

    def logs(self) -> dict[str, float]:
        """``clip_fraction``: the fraction of steps that were clipped."""
        return {"clip_fraction": float(self._clipped) / max(self._steps, 1)}

    def state_dict(self) -> dict[str, Any]:
        """The step and clipped-step counts behind ``clip_fraction``."""
        return {"steps": self._steps, "clipped": self._clipped.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._steps = int(state["steps"])
        self._clipped = state["clipped"].to(self._clipped.device).clone()


class ClipGradNorm(_Clip):
    """Rescale gradients so their global norm is at most ``max_norm``.

    ``g <- g * min(1, max_norm / (||g|| + 1e-6))`` with ``||g||`` the ``norm_type``-norm of all
    selected gradients together: exactly ``torch.nn.utils.clip_grad_norm_``, which it calls
    (the ``1e-6`` is PyTorch's; Pascanu et al. 2013,
    https://arxiv.org/abs/1211.5063). Put it after penalties in a chain so their gradients are
    clipped too. ``logs()`` reports ``clip_fraction``, the fraction of steps that were clipped.

    Args:
        max_norm: ``> 0``.
        norm_type: the p of the p-norm, ``> 0`` (``float('inf')`` for the max-norm).
        params: which gradients; default ``'all'`` (every trainable parameter).

    Raises:
        ConfigError: for ``max_norm <= 0`` or ``norm_type <= 0``.

    Examples:
        >>> recipe = reglab.chain(reglab.L2(1e-4), reglab.ClipGradNorm(1.0))
    """

    constraints = {
        "max_norm": Interval(float, 0, None, "neither"),
        "norm_type": Interval(float, 0, None, "neither", finite=False),
        "params": PARAMS_CONSTRAINT,
    }

    def __init__(
        self, max_norm: float, *, norm_type: float = 2.0, params: ParamSpec = "all"
    ) -> None:
        self.max_norm, self.norm_type = max_norm, norm_type

    def on_after_backward(self) -> None:
        norm = torch.nn.utils.clip_grad_norm_(
            self.selection.params, self.max_norm, self.norm_type, foreach=True
        )
        self._count(norm > self.max_norm)


class ClipGradValue(_Clip):
    """Clamp every gradient element to ``[-value, value]``, as
    ``torch.nn.utils.clip_grad_value_``. ``logs()`` reports ``clip_fraction``, the fraction of
    steps in which some element was clamped.

    Args:
        value: ``> 0``.
        params: which gradients; default ``'all'``.

    Raises:
        ConfigError: for ``value <= 0``.

    Examples:
        >>> recipe = reglab.chain(reglab.L2(1e-4), reglab.ClipGradValue(0.5))
    """

    constraints = {"value": Interval(float, 0, None, "neither"), "params": PARAMS_CONSTRAINT}

    def __init__(self, value: float, *, params: ParamSpec = "all") -> None:
        self.value = value

    def on_after_backward(self) -> None:
        grads = [p.grad for p in self.selection.params if p.grad is not None]
        if not grads:
            return
        largest = torch.stack(torch._foreach_norm(grads, float("inf"))).max()
        torch._foreach_clamp_min_(grads, -self.value)
        torch._foreach_clamp_max_(grads, self.value)
        self._count(largest > self.value)


class AdaptiveClip(_Clip):
    """Unit-wise adaptive gradient clipping (AGC, :func:`adaptive_clip_grad_`): each unit's
    gradient norm is kept below ``clip_factor`` times its weight norm. Brock et al. 2021,
    https://arxiv.org/abs/2102.06171, who leave the final classifier layer unclipped
    (``params=['*', '!fc.*']``). ``logs()`` reports ``clip_fraction``.

    Args:
        clip_factor: ``> 0``; Brock et al. use 0.01 to 0.16 depending on the batch size.
        eps: ``> 0``, floor of the weight norm.
        params: which gradients; default ``'all'``.

    Raises:
        ConfigError: for ``clip_factor <= 0`` or ``eps <= 0``.

    Examples:
        >>> recipe = reglab.chain(reglab.AdaptiveClip(0.05))
    """

    constraints = {
        "clip_factor": Interval(float, 0, None, "neither"),
        "eps": Interval(float, 0, None, "neither"),
        "params": PARAMS_CONSTRAINT,
    }

    def __init__(self, clip_factor: float, *, eps: float = 1e-3, params: ParamSpec = "all") -> None:
        self.clip_factor, self.eps = clip_factor, eps

    def on_after_backward(self) -> None:
        self._count(adaptive_clip_grad_(self.selection.params, self.clip_factor, self.eps))
