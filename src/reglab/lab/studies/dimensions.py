"""The search space of ``reglab tune`` and ``reglab path``: which arguments of a recipe can be
searched (:func:`tunable`), one searched argument and its range (:class:`Dimension`,
:func:`parse_dimension`) and a recipe's specs with chosen values filled in (:func:`with_values`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...core import ConfigError, Interval, Regularizer, check_param

__all__ = ["Dimension", "parse_dimension", "tunable", "with_values"]


@dataclass(frozen=True)
class Dimension:
    """One searched argument: ``spec[index][arg]`` between ``low`` and ``high``."""

    name: str
    index: int
    arg: str
    low: float
    high: float
    log: bool
    integer: bool


def tunable(spec: Sequence[Mapping[str, Any]]) -> dict[str, tuple[int, str, Interval]]:
    """The numeric arguments of a recipe's regularizers, by name: ``'Type.arg'`` always, and
    the bare ``'arg'`` where only one regularizer of the recipe has it."""
    found: dict[str, tuple[int, str, Interval]] = {}
    counts: dict[str, int] = {}
    for index, item in enumerate(spec):
        cls = Regularizer.registry.get(item.get("type"))
        for arg, constraint in getattr(cls, "constraints", {}).items():
            if isinstance(constraint, Interval) and constraint.kind in (int, float):
                found[f"{item['type']}.{arg}"] = (index, arg, constraint)
                counts[arg] = counts.get(arg, 0) + 1
    for value in list(found.values()):
        if counts[value[1]] == 1:
            found[value[1]] = value
    return found


def parse_dimension(text: str, spec: Sequence[Mapping[str, Any]], recipe: str) -> Dimension:
    """``'strength=1e-5:1e-1:log'`` (or ``'L2.strength=...'``, ``':linear'``) as a Dimension.

    Raises:
        ConfigError: an unknown name (the message lists the tunable ones), a malformed range,
            ``low >= high``, a log scale with ``low <= 0``, or bounds the argument forbids.
    """
    options = tunable(spec)
    name, _, rest = text.partition("=")
    name = name.strip()
    if name not in options:
        listed = ", ".join(options) or "none"
        raise ConfigError(
            f"The 'param' parameter of tune must name a tunable argument of recipe {recipe!r} "
            f"({listed}). Got {name!r}."
        )
    index, arg, constraint = options[name]
    parts = rest.split(":")
    scale = parts[2].strip() if len(parts) == 3 else "log" if constraint.kind is float else ""
    try:
        low, high = float(parts[0]), float(parts[1])
        if len(parts) > 3 or scale not in ("log", "linear", ""):
            raise ValueError
    except (ValueError, IndexError):
        raise ConfigError(
            f"The 'param' parameter of tune must look like NAME=LOW:HIGH[:log|:linear]. "
            f"Got {text!r}."
        ) from None
    log = scale == "log"
    if not low < high:
        raise ConfigError(
            f"The 'param' parameter of tune must have LOW < HIGH. Got {name}={low:g}:{high:g}."
        )
    if log and low <= 0:
        raise ConfigError(
            f"The 'param' parameter of tune must have LOW > 0 on a log scale. "
            f"Got {name}={low:g}:{high:g}:log."
        )
    integer = constraint.kind is int
    for bound in (low, high):
        check_param("tune", f"param {name}", int(bound) if integer else bound, constraint)
    return Dimension(name, index, arg, low, high, log, integer)


def with_values(
    spec: Sequence[Mapping[str, Any]], dims: Sequence[Dimension], values: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """A copy of ``spec`` with each dimension's value filled in."""
    out = [dict(item) for item in spec]
    for dim in dims:
        out[dim.index][dim.arg] = values[dim.name]
    return out
