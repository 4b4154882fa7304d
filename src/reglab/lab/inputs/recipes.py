"""Built-in recipes: named lists of regularizer specs, and how a study names its recipes.

A recipe spec is a list of tables ``{"type": <Regularizer class>, **arguments}``, the form
:func:`reglab.recipe_to_toml` writes. In a study's TOML, ``recipes`` is either a list of built-in
names or a table from recipe name to a built-in name or a list of specs::

    [recipes]
    baseline = []
    strong_l2 = [{ type = "L2", strength = 0.01 }]
    dropout = "dropout"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...core import Chain, ConfigError, Regularizer, unknown_name
from ...serialize import recipe_from_specs

__all__ = ["BUILTIN_RECIPES", "DEFAULT_PANEL", "build_recipe", "resolve_recipes"]

Spec = list[dict[str, Any]]

#: name -> (what it shows, specs). Strengths were chosen by a sweep on the default study (digits,
#: 300 training samples, 30% label noise, MLP 256-256, Adam lr 1e-3, 150 epochs, 3 seeds), except
#: label smoothing, kept at the usual 0.1: under symmetric label noise it hurt at every eps tried.
BUILTIN_RECIPES: dict[str, tuple[str, Spec]] = {
    "baseline": ("no regularization", []),
    "l1": ("L1 penalty with proximal steps: exact zeros", [{"type": "L1", "strength": 0.1}]),
    "l2": (
        "L2 penalty s/2*sum(w^2), gradient added analytically",
        [{"type": "L2", "strength": 0.03}],
    ),
    "elastic_net": (
        "elastic net: L1 share 0.5 as proximal steps, the L2 share as a gradient",
        [{"type": "ElasticNet", "strength": 0.06, "l1_ratio": 0.5}],
    ),
    "group_lasso": (
        "group lasso over output units: whole hidden units become exactly zero",
        [{"type": "GroupLasso", "strength": 0.2}],
    ),
    "max_norm": (
        "max-norm constraint: each unit's incoming weights kept within norm 0.5",
        [{"type": "MaxNorm", "max_norm": 0.5}],
    ),
    "weight_decay": (
        "decoupled weight decay as AdamW: w *= 1 - lr*rate per step",
        [{"type": "WeightDecay", "rate": 5.0}],
    ),
    "dropout": ("inverted dropout after every hidden activation", [{"type": "Dropout", "p": 0.5}]),
    "noise": ("Gaussian noise on the standardized inputs", [{"type": "GaussianNoise", "std": 1.0}]),
    "feature_dropout": (
        "dropout on the inputs: each input value zeroed with probability 0.2",
        [{"type": "FeatureDropout", "p": 0.2}],
    ),
    "label_smoothing": (
        "soft targets (1-eps)*onehot + eps/K",
        [{"type": "LabelSmoothing", "eps": 0.1}],
    ),
    "early_stopping": (
        "stop when val_loss stalls for 10 epochs; restore the best weights",
        [{"type": "EarlyStopping", "monitor": "val_loss", "patience": 10}],
    ),
    "augment": (
        "per-sample random crop with 1 pixel of padding (shifts of up to 1 pixel)",
        [{"type": "ImageAugment", "crop_padding": 1}],
    ),
    "mixup": ("mixup of pairs of samples and their targets", [{"type": "Mixup", "alpha": 0.2}]),
    "cutmix": (
        "cutmix: a box from another image, targets mixed by area",
        [{"type": "CutMix", "alpha": 1.0}],
    ),
    "cutout": (
        "cutout: a 3x3 square of each training image zeroed",
        [{"type": "Cutout", "size": 3}],
    ),
    "clip": ("global gradient-norm clipping at 1.0", [{"type": "ClipGradNorm", "max_norm": 1.0}]),
    "clip_value": (
        "element-wise gradient clipping at 0.01",
        [{"type": "ClipGradValue", "value": 0.01}],
    ),
    "agc": (
        "unit-wise adaptive gradient clipping: gradient norm <= 0.01 x weight norm",
        [{"type": "AdaptiveClip", "clip_factor": 0.01}],
    ),
    "gaussian_dropout": (
        "multiplicative N(1, p/(1-p)) noise after every hidden activation",
        [{"type": "GaussianDropout", "p": 0.5}],
    ),
    "alpha_dropout": (
        "alpha dropout for SELU networks (use --activation selu)",
        [{"type": "AlphaDropout", "p": 0.1}],
    ),
    "dropconnect": (
        "DropConnect: a fresh mask on the hidden layers' weights every batch",
        [{"type": "DropConnect", "p": 0.5}],
    ),
    "drop_path": (
        "stochastic depth: each residual branch dropped per sample (--model resmlp)",
        [{"type": "DropPath", "p": 0.2}],
    ),
    "channel_dropout": (
        "spatial dropout of whole feature maps after each convolution (--model cnn)",
        [{"type": "ChannelDropout", "p": 0.1}],
    ),
    "drop_block": (
        "DropBlock: 3x3 regions of the feature maps dropped (--model cnn)",
        [{"type": "DropBlock", "p": 0.1, "block_size": 3}],
    ),
    "batch_norm": (
        "BatchNorm after every hidden layer",
        [{"type": "InsertNorm", "kind": "batch"}],
    ),
    "layer_norm": (
        "LayerNorm after every hidden layer",
        [{"type": "InsertNorm", "kind": "layer"}],
    ),
    "weight_norm": ("weight normalization of every layer", [{"type": "WeightNorm"}]),
    "spectral_norm": (
        "spectral normalization: every layer's largest singular value kept at 1",
        [{"type": "SpectralNorm"}],
    ),
    "confidence_penalty": (
        "loss - 0.5 x entropy of the predictions: penalizes over-confidence",
        [{"type": "ConfidencePenalty", "beta": 0.5}],
    ),
    "ema": (
        "exponential moving average of the weights (decay 0.99), swapped in at the end",
        [{"type": "EMA", "decay": 0.99}],
    ),
    "swa": (
        "stochastic weight averaging of the epoch-end weights from epoch 75 on",
        [{"type": "SWA", "start": 75}],
    ),
    "combined": (
        "dropout, L2 and early stopping together",
        [
            {"type": "L2", "strength": 0.01},
            {"type": "Dropout", "p": 0.3},
            {"type": "EarlyStopping", "monitor": "val_loss", "patience": 15},
        ],
    ),
}

#: The panel of ``reglab compare`` with no arguments: one recipe per family, and a combination.
DEFAULT_PANEL = (
    "baseline",
    "l1",
    "l2",
    "weight_decay",
    "dropout",
    "noise",
    "label_smoothing",
    "early_stopping",
    "combined",
)

#: Recipes that only make sense for classification; left out of default regression panels.
CLASSIFICATION_ONLY = ("label_smoothing", "mixup", "cutmix", "confidence_penalty")
#: Recipes for image data; the default panel gains them when the data are images.
IMAGE_PANEL = ("augment",)


def _builtin(name: Any) -> Spec:
    if name not in BUILTIN_RECIPES:
        raise unknown_name("compare", "recipes", name, BUILTIN_RECIPES)
    return [dict(s) for s in BUILTIN_RECIPES[name][1]]


def resolve_recipes(
    value: str | Sequence[str] | Mapping[str, Any] | None,
    task: str = "classification",
    images: bool = False,
) -> dict[str, Spec]:
    """Turn what a user wrote into ``{recipe name: specs}``, checking every spec.

    Args:
        value: None (the default panel), ``'a,b,c'``, a list of built-in names, or a mapping
            from name to a built-in name or a list of specs.
        task: the default panel leaves classification-only recipes out of regression studies.
        images: the default panel gains the image recipes (``augment``) for image data.

    Raises:
        ConfigError: an unknown recipe or regularizer name, a bad argument, a duplicate name.
    """
    if value is None:
        panel = DEFAULT_PANEL + (IMAGE_PANEL if images else ())
        names = [n for n in panel if task == "classification" or n not in CLASSIFICATION_ONLY]
        return {n: _builtin(n) for n in names}
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, Mapping):
        out = {}
        for name, spec in value.items():
            out[str(name)] = _builtin(spec) if isinstance(spec, str) else spec
    elif isinstance(value, Sequence):
        if len(set(value)) != len(value):
            raise ConfigError(
                f"The 'recipes' parameter of compare must name each recipe once. "
                f"Got {list(value)!r}."
            )
        out = {name: _builtin(name) for name in value}
    else:
        raise ConfigError(
            "The 'recipes' parameter of compare must be a list of recipe names or "
            f"a table of recipes. Got {value!r}."
        )
    if not out:
        raise ConfigError(
            "The 'recipes' parameter of compare must name at least one recipe. Got none."
        )
    for spec in out.values():
        build_recipe(spec)  # validates every regularizer and argument now, not in a worker
    return out


def recipe_spec(name: str, recipes: Any, task: str, owner: str) -> Spec:
    """The specs of the one recipe ``name`` that ``owner`` (``tune``, ``path``) works on: the
    study file's recipe of that name when ``recipes`` (a study's ``recipes``) defines it, else
    the built-in one.

    Raises:
        ConfigError: a name neither defines, listing both; a bad spec.
    """
    defined = dict(recipes) if isinstance(recipes, Mapping) else {}
    if name in defined:
        return resolve_recipes({name: defined[name]}, task)[name]
    if name in BUILTIN_RECIPES:
        return resolve_recipes([name], task)[name]
    raise unknown_name(owner, "recipe", name, [*defined, *BUILTIN_RECIPES])


def build_recipe(spec: Spec, image_shape: Sequence[int] | None = None) -> Chain:
    """A fresh chain from specs (each trial gets its own, since regularizers keep state). Image
    transforms that take an ``image_shape`` and were given none get the data's."""
    filled = []
    for item in spec:
        cls = Regularizer.registry.get(item.get("type"))
        needs = cls is not None and "image_shape" in cls.constraints and "image_shape" not in item
        filled.append({**item, "image_shape": list(image_shape)} if needs and image_shape else item)
    return recipe_from_specs(filled)
