"""The stacked model of a population: a copy of the members' shared architecture that runs
every member at once on ``(K, B, ...)`` inputs, reading the population's stacked parameters.

A model made of ``Linear`` layers, parameter-free elementwise activations and reglab's
containers (``nn.Sequential``, ``Inserted``, ``Residual``) runs its own structure with one
``bmm`` per layer (:func:`stacked_model`); any other model runs as ``torch.func.vmap`` over
``functional_call`` (in :class:`reglab.lab.engine.batched.Population`). Dropout-family layers
become slots (:class:`MaskSlot`) whose per-member factors the population draws each step.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch
from torch import nn

from ...drop import DropoutLayer
from ...structure import Inserted, Residual

__all__ = ["MaskSlot", "plain_dropout", "slot_shapes", "stacked_model", "store_transposed"]


class MaskSlot(nn.Module):
    """Stands for a dropout-family layer in the batched model: multiplies by the factor passed
    in as the ``factor`` buffer in training, the identity in eval."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("factor", torch.ones(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor if self.training else x


#: Modules whose forward works unchanged on stacked ``(K, B, ...)`` inputs: parameter-free and
#: elementwise. Checked by exact type (a subclass may override ``forward``).
_ELEMENTWISE = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.SiLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.LeakyReLU,
    nn.Softplus,
    nn.Mish,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
)
#: Containers whose forward only composes their children in a way a leading K dimension
#: passes through (a sequence, and a residual sum).
_CONTAINERS = (nn.Sequential, Inserted, Residual)


class _StackedLinear(nn.Module):
    """A ``Linear`` layer of the stacked model: every member's ``x @ W.T + b`` as one ``bmm``
    over ``(K, B, in)`` inputs and the stacked weight read from ``params`` (the population's
    stacked parameters, by name), stored ``(K, in, out)`` when ``transposed`` and else
    ``(K, out, in)`` (see :func:`store_transposed`), and an in-place bias add (``bmm`` does
    not keep its output for the backward pass, so autograd allows it; at the evaluation's batch
    sizes this measured 25% faster than ``baddbmm``)."""

    def __init__(
        self, params: dict[str, torch.Tensor], weight: str, bias: str | None, transposed: bool
    ) -> None:
        super().__init__()
        self.params, self.weight, self.bias = params, weight, bias
        self.transposed = transposed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.params[self.weight]
        out = torch.bmm(x, w if self.transposed else w.transpose(1, 2))
        return out if self.bias is None else out.add_(self.params[self.bias].unsqueeze(1))

    def extra_repr(self) -> str:
        return f"weight={self.weight!r}, bias={self.bias!r}, transposed={self.transposed}"


def store_transposed(rows: torch.Tensor) -> bool:
    """Whether a stacked parameter (``rows``, each member's as the model holds it) is kept
    transposed: a ``Linear`` weight ``(K, out, in)`` that does not narrow (``out >= in``) is
    stored ``(K, in, out)``. On the default MLP's step (64-256-256-10, K=15, batch 32, one
    core) this layout of the wide layers with the narrow 256-to-10 layer left as it is measured
    5.4 ms forward and backward, against 5.8 ms all transposed and 7.1 ms none (its weight
    gradient ``g.T @ x`` runs at 55 GFLOP/s, ``x.T @ g`` at 11), and the evaluation 24.9 ms
    against 27.4 and 25.6."""
    return rows.ndim == 3 and rows.shape[1] >= rows.shape[2]


class _StackedSlot(nn.Module):
    """A dropout slot of the stacked model: multiplies by the ``(K, B, ...)`` factors in
    ``masks[key]`` in training (the population sets them each step), the identity in eval."""

    def __init__(self, masks: dict[str, torch.Tensor], key: str) -> None:
        super().__init__()
        self.masks, self.key = masks, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.masks[self.key] if self.training else x


def plain_dropout(layer: Any, device: torch.device) -> bool:
    """Whether a member's dropout slot ``layer`` is plain inverted dropout in training with a
    number ``p`` drawing on ``device`` (see :meth:`Population._mask_plans`)."""
    return (
        type(layer) is DropoutLayer
        and layer.training
        and isinstance(layer.p, (int, float))
        and (layer.generator is None or layer.generator.device == device)
    )


def stacked_model(
    base: nn.Module,
    params: dict[str, torch.Tensor],
    transposed: dict[str, bool],
    masks: dict[str, torch.Tensor],
) -> nn.Module | None:
    """A copy of ``base`` that runs on stacked inputs (``Linear`` layers read ``params``, laid
    out as ``transposed`` says, dropout slots read ``masks``), or None when one of its modules
    cannot (see :data:`_ELEMENTWISE`, :data:`_CONTAINERS`)."""
    every = list(base.named_modules(remove_duplicate=False))
    if len(every) != len(list(base.named_modules())):  # a module used twice: vmap
        return None
    for _name, module in every:
        kind = type(module)
        if kind not in (*_ELEMENTWISE, *_CONTAINERS, nn.Linear, MaskSlot):
            return None
        if module._forward_hooks or module._forward_pre_hooks:
            return None
    stacked = copy.deepcopy(base)
    for name, module in list(stacked.named_modules()):
        if isinstance(module, nn.Linear):
            bias = None if module.bias is None else f"{name}.bias"
            weight = f"{name}.weight"
            new: nn.Module = _StackedLinear(params, weight, bias, transposed[weight])
        elif isinstance(module, MaskSlot):
            new = _StackedSlot(masks, f"{name}.factor")
        else:
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(stacked.get_submodule(parent) if parent else stacked, leaf, new)
    # a ReLU that takes a stacked Linear's output, which nothing else reads, rectifies it in
    # place (ReLU's backward needs only its result): one tensor and one pass over memory less
    # per layer, the same numbers (the copy's modules change, not the member's)
    leaves = _chain(stacked)
    for before, layer in itertools.pairwise(leaves):
        if type(before) is _StackedLinear and type(layer) is nn.ReLU:
            layer.inplace = True
    return stacked


def _chain(module: nn.Module) -> list[nn.Module | None]:
    """The leaf modules of ``module`` in the order data flows through them, where each one's
    output is only the next one's input; None marks a break (a residual branch's input is also
    added to its output)."""
    if type(module) in (nn.Sequential, Inserted):
        return [leaf for child in module for leaf in _chain(child)]
    if type(module) is Residual:
        return [None, *_chain(module.branch), None]
    return [module]


def slot_shapes(base: nn.Module, names: list[str], sample: torch.Tensor) -> list[tuple[int, ...]]:
    """The shape of one sample's input to each dropout slot ``names`` of ``base`` (the shape
    of the factors it multiplies by), found by running ``sample`` (a batch of one) through
    ``base`` in eval mode."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        base.get_submodule(n).register_forward_pre_hook(
            lambda mod, args, n=n: shapes.__setitem__(n, tuple(args[0].shape[1:]))
        )
        for n in names
    ]
    try:
        with torch.no_grad():
            base.eval()(sample)
    finally:
        for h in hooks:
            h.remove()
    return [shapes[n] for n in names]
