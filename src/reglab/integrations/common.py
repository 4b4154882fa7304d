"""What every trainer integration shares: its arguments' constraints, the recipe as a chain,
and the generator its random draws come from. Imports no framework."""

from __future__ import annotations

import torch

from ..core import Chain, Interval, Predicate, Regularizer, chain, check_param

__all__ = ["CONSTRAINTS", "checked_recipe", "recipe_generator"]

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
