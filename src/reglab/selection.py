"""The one rule for which parameters a regularizer touches, also used for optimizer groups."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .validation import ConfigError, Interval, Predicate, check_param, short_repr

__all__ = ["PARAMS_CONSTRAINT", "ParamSpec", "Selection", "param_groups", "select_params"]

_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)

ParamSpec = str | Sequence[str] | Callable[[str, torch.Tensor], bool] | None


def _is_param_spec(value: Any) -> bool:
    if value is None or isinstance(value, str) or callable(value):
        return True
    return isinstance(value, Sequence) and len(value) > 0 and all(isinstance(v, str) for v in value)


PARAMS_CONSTRAINT = Predicate(
    _is_param_spec,
    "None (weights, not biases or normalization parameters), 'all', a glob pattern or a list "
    "of them ('!pattern' excludes), or a callable (name, parameter) -> bool",
)


def _default_weights(model: nn.Module) -> set[str]:
    chosen = set()
    for module_name, module in model.named_modules():
        if isinstance(module, _NORM_TYPES):
            continue
        for local, _ in module.named_parameters(recurse=False):
            if "bias" not in local:
                chosen.add(f"{module_name}.{local}" if module_name else local)
    return chosen


@dataclass(frozen=True)
class Selection:
    """The parameters a regularizer acts on, with their names."""

    names: tuple[str, ...]
    params: tuple[torch.Tensor, ...]

    @property
    def numel(self) -> int:
        """Total number of selected elements."""
        return sum(p.numel() for p in self.params)

    def __len__(self) -> int:
        return len(self.params)

    def describe(self) -> str:
        """E.g. ``'3 tensors, 12,544 elements'``."""
        return f"{len(self)} tensors, {self.numel:,} elements"


def select_params(
    model: nn.Module, params: ParamSpec = None, *, owner: str = "select_params"
) -> Selection:
    """Choose parameters of ``model`` by the one shared rule.

    Args:
        model: the module whose ``named_parameters()`` are searched.
        params: ``None`` (the default: weights are selected; biases and the parameters of
            normalization layers are not), ``'all'``, a glob pattern over parameter names
            (``'*.weight'``, ``'0.weight'``) or a list of them where ``'!pattern'`` removes
            matches, or a predicate ``(name, parameter) -> bool``.
        owner: the name used in error messages.

    Returns:
        A :class:`Selection` in ``named_parameters()`` order; only trainable parameters.

    Raises:
        ConfigError: if ``params`` is malformed or matches no parameter.

    Examples:
        >>> sel = select_params(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)))
        >>> sel.names, sel.describe()
        (('0.weight',), '1 tensors, 12 elements')
    """
    check_param(owner, "params", params, PARAMS_CONSTRAINT)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is None:
        weights = _default_weights(model)
        chosen = [(n, p) for n, p in named if n in weights]
    elif isinstance(params, str) and params == "all":
        chosen = named
    elif callable(params):
        chosen = [(n, p) for n, p in named if params(n, p)]
    else:
        patterns = [params] if isinstance(params, str) else list(params)
        include = [p for p in patterns if not p.startswith("!")]
        exclude = [p[1:] for p in patterns if p.startswith("!")]
        chosen = [
            (n, p)
            for n, p in named
            if (not include or any(fnmatch.fnmatchcase(n, pat) for pat in include))
            and not any(fnmatch.fnmatchcase(n, pat) for pat in exclude)
        ]
    if not chosen:
        names = ", ".join(n for n, _ in named[:12]) + (", ..." if len(named) > 12 else "")
        raise ConfigError(
            f"The 'params' parameter of {owner} matched no parameter of the model. "
            f"Got {short_repr(params)}; the model has: {names or 'no trainable parameters'}."
        )
    return Selection(tuple(n for n, _ in chosen), tuple(p for _, p in chosen))


def param_groups(
    model: nn.Module, weight_decay: float, params: ParamSpec = None
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: the default selection decayed, everything else not.

    Args:
        model: the model.
        weight_decay: the optimizer's ``weight_decay`` for the selected parameters.
        params: which parameters are decayed (see :func:`select_params`).

    Returns:
        ``[{"params": selected, "weight_decay": weight_decay}, {"params": rest,
        "weight_decay": 0.0}]``, leaving out an empty group.

    Examples:
        >>> opt = torch.optim.AdamW(param_groups(model, weight_decay=0.05), lr=1e-3)
    """
    check_param("param_groups", "weight_decay", weight_decay, Interval(float, 0, None))
    chosen = select_params(model, params, owner="param_groups")
    ids = {id(p) for p in chosen.params}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": list(chosen.params), "weight_decay": weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    return groups
