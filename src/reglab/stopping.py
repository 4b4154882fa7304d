"""Early stopping that restores the best weights."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .core import Choice, ConfigError, Interval, Predicate, Regularizer

__all__ = ["EarlyStopping", "StopReason", "infer_mode", "stop_message"]

_MAX_HINTS = ("acc", "r2", "auc", "f1", "precision", "recall", "score")


def infer_mode(monitor: str) -> str:
    """``'max'`` for names like accuracy, r2, auc, f1; ``'min'`` otherwise (losses, errors)."""
    lowered = monitor.lower()
    return "max" if any(h in lowered for h in _MAX_HINTS) else "min"


class StopReason(enum.Enum):
    """Why :class:`EarlyStopping` ended training: it has not (``NOT_STOPPED``); the monitor did
    not improve for ``patience`` epochs after a best one (``PATIENCE_EXHAUSTED``) or never beat
    ``baseline`` (``BASELINE_NOT_REACHED``); it became NaN or infinite
    (``NON_FINITE_METRIC``); it
    reached ``stopping_threshold`` (``STOPPING_THRESHOLD``) or went past
    ``divergence_threshold`` (``DIVERGENCE_THRESHOLD``). The last three are Lightning's
    ``EarlyStoppingReason`` values of the same names."""

    NOT_STOPPED = "not_stopped"
    PATIENCE_EXHAUSTED = "patience_exhausted"
    BASELINE_NOT_REACHED = "baseline_not_reached"
    NON_FINITE_METRIC = "non_finite_metric"
    STOPPING_THRESHOLD = "stopping_threshold"
    DIVERGENCE_THRESHOLD = "divergence_threshold"


def _finite_or_none(v: Any) -> bool:
    return v is None or (
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    )


class EarlyStopping(Regularizer):
    """Stop after ``patience`` epochs in a row without improvement; restore the best weights.

    An epoch improves when its value beats the best so far by more than ``delta``
    (``value < best - delta`` in ``'min'`` mode, ``value > best + delta`` in ``'max'``), where
    ``delta`` is ``min_delta``, or ``min_delta * |best|`` when ``relative``. With a
    ``baseline``, an epoch resets the wait only when it also beats the baseline by ``delta``
    (as Keras counts), so training stops after ``patience`` epochs that do not. The first
    ``start_from_epoch`` calls are a warm-up: not monitored, never the best. Calls are counted,
    so this does not depend on how the caller numbers its epochs (from 0, from 1, or not at all);
    the ``epoch`` a caller passes only labels ``best_epoch`` and ``stopped_epoch``.

    Each monitored epoch is checked in Lightning's order: a NaN or infinite value stops at once
    (``check_finite``); a value worse than ``divergence_threshold`` stops at once; a value that
    reaches ``stopping_threshold`` (``value < threshold`` in ``'min'`` mode, ``>`` in ``'max'``)
    stops after it is recorded as the best; otherwise patience decides.

    With ``restore_best`` the weights of the best epoch seen are loaded at the end of training,
    however it ended: stopped by this stopper, by another one, by the end of the epochs, with a
    baseline never beaten (Keras's ``restore_best_weights``; Prechelt 1998,
    https://doi.org/10.1007/3-540-49430-8_3). The reason for stopping is in ``stop_reason`` (a
    :class:`StopReason`) and ``message``.

    Args:
        monitor: a metric logged each epoch, e.g. ``'val_loss'``, ``'val_accuracy'``.
        patience: stop at the ``patience``-th epoch in a row without improvement (as Keras
            and Lightning count); ``0`` stops at the first. ``>= 0``.
        min_delta: the least change that counts as an improvement, ``>= 0``.
        relative: ``min_delta`` is a fraction of the best value (``0.01``: 1%).
        mode: ``'min'``, ``'max'``, or None to infer it from the name (:func:`infer_mode`).
        baseline: a value the monitor must beat, or None.
        start_from_epoch: the number of first epoch ends ignored by the monitor, ``>= 0``.
        restore_best: load the best epoch's weights in ``on_fit_end``.
        check_finite: stop at the first NaN or infinite value of the monitor.
        stopping_threshold: stop as soon as the monitor reaches this value, or None.
        divergence_threshold: stop as soon as the monitor is worse than this value, or None.

    Raises:
        ConfigError: for a bad argument; at the first epoch end, a ``monitor`` that is not among
            the logged metrics (the message lists them).

    Examples:
        >>> stopper = reglab.EarlyStopping("val_loss", patience=10, stopping_threshold=0.01)
        >>> stopper.stop_reason, stopper.best_epoch
        (<StopReason.NOT_STOPPED: 'not_stopped'>, None)
    """

    constraints = {
        "monitor": Predicate(lambda v: isinstance(v, str) and v != "", "a metric name"),
        "patience": Interval(int, 0, None),
        "min_delta": Interval(float, 0, None),
        "relative": Predicate(lambda v: isinstance(v, bool), "a bool"),
        "mode": Choice("min", "max", None),
        "baseline": Predicate(_finite_or_none, "a finite number or None"),
        "start_from_epoch": Interval(int, 0, None),
        "restore_best": Predicate(lambda v: isinstance(v, bool), "a bool"),
        "check_finite": Predicate(lambda v: isinstance(v, bool), "a bool"),
        "stopping_threshold": Predicate(_finite_or_none, "a finite number or None"),
        "divergence_threshold": Predicate(_finite_or_none, "a finite number or None"),
    }

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        patience: int = 10,
        min_delta: float = 0.0,
        relative: bool = False,
        mode: str | None = None,
        baseline: float | None = None,
        start_from_epoch: int = 0,
        restore_best: bool = True,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
    ) -> None:
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.relative, self.baseline, self.start_from_epoch = relative, baseline, start_from_epoch
        self.mode = mode or infer_mode(monitor)
        self.restore_best, self.check_finite = restore_best, check_finite
        self.stopping_threshold = stopping_threshold
        self.divergence_threshold = divergence_threshold
        self._model: nn.Module | None = None
        self._reset()

    def _reset(self) -> None:
        self.best: float = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: int | None = None
        self.baseline_beaten = self.baseline is None
        self.wait = 0
        self.epochs_seen = 0
        self.stopped_epoch: int | None = None
        self.stop_reason = StopReason.NOT_STOPPED
        self.last_value: float | None = None
        self._best_state: dict[str, torch.Tensor] | None = None

    @property
    def message(self) -> str:
        """A readable account of the decision."""
        best = (
            f"best {self.best:.6g} at epoch {self.best_epoch}"
            if self.best_epoch is not None
            else "no best epoch"
        )
        reason = self.stop_reason
        if reason is StopReason.BASELINE_NOT_REACHED:
            return (
                f"{self.monitor} did not beat the baseline {self.baseline} in "
                f"{self.patience} epochs; {best}"
            )
        if reason is StopReason.PATIENCE_EXHAUSTED:
            return (
                f"{self.monitor} did not improve by more than {self.min_delta} for "
                f"{self.patience} epochs; {best}"
            )
        if reason is StopReason.NON_FINITE_METRIC:
            return f"{self.monitor} became {self.last_value} at epoch {self.stopped_epoch}; {best}"
        if reason is StopReason.STOPPING_THRESHOLD:
            sign = "<" if self.mode == "min" else ">"
            return (
                f"{self.monitor} {self.last_value:.6g} {sign} stopping_threshold="
                f"{self.stopping_threshold} at epoch {self.stopped_epoch}"
            )
        if reason is StopReason.DIVERGENCE_THRESHOLD:
            sign = ">" if self.mode == "min" else "<"
            return (
                f"{self.monitor} {self.last_value:.6g} {sign} divergence_threshold="
                f"{self.divergence_threshold} at epoch {self.stopped_epoch}; {best}"
            )
        if self.best_epoch is None:
            return "not stopped; no epoch seen"
        return f"not stopped; best {self.monitor} {self.best:.6g} at epoch {self.best_epoch}"

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None) -> None:
        self._model = model
        self._reset()

    def _beats(self, value: float, reference: float) -> bool:
        if not math.isfinite(value):
            return False
        delta = (
            self.min_delta * abs(reference)
            if self.relative and math.isfinite(reference)
            else self.min_delta
        )
        if self.mode == "min":
            return value < reference - delta
        return value > reference + delta

    def _worse_than(self, value: float, threshold: float | None) -> bool:
        if threshold is None:
            return False
        return value > threshold if self.mode == "min" else value < threshold

    def _reached(self, value: float, threshold: float | None) -> bool:
        if threshold is None:
            return False
        return value < threshold if self.mode == "min" else value > threshold

    def _stop(self, epoch: int, reason: StopReason) -> bool:
        self.stopped_epoch, self.stop_reason = epoch, reason
        return True

    def on_epoch_end(self, metrics: Mapping[str, float]) -> bool:
        if self.monitor not in metrics:
            available = ", ".join(repr(k) for k in metrics if k != "epoch")
            raise ConfigError(
                f"The 'monitor' parameter of EarlyStopping must be one of {available}. "
                f"Got {self.monitor!r}."
            )
        value = float(metrics[self.monitor])
        self.epochs_seen += 1
        epoch = int(metrics.get("epoch", self.epochs_seen))
        if self.epochs_seen <= self.start_from_epoch:  # counted: any epoch numbering works
            return False
        self.last_value = value
        if self.check_finite and not math.isfinite(value):
            return self._stop(epoch, StopReason.NON_FINITE_METRIC)
        if self._worse_than(value, self.divergence_threshold):
            return self._stop(epoch, StopReason.DIVERGENCE_THRESHOLD)
        improved = self._beats(value, self.best)
        if improved:
            self.best, self.best_epoch = value, epoch
            if self.restore_best and self._model is not None:
                self._snapshot()
        if self._reached(value, self.stopping_threshold):
            return self._stop(epoch, StopReason.STOPPING_THRESHOLD)
        if improved and (self.baseline is None or self._beats(value, float(self.baseline))):
            self.baseline_beaten, self.wait = True, 0
            return False
        self.wait += 1
        if self.wait >= self.patience:
            return self._stop(
                epoch,
                StopReason.PATIENCE_EXHAUSTED
                if self.baseline_beaten
                else StopReason.BASELINE_NOT_REACHED,
            )
        return False

    def _snapshot(self) -> None:
        state = self._model.state_dict()
        if self._best_state is None:
            self._best_state = {k: v.detach().clone() for k, v in state.items()}
        else:
            for k, v in state.items():
                self._best_state[k].copy_(v)

    def on_fit_end(self) -> None:
        if self.restore_best and self._best_state is not None and self._model is not None:
            self._model.load_state_dict(self._best_state)

    def logs(self) -> dict[str, float]:
        return {} if self.best_epoch is None else {"best_epoch": float(self.best_epoch)}

    def state_dict(self) -> dict[str, Any]:
        """The progress so far (never the constructor arguments), best weights included."""
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "epochs_seen": self.epochs_seen,
            "stopped_epoch": self.stopped_epoch,
            "stop_reason": self.stop_reason.value,
            "baseline_beaten": self.baseline_beaten,
            "last_value": self.last_value,
            "best_state": self._best_state,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`; constructor arguments are left as they are."""
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.wait, self.epochs_seen = state["wait"], state["epochs_seen"]
        self.stopped_epoch = state["stopped_epoch"]
        self.stop_reason = StopReason(state["stop_reason"])
        self.baseline_beaten = bool(state.get("baseline_beaten", self.best_epoch is not None))
        self.last_value = state.get("last_value")
        best = state.get("best_state")
        device = None
        if self._model is not None:
            device = next((t.device for t in self._model.state_dict().values()), None)
        self._best_state = (
            None if best is None else {k: v.to(device).clone() for k, v in best.items()}
        )


def stop_message(recipe: Regularizer) -> str:
    """The ``message`` of the first member of ``recipe`` (a chain or one regularizer) that
    stopped training (its ``stop_reason`` is not ``NOT_STOPPED``), or ``""``.

    Examples:
        >>> stop_message(recipe)  # after fit: "val_loss did not improve ... for 5 epochs; ..."
    """
    for reg in getattr(recipe, "regularizers", (recipe,)):
        if getattr(reg, "stop_reason", None) not in (None, StopReason.NOT_STOPPED):
            return reg.message
    return ""
