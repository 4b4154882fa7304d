"""Parameter penalties, the max-norm constraint and decoupled weight decay.

Gradients are added analytically under ``torch.no_grad()`` in ``on_after_backward`` (no autograd
graph over the parameters); proximal steps and projections act on the parameters in
``on_after_step`` (see :mod:`reglab.proximal`). Values for logs come from :meth:`penalty`, also
without a graph. Strength conventions, and how they map to PyTorch, Keras and scikit-learn, are
in ``docs/conventions.md``.

**Proximal steps and adaptive optimizers.** A proximal step shrinks by ``lr * strength``, with
the learning rate of each parameter's optimizer group (read at every step, so schedulers apply),
whatever the optimizer. With SGD this is exactly the proximal gradient method (ISTA), so full-batch
training reaches the Lasso's solution. With Adam the step is *decoupled* from the optimizer's
per-coordinate scaling, as AdamW decouples weight decay: every weight is shrunk by the same
``lr * strength`` per step, so a strength means the same thing for every weight whatever its
gradient history, and block soft-thresholding (GroupLasso), which has no closed form under a
per-coordinate scaling, works the same way. The alternative, scaling the threshold by Adam's
``1 / sqrt(v)`` (ProxGen, Yun et al. 2021, https://arxiv.org/abs/2110.10588), would zero weights
whose gradients are small fastest. Under Adam the data gradient is normalized and the threshold is
not, so the strengths that give a wanted sparsity are larger than under SGD (``L1(0.1)`` with
lr 1e-3 zeroes about 60% of the default study's MLP weights).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .core import (
    PARAMS_CONSTRAINT,
    Choice,
    ConfigError,
    ElementwiseTerms,
    Interval,
    ParamSpec,
    Regularizer,
    Selection,
    select_params,
)
from .proximal import group_soft_threshold_, max_norm_, soft_threshold_, unit_norms, unit_size

__all__ = [
    "L1",
    "L2",
    "ElasticNet",
    "GroupLasso",
    "MaxNorm",
    "WeightDecay",
    "group_lasso_penalty",
    "l1_penalty",
    "l2_penalty",
]

_STRENGTH = Interval(float, 0, None)
_METHOD = Choice("proximal", "subgradient")
Params = list[torch.Tensor] | tuple[torch.Tensor, ...]


def l1_penalty(params: Params, strength: Any) -> torch.Tensor:
    """``strength * sum(|w|)`` over ``params``, without an autograd graph."""
    with torch.no_grad():
        return strength * sum((p.abs().sum() for p in params), torch.zeros((), dtype=torch.float64))


def l2_penalty(params: Params, strength: Any, convention: str = "reglab") -> torch.Tensor:
    """``strength/2 * sum(w**2)`` (``convention='reglab'``) or ``strength * sum(w**2)``
    (``'keras'``), without an autograd graph."""
    factor = 0.5 if convention == "reglab" else 1.0
    with torch.no_grad():
        total = sum((p.pow(2).sum() for p in params), torch.zeros((), dtype=torch.float64))
        return factor * strength * total


def group_lasso_penalty(params: Params, strength: Any) -> torch.Tensor:
    """``strength * sum_u sqrt(d_u) * ||w_u||_2`` over the units ``u`` (rows, filters) of each
    tensor, ``d_u`` the unit's size, without an autograd graph."""
    with torch.no_grad():
        total = sum(
            (math.sqrt(unit_size(p)) * unit_norms(p).sum() for p in params),
            torch.zeros((), dtype=torch.float64),
        )
        return strength * total


class _ParamRegularizer(Regularizer):
    """Shared ``attach``: resolve the selection, keep each parameter's optimizer group, cast the
    hyperparameter tensors to the parameters' dtype."""

    selection: Selection
    #: Attributes holding hyperparameter tensors (float64 on the CPU until ``attach`` moves
    #: them to the selected parameters' dtype and device: a CUDA step never mixes devices).
    _hyperparameters: tuple[str, ...] = ()

    def attach(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        name = type(self).__name__
        self.selection = select_params(model, self._config["params"], owner=name)
        first = self.selection.params[0]
        for attr in self._hyperparameters:
            if getattr(self, attr) is not None:
                setattr(self, attr, getattr(self, attr).to(first.device, first.dtype))
        self._groups: list[tuple[torch.Tensor, dict[str, Any]]] = []
        if self._needs_lr():
            if optimizer is None:
                raise ConfigError(
                    f"The 'optimizer' parameter of {name}.attach must be an "
                    "optimizer: its step uses the learning rate. Got None."
                )
            group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
            missing = [
                n
                for n, p in zip(self.selection.names, self.selection.params, strict=True)
                if id(p) not in group_of
            ]
            if missing:
                raise ConfigError(
                    f"The 'optimizer' parameter of {name}.attach must hold every "
                    f"selected parameter. Got one without {', '.join(missing[:5])}."
                )
            self._groups = [(p, group_of[id(p)]) for p in self.selection.params]

    def _needs_lr(self) -> bool:
        return False

    def acts_on(self) -> str:
        """E.g. ``'L1 acts on 3 tensors, 84,480 elements'`` (after ``attach``)."""
        return f"{type(self).__name__} acts on {self.selection.describe()}"


def _tensor(value: Any) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64)


def _one(value: torch.Tensor | None) -> bool:
    """No strength, or one number (not per-member values)."""
    return value is None or value.numel() == 1


def _number(value: Any) -> float | None:
    """The value as a Python float when it is one number (hot paths then take scalar kernels);
    None for a tensor of several per-member values. Decided by type and shape, not by value."""
    if isinstance(value, torch.Tensor):
        return float(value) if value.numel() == 1 else None
    return None if value is None else float(value)


class _ElementwisePenalty(_ParamRegularizer):
    """``l1 * sum(|w|) + l2/2 * sum(w**2)``: the L2 part as an analytic gradient, the L1 part as a
    proximal step after the optimizer step or as a subgradient."""

    _hyperparameters = ("_l1", "_l2")

    def _setup(self, l1: Any, l2: Any, proximal: bool) -> None:
        self._l1 = None if l1 is None else _tensor(l1)
        self._l2 = None if l2 is None else _tensor(l2)
        self._l1_number, self._l2_number = _number(l1), _number(l2)
        self._prox_l1 = proximal and l1 is not None
        self._grad_l1 = not proximal and l1 is not None
        self.gradient_role = "adds" if self._l2 is not None or self._grad_l1 else ""

    def _needs_lr(self) -> bool:
        return self._prox_l1

    def elementwise_terms(self) -> ElementwiseTerms | None:
        if not (_one(self._l1) and _one(self._l2)):
            return None
        return ElementwiseTerms(
            tuple(self.selection.names),
            l2=None if self._l2 is None else float(self._l2),
            l1=None if self._l1 is None else float(self._l1),
            proximal=self._prox_l1,
        )

    def on_after_backward(self) -> None:
        if self._l2 is None and not self._grad_l1:
            return
        with torch.no_grad():
            for p in self.selection.params:
                if p.grad is None:
                    continue
                if self._l2_number is not None:
                    p.grad.add_(p, alpha=self._l2_number)
                elif self._l2 is not None:
                    p.grad.addcmul_(p, self._l2)
                if self._grad_l1:
                    p.grad.addcmul_(torch.sign(p), self._l1)

    def on_after_step(self) -> None:
        if not self._prox_l1:
            return
        number = self._l1_number
        with torch.no_grad():
            for p, group in self._groups:
                lr = group["lr"]
                if number is not None and not isinstance(lr, torch.Tensor):
                    soft_threshold_(p, number * lr)  # one pass over memory
                else:
                    soft_threshold_(p, self._l1 * lr)

    def penalty(self) -> float:
        params = self.selection.params
        total = torch.zeros((), dtype=torch.float64)
        if self._l1 is not None:
            total = total + l1_penalty(params, self._l1)
        if self._l2 is not None:
            total = total + l2_penalty(params, self._l2)
        return float(total.sum())


class L2(_ElementwisePenalty):
    """L2 penalty (ridge, Tikhonov): ``strength/2 * sum(w**2)``, gradient ``strength * w``.

    With ``convention="keras"`` the term is ``strength * sum(w**2)`` (gradient
    ``2 * strength * w``), as ``keras.regularizers.L2``. With plain SGD, ``L2(s)`` equals
    ``torch.optim.SGD(weight_decay=s)``; with adaptive optimizers it differs from decoupled
    :class:`WeightDecay` (Loshchilov & Hutter 2019, https://arxiv.org/abs/1711.05101).

    Args:
        strength: ``s >= 0``; a float or a tensor that broadcasts.
        convention: ``'reglab'`` (``s/2``) or ``'keras'`` (``s``).
        params: which parameters (see :func:`reglab.select_params`); default: weights.

    Raises:
        ConfigError: for a negative strength or an unknown convention.

    Examples:
        >>> recipe = reglab.chain(reglab.L2(1e-4))
    """

    constraints = {
        "strength": _STRENGTH,
        "convention": Choice("reglab", "keras"),
        "params": PARAMS_CONSTRAINT,
    }

    def __init__(
        self, strength: float, *, convention: str = "reglab", params: ParamSpec = None
    ) -> None:
        self._setup(None, _tensor(strength) * (1.0 if convention == "reglab" else 2.0), False)


class L1(_ElementwisePenalty):
    """L1 penalty (lasso): ``strength * sum(|w|)``.

    ``method="proximal"`` (default) takes a proximal step after each optimizer step,
    soft-thresholding ``w <- sign(w) * max(|w| - lr * strength, 0)``, so weights reach exactly
    zero as in the Lasso (proximal gradient / ISTA; Parikh & Boyd 2014,
    https://web.stanford.edu/~boyd/papers/prox_algs.html); see the module notes for adaptive
    optimizers. ``method="subgradient"`` adds ``strength * sign(w)`` to the gradient, as Keras
    does: weights hover near zero but never reach it. :meth:`penalty` reports the same value
    either way.

    Args:
        strength: ``s >= 0``; a float or a tensor that broadcasts.
        method: ``'proximal'`` or ``'subgradient'``.
        params: which parameters (see :func:`reglab.select_params`); default: weights.

    Raises:
        ConfigError: for a negative strength or an unknown method; at ``attach``, a proximal
            L1 without an optimizer.

    Examples:
        >>> recipe = reglab.chain(reglab.L1(1e-4))  # exact zeros
    """

    constraints = {"strength": _STRENGTH, "method": _METHOD, "params": PARAMS_CONSTRAINT}

    def __init__(
        self, strength: float, *, method: str = "proximal", params: ParamSpec = None
    ) -> None:
        self._setup(strength, None, method == "proximal")


class ElasticNet(_ElementwisePenalty):
    """Elastic net: ``strength * (l1_ratio * sum(|w|) + (1 - l1_ratio)/2 * sum(w**2))``.

    The same parametrization as scikit-learn's ``ElasticNet(alpha, l1_ratio)``, with
    ``alpha = strength / 2`` on a mean-squared-error loss (Zou & Hastie 2005,
    https://doi.org/10.1111/j.1467-9868.2005.00503.x). The L2 part adds its gradient
    ``strength * (1 - l1_ratio) * w``; the L1 part is a proximal step (exact zeros) or a
    subgradient, as in :class:`L1`.

    Args:
        strength: ``s >= 0``; a float or a tensor that broadcasts.
        l1_ratio: the L1 share in ``[0, 1]``: 1 is :class:`L1`, 0 is :class:`L2`.
        method: ``'proximal'`` or ``'subgradient'`` for the L1 part.
        params: which parameters (see :func:`reglab.select_params`); default: weights.

    Raises:
        ConfigError: for a negative strength, ``l1_ratio`` outside ``[0, 1]``, an unknown method.

    Examples:
        >>> recipe = reglab.chain(reglab.ElasticNet(1e-3, l1_ratio=0.5))
    """

    constraints = {
        "strength": _STRENGTH,
        "l1_ratio": Interval(float, 0, 1),
        "method": _METHOD,
        "params": PARAMS_CONSTRAINT,
    }

    def __init__(
        self,
        strength: float,
        l1_ratio: float = 0.5,
        *,
        method: str = "proximal",
        params: ParamSpec = None,
    ) -> None:
        s, r = _tensor(strength), _tensor(l1_ratio)
        self._setup(s * r, s * (1 - r), method == "proximal")


class GroupLasso(_ParamRegularizer):
    """Group lasso over output units: ``strength * sum_u sqrt(d_u) * ||w_u||_2``.

    Units are rows of a ``Linear`` weight and filters of a ``Conv`` weight (all the weights into
    one output unit), ``d_u`` their size (Yuan & Lin 2006,
    https://doi.org/10.1111/j.1467-9868.2005.00532.x). ``method="proximal"`` (default) applies
    block soft-thresholding after each step, ``w_u <- w_u * max(0, 1 - lr*strength*sqrt(d_u) /
    ||w_u||)``, so whole units become exactly zero (prunable); ``"subgradient"`` adds
    ``strength * sqrt(d_u) * w_u / ||w_u||``.

    Args:
        strength: ``s >= 0``; a float or a tensor that broadcasts.
        method: ``'proximal'`` or ``'subgradient'``.
        params: which parameters (see :func:`reglab.select_params`); default: weights.

    Raises:
        ConfigError: for a negative strength or an unknown method.

    Examples:
        >>> recipe = reglab.chain(reglab.GroupLasso(1e-3))  # whole hidden units switch off
    """

    constraints = {"strength": _STRENGTH, "method": _METHOD, "params": PARAMS_CONSTRAINT}
    _hyperparameters = ("_strength",)

    def __init__(
        self, strength: float, *, method: str = "proximal", params: ParamSpec = None
    ) -> None:
        self._strength = _tensor(strength)
        self._proximal = method == "proximal"
        self.gradient_role = "" if self._proximal else "adds"

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None) -> None:
        super().attach(model, optimizer, num_classes=num_classes, generator=generator)
        self._scale = [math.sqrt(unit_size(p)) for p in self.selection.params]

    def _needs_lr(self) -> bool:
        return self._proximal

    def on_after_backward(self) -> None:
        if self._proximal:
            return
        with torch.no_grad():
            for p, scale in zip(self.selection.params, self._scale, strict=True):
                if p.grad is not None:
                    p.grad.add_(p / unit_norms(p).clamp_min(1e-30) * (self._strength * scale))

    def on_after_step(self) -> None:
        if not self._proximal:
            return
        with torch.no_grad():
            for (p, group), scale in zip(self._groups, self._scale, strict=True):
                group_soft_threshold_(p, self._strength * (group["lr"] * scale))

    def penalty(self) -> float:
        return float(group_lasso_penalty(self.selection.params, self._strength).sum())


class MaxNorm(_ParamRegularizer):
    """Max-norm constraint: after each step, rescale every unit with ``||w_u||_2 > max_norm``
    back to ``max_norm`` (Srivastava et al. 2014, https://jmlr.org/papers/v15/srivastava14a.html).

    Units are the incoming weights of an output unit: rows of a ``Linear`` weight, filters of a
    ``Conv`` weight (Keras's ``MaxNorm(axis=0)`` on a ``Dense`` kernel). Not a term of the
    objective: :meth:`penalty` is 0.

    Args:
        max_norm: the bound ``> 0``; a float or a tensor that broadcasts.
        params: which parameters (see :func:`reglab.select_params`); default: weights.

    Raises:
        ConfigError: for ``max_norm <= 0``.

    Examples:
        >>> recipe = reglab.chain(reglab.Dropout(0.5), reglab.MaxNorm(3.0))
    """

    constraints = {"max_norm": Interval(float, 0, None, "neither"), "params": PARAMS_CONSTRAINT}
    _hyperparameters = ("_max_norm",)

    def __init__(self, max_norm: float, *, params: ParamSpec = None) -> None:
        self._max_norm = _tensor(max_norm)

    def on_after_step(self) -> None:
        with torch.no_grad():
            for p in self.selection.params:
                max_norm_(p, self._max_norm)


class WeightDecay(_ParamRegularizer):
    """Decoupled weight decay: ``w <- w * (1 - lr * rate)`` each step, with any optimizer.

    Applied before the optimizer's update, as ``torch.optim.AdamW`` does, so
    ``Adam + WeightDecay(r)`` equals ``AdamW(weight_decay=r)`` on the selected parameters
    (Loshchilov & Hutter 2019, https://arxiv.org/abs/1711.05101). It is not a term of the
    objective, so :meth:`penalty` is 0.

    Args:
        rate: ``r >= 0``; a float or a tensor that broadcasts.
        params: which parameters (see :func:`reglab.select_params`); default: weights.

    Raises:
        ConfigError: for a negative rate; at ``attach``, no optimizer.

    Examples:
        >>> recipe = reglab.chain(reglab.WeightDecay(0.05))
    """

    constraints = {"rate": _STRENGTH, "params": PARAMS_CONSTRAINT}
    _hyperparameters = ("_rate",)

    def __init__(self, rate: float, *, params: ParamSpec = None) -> None:
        self._rate = _tensor(rate)
        self._rate_number = _number(rate)

    def _needs_lr(self) -> bool:
        return True

    def elementwise_terms(self) -> ElementwiseTerms | None:
        if not _one(self._rate):
            return None
        return ElementwiseTerms(tuple(self.selection.names), decay=float(self._rate))

    def on_after_backward(self) -> None:
        with torch.no_grad():
            for p, group in self._groups:
                rate = self._rate if self._rate_number is None else self._rate_number
                p.mul_(1 - group["lr"] * rate)
