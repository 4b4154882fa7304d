"""``ConfigError``, argument constraints, and the one message template for bad arguments.

Every check ends in the same sentence: ``The '<name>' parameter of <owner> must be <rule>. Got
<value>.`` Constraints are declared once per class (a table from argument to constraint) and
checked before the constructor body runs (see :class:`reglab.Regularizer`).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from .errors import ConfigError

__all__ = [
    "Choice",
    "ConfigError",
    "Constraint",
    "Interval",
    "Predicate",
    "check_param",
    "unknown_name",
    "validate_params",
]


# --------------------------------------------------------------------------- constraints


def short_repr(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        if value.numel() <= 4:
            return f"tensor({value.tolist()})"
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Constraint:
    """A rule one argument must satisfy; ``describe()`` completes "must be ..."."""

    def check(self, value: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError


_BOUNDS = {"both": ("[", "]"), "left": ("[", ")"), "right": ("(", "]"), "neither": ("(", ")")}


class Interval(Constraint):
    """A real (``float``) or integer (``int``) number within bounds.

    Floats may also be given as tensors (per-member hyperparameters); every element must lie in the
    interval. Booleans and NaN are rejected, and so are infinities unless ``finite=False`` (a
    p-norm's order, where ``inf`` means the max-norm).
    """

    def __init__(
        self,
        kind: type,
        low: float | None = None,
        high: float | None = None,
        closed: str = "both",
        *,
        allow_none: bool = False,
        finite: bool = True,
    ) -> None:
        self.kind, self.low, self.high, self.closed = kind, low, high, closed
        self.allow_none, self.finite = allow_none, finite

    def _in_range(self, t: torch.Tensor) -> bool:
        if torch.isnan(t).any() or (self.finite and torch.isinf(t).any()):
            return False
        left_closed = self.closed in ("both", "left")
        right_closed = self.closed in ("both", "right")
        if self.low is not None:
            ok = t >= self.low if left_closed else t > self.low
            if not bool(ok.all()):
                return False
        if self.high is not None:
            ok = t <= self.high if right_closed else t < self.high
            if not bool(ok.all()):
                return False
        return True

    def check(self, value: Any) -> bool:
        if value is None:
            return self.allow_none
        if isinstance(value, bool):
            return False
        if isinstance(value, torch.Tensor):
            if self.kind is int and value.is_floating_point():
                return False
            return value.numel() > 0 and self._in_range(value.detach().double())
        number_type = numbers.Integral if self.kind is int else numbers.Real
        if not isinstance(value, number_type):
            return False
        return self._in_range(torch.tensor(float(value), dtype=torch.float64))

    def describe(self) -> str:
        noun = "an int" if self.kind is int else "a float"
        if self.low is not None and self.high is not None:
            left, right = _BOUNDS[self.closed]
            text = f"{noun} in {left}{self.low}, {self.high}{right}"
        elif self.low is not None:
            op = ">=" if self.closed in ("both", "left") else ">"
            text = f"{noun} {op} {self.low}"
        elif self.high is not None:
            op = "<=" if self.closed in ("both", "right") else "<"
            text = f"{noun} {op} {self.high}"
        else:
            text = noun
        return text + (" or None" if self.allow_none else "")


class Choice(Constraint):
    """One of a fixed set of values (strings, usually)."""

    def __init__(self, *options: Any) -> None:
        self.options = options

    def check(self, value: Any) -> bool:
        return any(value == o and type(value) is type(o) for o in self.options)

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


class Predicate(Constraint):
    """Anything for which ``fn(value)`` is true, described in words."""

    def __init__(self, fn: Callable[[Any], bool], description: str) -> None:
        self.fn, self.description = fn, description

    def check(self, value: Any) -> bool:
        try:
            return bool(self.fn(value))
        except Exception:
            return False

    def describe(self) -> str:
        return self.description


def check_param(owner: str, name: str, value: Any, constraint: Constraint) -> None:
    """Raise ``ConfigError`` in the one message shape if ``value`` breaks ``constraint``.

    Raises:
        ConfigError: ``The '<name>' parameter of <owner> must be <rule>. Got <value>.``
    """
    if not constraint.check(value):
        raise ConfigError(
            f"The {name!r} parameter of {owner} must be {constraint.describe()}. "
            f"Got {short_repr(value)}."
        )


def validate_params(
    owner: str, constraints: Mapping[str, Constraint], values: Mapping[str, Any]
) -> None:
    """Check every value that has a constraint; see :func:`check_param`."""
    for name, value in values.items():
        if name in constraints:
            check_param(owner, name, value, constraints[name])


def unknown_name(owner: str, name: str, value: Any, available: Iterable[str]) -> ConfigError:
    """The error for a look-up of an unknown name: it lists what exists."""
    options = ", ".join(repr(a) for a in available)
    return ConfigError(
        f"The {name!r} parameter of {owner} must be one of {options}. Got {short_repr(value)}."
    )
