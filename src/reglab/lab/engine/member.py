"""One member of a population, and whether it can be batched: :class:`Member`,
:func:`population_reason`, :data:`UNBATCHABLE` and :func:`noise_layers`.

The population engine (:mod:`reglab.lab.engine.population`, :mod:`reglab.lab.engine.batched`)
and the studies (which decide once, at planning, what trains alone) read these; this module
imports neither of them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ...core import Regularizer
from ...drop import DropLayer
from ...structure import Inserted

__all__ = ["UNBATCHABLE", "Member", "noise_layers", "population_reason"]


def noise_layers(model: nn.Module) -> dict[str, DropLayer]:
    """The dropout-family layers of ``model`` whose output is ``x`` times a random factor."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, DropLayer) and m.multiplicative
    }


#: Regularizers that cannot run inside a population, and why.
UNBATCHABLE = {
    "SWA": "it changes the optimizer's learning rate and recomputes BatchNorm statistics",
}


@dataclass
class Member:
    """One member of a population: what ``fit(model, train, val, recipe=recipe, seed=seed,
    train_eval=train_eval)`` would take. ``train``, ``val`` and ``train_eval`` (the rows each
    epoch's train metrics are measured on; None: all of ``train``) are ``(X, y)`` tensors with
    targets already prepared (class indices, or ``(N, 1)`` floats for regression); members
    may share them. ``log_dir``: a folder for this member's TensorBoard scalars, as ``fit``'s
    (None: none)."""

    model: nn.Module
    recipe: Regularizer | None
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor] | None
    seed: int
    train_eval: tuple[torch.Tensor, torch.Tensor] | None = None
    log_dir: str | None = None


def population_reason(model: nn.Module, recipe: Regularizer | None) -> str | None:
    """Why ``model`` under ``recipe`` cannot train in a population, or None when it can.

    A member can be batched when its model, once transformed by the recipe, has no buffers (no
    BatchNorm statistics), no weight parametrization, and draws randomness only in
    multiplicative dropout-family layers inserted by reglab; and when no member of its recipe is
    in :data:`UNBATCHABLE`. Neither argument is changed (the check transforms copies).

    Examples:
        >>> population_reason(model, reglab.chain(reglab.SWA(start=10)))
        "SWA: it changes the optimizer's learning rate and recomputes BatchNorm statistics"
    """
    for reg in getattr(recipe, "regularizers", (recipe,) if recipe is not None else ()):
        if type(reg).__name__ in UNBATCHABLE:
            return f"{type(reg).__name__}: {UNBATCHABLE[type(reg).__name__]}"
    if recipe is not None:
        model = copy.deepcopy(recipe).transform_model(copy.deepcopy(model))
    for name, module in model.named_modules():
        if torch.nn.utils.parametrize.is_parametrized(module):
            return f"layer {name!r} has a weight parametrization (weight or spectral norm)"
    if any(True for _ in model.buffers()):
        return "the model has buffers (e.g. BatchNorm statistics), which vmap cannot update"
    noise = noise_layers(model)
    for name, module in model.named_modules():
        if hasattr(module, "generator") and name not in noise:
            kind = type(module).__name__
            return f"layer {name!r} ({kind}) draws randomness the engine cannot batch"
    for name in noise:
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        if not isinstance(parent, Inserted):
            return f"dropout layer {name!r} was not inserted by a reglab transform"
    return None
