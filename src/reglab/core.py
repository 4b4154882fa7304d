"""The regularizer protocol, ``chain``, parameter selection, ``ConfigError`` and validation.

Every regularizer acts at named points of a training step (see ``DESIGN.md``)::

    model = recipe.transform_model(model)
    recipe.attach(model, optimizer, num_classes=..., generator=...)
    for epoch ...:
        for x, y in batches:
            x, y = recipe.on_batch(x, y)
            loss = recipe.on_loss(criterion(model(x), y), out)
            loss.backward(); recipe.on_after_backward()
            optimizer.step(); recipe.on_after_step()
        stop = recipe.on_epoch_end(metrics)
    recipe.on_fit_end()
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = [
    "Choice",
    "ConfigError",
    "Constraint",
    "Interval",
    "Regularizer",
    "Selection",
    "chain",
    "check_param",
    "param_groups",
    "select_params",
]


class ConfigError(ValueError):
    """A bad argument, named in one line: ``The 'p' parameter of Dropout must be ... Got 1.5.``"""


# --------------------------------------------------------------------------- constraints


def _short_repr(value: Any) -> str:
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
    interval. Booleans and NaN are rejected.
    """

    def __init__(
        self,
        kind: type,
        low: float | None = None,
        high: float | None = None,
        closed: str = "both",
        *,
        allow_none: bool = False,
    ) -> None:
        self.kind, self.low, self.high, self.closed = kind, low, high, closed
        self.allow_none = allow_none

    def _in_range(self, t: torch.Tensor) -> bool:
        if torch.isnan(t).any():
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
            f"Got {_short_repr(value)}."
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
        f"The {name!r} parameter of {owner} must be one of {options}. Got {_short_repr(value)}."
    )


# --------------------------------------------------------------------------- parameter selection

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

    Example:
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
            f"Got {_short_repr(params)}; the model has: {names or 'no trainable parameters'}."
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

    Example:
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


# --------------------------------------------------------------------------- the protocol

HOOKS = (
    "transform_model",
    "attach",
    "on_batch",
    "on_loss",
    "on_after_backward",
    "on_after_step",
    "on_epoch_end",
    "on_fit_end",
)


def _capture_config(cls: type, init: Callable[..., None]) -> Callable[..., None]:
    """Wrap ``__init__`` so that arguments are validated against ``cls.constraints`` and
    stored exactly as given, before the constructor body runs."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapped(self: Regularizer, *args: Any, **kwargs: Any) -> None:
        if "_config" not in self.__dict__:  # the outermost constructor records the config
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError as exc:
                raise ConfigError(f"{type(self).__name__}: {exc}") from None
            bound.apply_defaults()
            config = dict(list(bound.arguments.items())[1:])
            validate_params(type(self).__name__, type(self).constraints, config)
            self._config = config
        init(self, *args, **kwargs)

    return wrapped


class Regularizer:
    """Base class: a regularizer implements any of the hooks; the rest are no-ops.

    Subclasses declare ``constraints``, a table from constructor argument to
    :class:`Constraint`. Arguments are checked against it before ``__init__`` runs and stored as
    given, so ``get_config()`` returns them and ``from_config(get_config())`` rebuilds an equal
    regularizer. Subclasses register by class name for :func:`reglab.from_config` (a user class
    never replaces a built-in of the same name).
    """

    constraints: ClassVar[dict[str, Constraint]] = {}
    registry: ClassVar[dict[str, type[Regularizer]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _capture_config(cls, cls.__dict__["__init__"])  # type: ignore[method-assign]
        taken = Regularizer.registry.get(cls.__name__)
        builtin = taken is not None and taken.__module__.startswith("reglab.")
        if not cls.__name__.startswith("_") and not builtin:
            Regularizer.registry[cls.__name__] = cls

    # -- configuration
    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, as given."""
        return dict(self.__dict__.get("_config", {}))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Regularizer:
        """Rebuild from :meth:`get_config` output."""
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_short_repr(v)}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # -- hooks (all optional)
    def transform_model(self, model: nn.Module) -> nn.Module:
        """Once, before training: change the model's structure; return the model."""
        return model

    def attach(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """Once, before training: resolve parameters, keep the optimizer, generator, classes."""

    def on_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each training batch, before the forward pass: return the new ``(x, y)``."""
        return x, y

    def on_loss(self, loss: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """Each step, after the criterion: return the loss to back-propagate."""
        return loss

    def on_after_backward(self) -> None:
        """Each step, after ``backward()`` and before ``optimizer.step()``: edit gradients."""

    def on_after_step(self) -> None:
        """Each step, after ``optimizer.step()``: edit parameters."""

    def on_epoch_end(self, metrics: Mapping[str, float]) -> bool:
        """Each epoch, with its metrics: return True to ask the loop to stop."""
        return False

    def on_fit_end(self) -> None:
        """Once, after training: e.g. restore the best weights."""

    def penalty(self) -> float:
        """The value this regularizer adds to the objective (0 if it adds none)."""
        return 0.0

    def logs(self) -> dict[str, float]:
        """Figures to log once per epoch (e.g. the fraction of clipped steps)."""
        return {}


def _overrides(reg: Regularizer, hook: str) -> bool:
    return getattr(type(reg), hook) is not getattr(Regularizer, hook)


class Chain(Regularizer):
    """Regularizers applied in order at every hook: a whole recipe as one regularizer.

    ``on_batch`` and ``on_loss`` thread their values through the members in order;
    ``on_epoch_end`` asks every member and stops if any asks to; ``penalty`` is the sum.
    Penalty gradients must come before clipping, so put ``ClipGradNorm`` after penalties.
    """

    def __init__(self, *regularizers: Regularizer) -> None:
        for i, reg in enumerate(regularizers):
            if not isinstance(reg, Regularizer):
                raise ConfigError(
                    f"The 'regularizers' parameter of chain must be Regularizer instances. "
                    f"Got {_short_repr(reg)} at position {i}."
                )
        self.regularizers = tuple(regularizers)
        # Hot-path hooks only visit the members that implement them.
        self._active = {h: [r for r in regularizers if _overrides(r, h)] for h in HOOKS}

    def get_config(self) -> dict[str, Any]:
        return {"regularizers": [to_config(r) for r in self.regularizers]}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Chain:
        return cls(*(from_config(c) for c in config.get("regularizers", [])))

    def __repr__(self) -> str:
        return "chain(" + ", ".join(repr(r) for r in self.regularizers) + ")"

    def __len__(self) -> int:
        return len(self.regularizers)

    def transform_model(self, model: nn.Module) -> nn.Module:
        for reg in self._active["transform_model"]:
            model = reg.transform_model(model)
        return model

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None) -> None:
        for reg in self.regularizers:
            reg.attach(model, optimizer, num_classes=num_classes, generator=generator)

    def on_batch(self, x, y):
        for reg in self._active["on_batch"]:
            x, y = reg.on_batch(x, y)
        return x, y

    def on_loss(self, loss, output):
        for reg in self._active["on_loss"]:
            loss = reg.on_loss(loss, output)
        return loss

    def on_after_backward(self) -> None:
        for reg in self._active["on_after_backward"]:
            reg.on_after_backward()

    def on_after_step(self) -> None:
        for reg in self._active["on_after_step"]:
            reg.on_after_step()

    def on_epoch_end(self, metrics: Mapping[str, float]) -> bool:
        stop = False
        for reg in self._active["on_epoch_end"]:
            stop = bool(reg.on_epoch_end(metrics)) or stop
        return stop

    def on_fit_end(self) -> None:
        for reg in self._active["on_fit_end"]:
            reg.on_fit_end()

    def penalty(self) -> float:
        return float(sum(float(r.penalty()) for r in self.regularizers))

    def logs(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for reg in self.regularizers:
            out.update(reg.logs())
        return out


def chain(*regularizers: Regularizer) -> Chain:
    """Compose regularizers into one, applied in the order given.

    Example:
        >>> recipe = chain(L2(1e-4), Dropout(0.3), ClipGradNorm(1.0), EarlyStopping(patience=5))
    """
    return Chain(*regularizers)


# --------------------------------------------------------------------------- (de)serialization


def to_config(reg: Regularizer) -> dict[str, Any]:
    """``{"type": <class name>, **reg.get_config()}``: a plain dict for JSON or TOML."""
    return {"type": type(reg).__name__, **reg.get_config()}


def from_config(config: Mapping[str, Any]) -> Regularizer:
    """Rebuild a regularizer from :func:`to_config` output.

    Raises:
        ConfigError: if ``type`` is missing or names no known regularizer.
    """
    if not isinstance(config, Mapping) or "type" not in config:
        raise ConfigError(
            f"The 'config' parameter of from_config must be a table with a 'type' key. "
            f"Got {_short_repr(config)}."
        )
    name = config["type"]
    cls = Regularizer.registry.get(name)
    if cls is None:
        raise unknown_name("from_config", "type", name, sorted(Regularizer.registry))
    params = {k: v for k, v in config.items() if k != "type"}
    return cls.from_config(params)
