"""Parameter penalties and decoupled weight decay.

Gradients are added analytically under ``torch.no_grad()`` in ``on_after_backward`` (no autograd
graph over the parameters); proximal steps act on the parameters in ``on_after_step``. Values for
logs come from :meth:`penalty`, also without a graph.

Strength conventions (``w`` are the selected weights):

=====================  ==========================  ==============================================
reglab                 objective term              equivalent elsewhere
=====================  ==========================  ==============================================
``L2(s)``              ``s/2 * sum(w**2)``         SGD ``weight_decay=s``; sklearn ``Ridge(alpha)``
                                                   with ``s = 2 * alpha / n_samples`` on a
                                                   mean-squared-error loss
``L2(s, "keras")``     ``s * sum(w**2)``           ``keras.regularizers.L2(s)``
``L1(s)``              ``s * sum(|w|)``            ``keras.regularizers.L1(s)``; sklearn
                                                   ``Lasso(alpha)`` with ``s = 2 * alpha`` on a
                                                   mean-squared-error loss
``WeightDecay(r)``     (not an objective term)     AdamW ``weight_decay=r``: ``w *= 1 - lr * r``
=====================  ==========================  ==============================================
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .core import (
    PARAMS_CONSTRAINT,
    Choice,
    ConfigError,
    Interval,
    ParamSpec,
    Regularizer,
    Selection,
    select_params,
)

__all__ = ["L1", "L2", "WeightDecay", "l1_penalty", "l2_penalty"]

_STRENGTH = Interval(float, 0, None)


def l1_penalty(
    params: list[torch.Tensor] | tuple[torch.Tensor, ...], strength: Any
) -> torch.Tensor:
    """``strength * sum(|w|)`` over ``params``, without an autograd graph."""
    with torch.no_grad():
        total = sum((p.abs().sum() for p in params), torch.zeros(()))
        return strength * total


def l2_penalty(
    params: list[torch.Tensor] | tuple[torch.Tensor, ...], strength: Any, convention: str = "reglab"
) -> torch.Tensor:
    """``strength/2 * sum(w**2)`` (``convention='reglab'``) or ``strength * sum(w**2)``
    (``'keras'``), without an autograd graph."""
    factor = 0.5 if convention == "reglab" else 1.0
    with torch.no_grad():
        total = sum((p.pow(2).sum() for p in params), torch.zeros(()))
        return factor * strength * total


class _ParamRegularizer(Regularizer):
    """Shared ``attach``: resolve the selection, keep each parameter's optimizer group."""

    selection: Selection
    #: Attributes holding hyperparameter tensors (float64 until ``attach`` casts them to the
    #: parameters' dtype).
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
        dtype = self.selection.params[0].dtype
        for attr in self._hyperparameters:
            setattr(self, attr, getattr(self, attr).to(dtype))
        self._groups: list[tuple[torch.Tensor, dict[str, Any]]] = []
        if self._needs_lr():
            if optimizer is None:
                raise ConfigError(
                    f"The 'optimizer' parameter of {name}.attach must be an optimizer: "
                    f"its step uses the learning rate. Got None."
                )
            group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
            missing = [
                n
                for n, p in zip(self.selection.names, self.selection.params, strict=True)
                if id(p) not in group_of
            ]
            if missing:
                raise ConfigError(
                    f"The 'optimizer' parameter of {name}.attach must hold every selected "
                    f"parameter. Got one without {', '.join(missing[:5])}."
                )
            self._groups = [(p, group_of[id(p)]) for p in self.selection.params]

    def _needs_lr(self) -> bool:
        return False


class L2(_ParamRegularizer):
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

    Example:
        >>> recipe = reglab.chain(reglab.L2(1e-4))
    """

    constraints = {
        "strength": _STRENGTH,
        "convention": Choice("reglab", "keras"),
        "params": PARAMS_CONSTRAINT,
    }
    _hyperparameters = ("_grad_scale",)

    def __init__(
        self, strength: float, *, convention: str = "reglab", params: ParamSpec = None
    ) -> None:
        factor = 1.0 if convention == "reglab" else 2.0
        self._grad_scale = torch.as_tensor(strength, dtype=torch.float64) * factor

    def on_after_backward(self) -> None:
        with torch.no_grad():
            for p in self.selection.params:
                if p.grad is not None:
                    p.grad.addcmul_(p, self._grad_scale)

    def penalty(self) -> float:
        c = self._config
        return float(l2_penalty(self.selection.params, c["strength"], c["convention"]).sum())


class L1(_ParamRegularizer):
    """L1 penalty (lasso): ``strength * sum(|w|)``.

    ``method="proximal"`` (default) takes a proximal step after each optimizer step,
    soft-thresholding ``w <- sign(w) * max(|w| - lr * strength, 0)``, so weights reach exactly
    zero as in the Lasso (proximal gradient / ISTA; Parikh & Boyd 2014,
    https://web.stanford.edu/~boyd/papers/prox_algs.html). The threshold uses each parameter's
    optimizer learning rate (read at every step, so schedulers apply). ``method="subgradient"``
    adds ``strength * sign(w)`` to the gradient, as Keras does: weights hover near zero but
    never reach it. The same value is reported by :meth:`penalty` in both methods.

    Args:
        strength: ``s >= 0``; a float or a tensor that broadcasts.
        method: ``'proximal'`` or ``'subgradient'``.
        params: which parameters (see :func:`reglab.select_params`); default: weights.

    Raises:
        ConfigError: for a negative strength or an unknown method; at ``attach``, a proximal
            L1 without an optimizer.

    Example:
        >>> recipe = reglab.chain(reglab.L1(1e-4))  # exact zeros
    """

    constraints = {
        "strength": _STRENGTH,
        "method": Choice("proximal", "subgradient"),
        "params": PARAMS_CONSTRAINT,
    }
    _hyperparameters = ("_strength",)

    def __init__(
        self, strength: float, *, method: str = "proximal", params: ParamSpec = None
    ) -> None:
        self._strength = torch.as_tensor(strength, dtype=torch.float64)
        self._proximal = method == "proximal"

    def _needs_lr(self) -> bool:
        return self._proximal

    def on_after_backward(self) -> None:
        if self._proximal:
            return
        with torch.no_grad():
            for p in self.selection.params:
                if p.grad is not None:
                    p.grad.addcmul_(torch.sign(p), self._strength)

    def on_after_step(self) -> None:
        if not self._proximal:
            return
        with torch.no_grad():
            for p, group in self._groups:
                t = self._strength * group["lr"]
                # w - clamp(w, -t, t) is exactly sign(w) * max(|w| - t, 0).
                p.sub_(torch.clamp(p, -t, t))

    def penalty(self) -> float:
        return float(l1_penalty(self.selection.params, self._config["strength"]).sum())


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

    Example:
        >>> recipe = reglab.chain(reglab.WeightDecay(0.05))
    """

    constraints = {"rate": _STRENGTH, "params": PARAMS_CONSTRAINT}
    _hyperparameters = ("_rate",)

    def __init__(self, rate: float, *, params: ParamSpec = None) -> None:
        self._rate = torch.as_tensor(rate, dtype=torch.float64)

    def _needs_lr(self) -> bool:
        return True

    def on_after_backward(self) -> None:
        with torch.no_grad():
            for p, group in self._groups:
                p.mul_(1 - group["lr"] * self._rate)
