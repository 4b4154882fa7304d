"""Recipes to and from TOML: a list of ``[[regularizers]]`` tables, each with its ``type``.

Example file::

    [[regularizers]]
    type = "L2"
    strength = 0.0001

    [[regularizers]]
    type = "EarlyStopping"
    patience = 10
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w
import torch

from .core import Chain, ConfigError, Regularizer, from_config, to_config

__all__ = [
    "load_recipe",
    "recipe_from_specs",
    "recipe_from_toml",
    "recipe_specs",
    "recipe_to_toml",
    "recipes_toml",
    "save_recipe",
]


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ConfigError(
                f"The {where!r} parameter of recipe_to_toml must be a number to "
                f"write it to TOML. Got a tensor of shape {tuple(value.shape)}."
            )
        return value.item()
    if value is None:
        raise ConfigError(
            f"The {where!r} parameter of recipe_to_toml is None, which TOML cannot "
            "hold: leave it at its default instead."
        )
    if callable(value):
        raise ConfigError(
            f"The {where!r} parameter of recipe_to_toml must be plain data to "
            f"write it to TOML. Got the callable {value!r}."
        )
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    return value


def recipe_specs(recipe: Regularizer) -> list[dict[str, Any]]:
    """The recipe as a list of ``{"type": ..., **arguments}`` tables with plain values (what a
    study file's ``[recipes]`` holds; :func:`recipe_from_specs` reads it back); arguments left
    at None are omitted.

    Examples:
        >>> recipe_specs(reglab.chain(reglab.L2(1e-4)))
        [{'type': 'L2', 'strength': 0.0001, 'convention': 'reglab'}]
    """
    members = recipe.regularizers if isinstance(recipe, Chain) else (recipe,)
    out = []
    for reg in members:
        config = to_config(reg)
        out.append({k: _plain(v, k) for k, v in config.items() if v is not None})
    return out


def recipe_to_toml(recipe: Regularizer) -> str:
    """The recipe as TOML text (arguments left at None are omitted: they are the defaults)."""
    return tomli_w.dumps({"regularizers": recipe_specs(recipe)})


def recipe_from_specs(specs: Sequence[Mapping[str, Any]]) -> Chain:
    """A chain from a list of ``{"type": ..., **arguments}`` tables."""
    if isinstance(specs, (str, bytes)) or not isinstance(specs, Sequence):
        raise ConfigError(
            "The 'regularizers' parameter of a recipe must be a list of tables "
            f"with a 'type' key. Got {specs!r}."
        )
    return Chain(*(from_config(s) for s in specs))


def recipe_from_toml(text: str) -> Chain:
    """Parse :func:`recipe_to_toml` output (or a hand-written file) into a chain.

    Raises:
        ConfigError: for a TOML syntax error or an unknown regularizer or argument.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The recipe is not valid TOML: {exc}.") from None
    return recipe_from_specs(data.get("regularizers", []))


def save_recipe(recipe: Regularizer, path: str | Path) -> None:
    """Write ``recipe`` (a chain or one regularizer) to ``path`` as TOML.

    Args:
        recipe: what to write; its arguments must be plain numbers, strings or lists.
        path: the file to write.

    Raises:
        ConfigError: for an argument TOML cannot hold (a callable, a tensor of several values).

    Examples:
        >>> reglab.save_recipe(reglab.chain(reglab.L2(1e-4), reglab.Dropout(0.3)), "recipe.toml")
    """
    Path(path).write_text(recipe_to_toml(recipe))


def load_recipe(path: str | Path) -> Chain:
    """Read a recipe written by :func:`save_recipe` (or by hand) as a chain.

    Raises:
        ConfigError: for a TOML syntax error, an unknown regularizer or a bad argument.

    Examples:
        >>> recipe = reglab.load_recipe("recipe.toml")
    """
    return recipe_from_toml(Path(path).read_text())


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def recipes_toml(recipes: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Recipes (name -> :func:`recipe_specs`) as a study file's ``[recipes]`` table, one line
    of inline tables per recipe, as a person writes it (``tomli_w`` writes arrays of tables).

    Examples:
        >>> print(recipes_toml({"l2": [{"type": "L2", "strength": 0.01}]}))
        [recipes]
        l2 = [{ type = "L2", strength = 0.01 }]
    """
    lines = ["[recipes]"]
    for name, specs in recipes.items():
        key = name if name.replace("_", "").replace("-", "").isalnum() else json.dumps(name)
        lines.append(f"{key} = {_toml_value([dict(s) for s in specs or []])}")
    return "\n".join(lines)
