"""Weight averaging: an exponential moving average (EMA) and stochastic weight averaging (SWA).

Both keep an average of every trainable parameter and floating-point buffer (BatchNorm's running
statistics) beside the model and swap it in at ``on_fit_end``. :meth:`swap` exchanges the two
again, so the raw weights can still be evaluated (the lab reports both).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .core import ConfigError, Interval, Predicate, Regularizer

__all__ = ["EMA", "SWA"]


class _Averaging(Regularizer):
    """Holds the average; ``swap`` exchanges it with the model's tensors."""

    def __init__(self) -> None:
        self._tensors: list[torch.Tensor] | None = None
        self._avg: list[torch.Tensor] = []
        self.updates = 0
        self.averaged_in = False

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None) -> None:
        self.model, self.optimizer = model, optimizer
        params = [p for p in model.parameters() if p.requires_grad]
        buffers = [b for b in model.buffers() if b.is_floating_point()]
        # the Parameter objects themselves, never detached aliases: the lab's population
        # engine moves a member's parameters to new memory (``p.data = ...``) when a neighbour
        # leaves, and an alias would go on averaging the old memory. Every use is under
        # no_grad and only reads them (or copies into them), so no per-step detach is needed.
        self._tensors = params + buffers
        self._avg = [t.detach().clone() for t in self._tensors]
        self.updates, self.averaged_in = 0, False

    def _check_attached(self, what: str) -> list[torch.Tensor]:
        if self._tensors is None:
            raise ConfigError(
                f"The 'self' parameter of {type(self).__name__}.{what} must be attached to a "
                "model first (reglab.fit and recipe.attach do it). Got an unattached one."
            )
        return self._tensors

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the model's parameters and buffers with the average (again to undo)."""
        for t, a in zip(self._check_attached("swap"), self._avg, strict=True):
            held = t.clone()
            t.copy_(a)
            a.copy_(held)
        self.averaged_in = not self.averaged_in

    def on_fit_end(self) -> None:
        if self.updates > 0 and not self.averaged_in:
            self.swap()

    def state_dict(self) -> dict[str, Any]:
        """The average, the number of updates and whether the average is swapped in."""
        self._check_attached("state_dict")
        return {
            "averaged": [a.clone() for a in self._avg],
            "updates": self.updates,
            "averaged_in": self.averaged_in,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output into an attached averager of the same model."""
        tensors = self._check_attached("load_state_dict")
        averaged = state["averaged"]
        if len(averaged) != len(tensors) or any(
            a.shape != t.shape for a, t in zip(averaged, tensors, strict=True)
        ):
            raise ConfigError(
                f"The 'state' parameter of {type(self).__name__}.load_state_dict must come from "
                f"the same model. Got {len(averaged)} tensors for a model with {len(tensors)}."
            )
        with torch.no_grad():
            for a, saved in zip(self._avg, averaged, strict=True):
                a.copy_(saved)
        self.updates, self.averaged_in = int(state["updates"]), bool(state["averaged_in"])

    def logs(self) -> dict[str, float]:
        """``averaged_updates``: how many times the average was updated so far."""
        return {"averaged_updates": float(self.updates)}


class EMA(_Averaging):
    """Exponential moving average of the weights, updated after every optimizer step.

    The first update copies the weights; each later one does ``avg <- d * avg + (1 - d) * w``.
    With ``warmup=False``, ``d = decay``: exactly
    ``torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay),
    use_buffers=True)`` on the parameters and floating-point buffers (tested against it).
    With ``warmup`` (the default), ``d = min(decay, (1 + t) / (10 + t))`` after ``t`` updates,
    TensorFlow's ``ExponentialMovingAverage(decay, num_updates)`` schedule, so a high decay does
    not keep the first trained weights for thousands of steps. BatchNorm statistics (the
    floating-point buffers) are averaged the same way; integer buffers such as
    ``num_batches_tracked`` stay the model's own. ``on_fit_end`` swaps the average into the
    model. Polyak and Juditsky 1992, https://doi.org/10.1137/0330046.

    Averaged weights are not exactly sparse: put EMA in a recipe with L1 only knowingly.

    Args:
        decay: in ``(0, 1)``; 0.999 averages over roughly the last 1,000 steps.
        warmup: use the smaller decay early on.

    Raises:
        ConfigError: for ``decay`` outside ``(0, 1)``.

    Examples:
        >>> recipe = reglab.chain(reglab.L2(1e-4), reglab.EMA(0.99))
    """

    constraints = {
        "decay": Interval(float, 0, 1, "neither"),
        "warmup": Predicate(lambda v: isinstance(v, bool), "a bool"),
    }

    def __init__(self, decay: float = 0.999, *, warmup: bool = True) -> None:
        super().__init__()
        self.decay, self.warmup = decay, warmup

    def current_decay(self) -> float:
        """The decay the next update will use: 0 for the first, which copies the weights."""
        if self.updates == 0:
            return 0.0
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def on_after_step(self) -> None:
        tensors = self._check_attached("on_after_step")
        if self.updates == 0:
            torch._foreach_copy_(self._avg, tensors)
        else:
            torch._foreach_lerp_(self._avg, tensors, 1 - self.current_decay())
        self.updates += 1


class SWA(_Averaging):
    """Stochastic weight averaging: the equal-weight mean of the weights at the end of every
    epoch from epoch ``start`` on (Izmailov et al. 2018, https://arxiv.org/abs/1803.05407).
    From ``start`` on the learning rate can be held at ``lr`` (the constant SWA schedule).

    ``on_fit_end`` swaps the average in and, if the model has BatchNorm layers, recomputes
    their statistics for the averaged weights with ``torch.optim.swa_utils.update_bn`` over the
    inputs of the last training epoch (at most ``bn_samples`` of them, as this regularizer saw
    them in ``on_batch``). If training ends before ``start``, nothing is swapped.

    Args:
        start: first epoch (1-based) whose final weights enter the average, ``>= 1``.
        lr: learning rate from epoch ``start`` on, ``> 0``; None leaves the optimizer alone.
        bn_samples: inputs kept for the BatchNorm update, ``>= 1``.

    Raises:
        ConfigError: for ``start < 1``, ``lr <= 0`` or ``bn_samples < 1``.

    Examples:
        >>> recipe = reglab.chain(reglab.SWA(start=50, lr=1e-3))
    """

    constraints = {
        "start": Interval(int, 1, None),
        "lr": Interval(float, 0, None, "neither", allow_none=True),
        "bn_samples": Interval(int, 1, None),
    }

    def __init__(self, start: int, *, lr: float | None = None, bn_samples: int = 2048) -> None:
        super().__init__()
        self.start, self.lr, self.bn_samples = start, lr, bn_samples

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None) -> None:
        super().attach(model, optimizer, num_classes=num_classes, generator=generator)
        self._has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        self._epoch, self._kept = 0, 0
        self._seen: list[torch.Tensor] = []  # inputs of the epoch under way, for update_bn
        self._last_epoch: list[torch.Tensor] = []
        if self.start == 1:
            self._set_lr()

    def _set_lr(self) -> None:
        if self.lr is not None and self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr

    def on_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._has_bn and self._epoch + 1 >= self.start and self._kept < self.bn_samples:
            self._seen.append(x[: self.bn_samples - self._kept].detach())
            self._kept += len(self._seen[-1])
        return x, y

    @torch.no_grad()
    def on_epoch_end(self, metrics: Mapping[str, float]) -> bool:
        self._epoch = int(metrics.get("epoch", self._epoch + 1))
        if self._epoch >= self.start:
            self.updates += 1
            torch._foreach_lerp_(self._avg, self._tensors, 1.0 / self.updates)
        if self._epoch + 1 == self.start:
            self._set_lr()
        if self._seen:
            self._last_epoch, self._seen, self._kept = self._seen, [], 0
        return False

    def state_dict(self) -> dict[str, Any]:
        """The average and counts, and the inputs kept for recomputing BatchNorm statistics."""
        return {
            **super().state_dict(),
            "epoch": self._epoch,
            "kept": self._kept,
            "seen": list(self._seen),
            "last_epoch": list(self._last_epoch),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._epoch, self._kept = int(state["epoch"]), int(state["kept"])
        device = self._tensors[0].device if self._tensors else None
        self._seen = [t.to(device) for t in state["seen"]]
        self._last_epoch = [t.to(device) for t in state["last_epoch"]]

    def on_fit_end(self) -> None:
        if self.updates == 0 or self.averaged_in:
            return
        self.swap()
        if self._has_bn and self._last_epoch:
            torch.optim.swa_utils.update_bn(self._last_epoch, self.model)
        self._last_epoch = []
