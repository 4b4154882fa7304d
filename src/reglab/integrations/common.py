"""What every trainer integration shares: its arguments' constraints, the recipe as a chain,
and the generator its random draws come from. Imports no framework."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..core import Chain, Interval, Predicate, Regularizer, chain, check_param

__all__ = ["CONSTRAINTS", "checked_recipe", "epoch_end", "recipe_generator", "scalar_metrics"]

#: The arguments of an integration's ``Regularize``: one table, one message shape.
CONSTRAINTS = {
    "recipe": Predicate(
        lambda r: isinstance(r, Regularizer), "a Regularizer (e.g. reglab.chain(...))"
    ),
    "num_classes": Interval(int, 2, None, allow_none=True),
    "seed": Interval(int, 0, None),
}


def checked_recipe(recipe: Regularizer, num_classes: int | None, seed: int) -> Chain:
    """``recipe`` as a :class:`~reglab.Chain`, after checking the three arguments of a
    ``Regularize`` callback.

    Raises:
        ConfigError: ``The 'seed' parameter of Regularize must be ...``.

    Examples:
        >>> checked_recipe(reglab.L2(1e-4), None, 0)
        chain(L2(strength=0.0001, convention='reglab', params=None))
    """
    for name, value in (("recipe", recipe), ("num_classes", num_classes), ("seed", seed)):
        check_param("Regularize", name, value, CONSTRAINTS[name])
    return recipe if isinstance(recipe, Chain) else chain(recipe)


def recipe_generator(device: torch.device, seed: int, rank: int) -> torch.Generator:
    """The generator of a recipe's random draws on ``device``, seeded as :func:`reglab.fit`
    seeds it: from ``seed`` and the process's ``rank``."""
    return torch.Generator(device).manual_seed(seed * 1_000_003 + 1 + rank)


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers among a trainer's metrics (plain numbers and one-element tensors, not
    bools), as floats; ``epoch`` is left out (the caller numbers the recipe's epochs).

    Examples:
        >>> scalar_metrics({"val_loss": torch.tensor(0.5), "epoch": 2.0, "name": "x"})
        {'val_loss': 0.5}
    """
    found: dict[str, float] = {}
    for key, value in metrics.items():
        tensor = isinstance(value, torch.Tensor) and value.numel() == 1
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key != "epoch" and (tensor or number):
            found[key] = float(value)
    return found


def epoch_end(recipe: Regularizer, record: dict[str, float]) -> bool:
    """The recipe's epoch end, as :func:`reglab.fit` closes an epoch: ``record`` (``epoch``
    and the trainer's metrics) gains ``penalty`` and the recipe's ``logs()``; True when the
    recipe stops training."""
    record["penalty"] = recipe.penalty()
    record.update(recipe.logs())
    return bool(recipe.on_epoch_end(record))
