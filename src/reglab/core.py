"""The regularizer protocol and ``chain``; (de)serialization of regularizers.

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

Argument validation lives in :mod:`reglab.validation` and parameter selection in
:mod:`reglab.selection`; both are re-exported here.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from .selection import PARAMS_CONSTRAINT, ParamSpec, Selection, param_groups, select_params
from .validation import (
    Choice,
    ConfigError,
    Constraint,
    Interval,
    Predicate,
    check_param,
    short_repr,
    unknown_name,
    validate_params,
)

__all__ = [
    "PARAMS_CONSTRAINT",
    "Chain",
    "Choice",
    "ConfigError",
    "Constraint",
    "ElementwiseTerms",
    "Interval",
    "ParamSpec",
    "Predicate",
    "Regularizer",
    "Selection",
    "chain",
    "check_param",
    "from_config",
    "param_groups",
    "select_params",
    "to_config",
    "unknown_name",
    "validate_params",
]

# --------------------------------------------------------------------------- the protocol


@dataclass(frozen=True)
class ElementwiseTerms:
    """What a penalty does to each parameter it selects, as plain numbers, for an engine that
    batches many models (the lab's population engine folds them into per-member tensors and
    runs one operation per parameter name instead of one call per member).

    In the hooks' order: ``on_after_backward`` multiplies ``w`` by ``1 - lr * decay`` (decoupled
    weight decay), then adds ``l2 * w`` and, unless ``proximal``, ``l1 * sign(w)`` to the
    gradient; with ``proximal``, ``on_after_step`` soft-thresholds ``w`` by ``lr * l1``. A term
    that is None is absent; ``names`` are the selected parameters (known after ``attach``).

    Examples:
        >>> reg = reglab.L1(1e-3); reg.attach(model, optimizer)
        >>> reg.elementwise_terms()
        ElementwiseTerms(names=('0.weight', ...), decay=None, l2=None, l1=0.001, proximal=True)
    """

    names: tuple[str, ...]
    decay: float | None = None
    l2: float | None = None
    l1: float | None = None
    proximal: bool = False


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


class _Registry(dict):
    """``Regularizer.registry``: regularizer classes by name. Reading it first imports the
    library's public modules (:mod:`reglab` imports them on first use), so it always holds the
    built-in regularizers; ``Regularizer.__init_subclass__`` adds classes."""


def _reading(method: str) -> Callable[..., Any]:
    """``dict.<method>`` for :class:`_Registry`, after loading reglab's public modules."""
    read = getattr(dict, method)

    def after_loading(self: _Registry, *args: Any) -> Any:
        import reglab  # this module's own package: already imported

        reglab._load()
        return read(self, *args)

    after_loading.__name__ = method
    return after_loading


for _method in (
    "__getitem__",
    "__contains__",
    "__iter__",
    "__len__",
    "get",
    "keys",
    "values",
    "items",
):
    setattr(_Registry, _method, _reading(_method))
del _method


class Regularizer:
    """Base class: a regularizer implements any of the hooks; the rest are no-ops.

    Subclasses declare ``constraints``, a table from constructor argument to
    :class:`Constraint`. Arguments are checked against it before ``__init__`` runs and stored as
    given, so ``get_config()`` returns them and ``from_config(get_config())`` rebuilds an equal
    regularizer. Subclasses register by class name for :func:`reglab.from_config` (a user class
    never replaces a built-in of the same name).
    """

    constraints: ClassVar[dict[str, Constraint]] = {}
    registry: ClassVar[dict[str, type[Regularizer]]] = _Registry()
    #: ``'adds'`` for penalties that add their gradient in ``on_after_backward``, ``'clips'`` for
    #: gradient clipping; a chain refuses clipping placed before such a penalty. Penalties set it
    #: per instance (proximal L1 adds no gradient).
    gradient_role: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _capture_config(cls, cls.__dict__["__init__"])  # type: ignore[method-assign]
        if "attach" in cls.__dict__:
            cls.attach = _marking_attached(cls.__dict__["attach"])  # type: ignore[method-assign]
        taken = dict.get(Regularizer.registry, cls.__name__)  # as is: no loading here
        builtin = taken is not None and taken.__module__.startswith("reglab.")
        if not cls.__name__.startswith("_") and not builtin:
            Regularizer.registry[cls.__name__] = cls

    def __getattr__(self, name: str) -> Any:
        """Reached only for an attribute that is not there: before ``attach``, the state that
        ``attach`` sets up, so a hook called too early says so in one line (a
        :class:`NotAttachedError`, which is also an ``AttributeError``)."""
        if name.startswith("__") or self.__dict__.get("_attached", False):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        raise NotAttachedError(
            f"The 'model' parameter of {type(self).__name__}.attach must be given before its "
            "hooks run: call recipe.attach(model, optimizer) first (reglab.fit does). Got a "
            "hook called on an unattached regularizer."
        )

    # -- configuration
    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, as given."""
        return dict(self.__dict__.get("_config", {}))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Regularizer:
        """Rebuild from :meth:`get_config` output."""
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={short_repr(v)}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def elementwise_terms(self) -> ElementwiseTerms | None:
        """This regularizer's effect as :class:`ElementwiseTerms` when it is a penalty of
        plain-number strengths acting element by element (L1, L2, ElasticNet, WeightDecay,
        after ``attach``); None otherwise (tensor strengths, other kinds)."""
        return None

    def implements(self, hook: str) -> bool:
        """Whether this regularizer does something at ``hook`` (one of :data:`HOOKS`): its class
        overrides it; a chain asks its members.

        Examples:
            >>> l2 = reglab.L2(1e-4)
            >>> l2.implements("on_after_backward"), l2.implements("on_batch")
            (True, False)
        """
        return getattr(type(self), hook) is not getattr(Regularizer, hook)

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

    # -- the state a run builds up (checkpoints)
    def state_dict(self) -> dict[str, Any]:
        """Everything this regularizer has built up during a run that the next steps depend on
        (counters, running estimates, random generators of its own, best weights, averages), as
        tensors and plain values; empty for a stateless one. Called after ``attach``. A
        regularizer with state overrides this and :meth:`load_state_dict`, so a checkpointed
        run resumes bitwise (``reglab.fit(checkpoint=...)``)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output into a regularizer attached to the same model."""


class NotAttachedError(ConfigError, AttributeError):
    """A hook that needs the model (its parameters, optimizer or generator) was called before
    ``attach``. Also an ``AttributeError``, so ``hasattr`` and ``getattr(..., default)`` work."""


def _marking_attached(attach: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(attach)
    def wrapper(self: Regularizer, *args: Any, **kwargs: Any) -> None:
        attach(self, *args, **kwargs)
        self.__dict__["_attached"] = True

    return wrapper


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
                    f"Got {short_repr(reg)} at position {i}."
                )
        clips = [i for i, r in enumerate(regularizers) if r.gradient_role == "clips"]
        adds = [i for i, r in enumerate(regularizers) if r.gradient_role == "adds"]
        if clips and adds and clips[0] < adds[-1]:
            first, last = regularizers[clips[0]], regularizers[adds[-1]]
            raise ConfigError(
                f"The 'regularizers' parameter of chain must put gradient clipping after the "
                f"penalties whose gradients it clips. Got {type(first).__name__} at position "
                f"{clips[0]} before {type(last).__name__} at position {adds[-1]}."
            )
        self.regularizers = tuple(regularizers)
        # Hot-path hooks only visit the members that implement them.
        self._active = {h: [r for r in regularizers if r.implements(h)] for h in HOOKS}

    def members_with(self, hook: str) -> list[Regularizer]:
        """The members that implement ``hook`` (one of :data:`HOOKS`), in chain order.

        Examples:
            >>> reglab.chain(reglab.L2(1e-4), reglab.Mixup(0.2)).members_with("on_batch")
            [Mixup(alpha=0.2)]
        """
        return list(self._active[hook])

    def implements(self, hook: str) -> bool:
        return bool(self._active[hook])

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

    def state_dict(self) -> dict[str, Any]:
        """Every member's :meth:`Regularizer.state_dict`, in order."""
        return {"regularizers": [reg.state_dict() for reg in self.regularizers]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        states = state.get("regularizers", [])
        if len(states) != len(self.regularizers):
            raise ConfigError(
                f"The 'state' parameter of chain.load_state_dict must hold one state per member. "
                f"Got {len(states)} for {len(self.regularizers)} members."
            )
        for reg, s in zip(self.regularizers, states, strict=True):
            reg.load_state_dict(s)


def chain(*regularizers: Regularizer) -> Chain:
    """Compose regularizers into one, applied in the order given.

    Examples:
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
            f"Got {short_repr(config)}."
        )
    name = config["type"]
    cls = Regularizer.registry.get(name)
    if cls is None:
        raise unknown_name("from_config", "type", name, sorted(Regularizer.registry))
    params = {k: v for k, v in config.items() if k != "type"}
    return cls.from_config(params)


def draw_device(generator: torch.Generator | None, x: torch.Tensor) -> torch.device:
    """Where a random draw for ``x`` is made: on ``generator``'s device when one is given (the
    lab creates generators on the training device, so a CUDA run draws on the GPU with no host
    round trip), else on ``x``'s. Move the draw to ``x.device`` afterwards (a no-op when equal).
    """
    return generator.device if generator is not None else x.device
