"""reglab: composable, exact regularizers for PyTorch, and a lab that shows whether they help.

The public names are imported on first use, all at once (PyTorch with them): ``import reglab``
alone loads nothing heavy, so the ``reglab`` command starts its workers' process server before
PyTorch is loaded, and ``reglab --help`` answers at once.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.5.0"

#: The modules of the public API, in the order :func:`_load` imports them; each defines the
#: names of :data:`__all__` that its own ``__all__`` lists.
_MODULES = (
    "augment",
    "averaging",
    "checkpoint",
    "clipping",
    "core",
    "drop",
    "mc_dropout",
    "mixing",
    "normalization",
    "penalties",
    "proximal",
    "serialize",
    "stopping",
    "structure",
    "targets",
    "train",
)
_loaded = False


def _load() -> None:
    """Import the modules of the public API and bind their public names here (the first call
    does)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    public = set(__all__)
    try:
        for module in _MODULES:
            loaded = importlib.import_module(f".{module}", __name__)
            for name in public.intersection(loaded.__all__):
                globals()[name] = getattr(loaded, name)
    except BaseException:
        _loaded = False
        raise


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _load()
    if name not in globals():  # listed, but no module of _MODULES exports it
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return globals()[name]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "EMA",
    "L1",
    "L2",
    "SWA",
    "AdaptiveClip",
    "AlphaDropout",
    "AlphaDropoutLayer",
    "Chain",
    "ChannelDropout",
    "ChannelDropoutLayer",
    "Checkpoint",
    "CheckpointWarning",
    "ClipGradNorm",
    "ClipGradValue",
    "ConfidencePenalty",
    "ConfigError",
    "CutMix",
    "Cutout",
    "DropBlock",
    "DropBlockLayer",
    "DropConnect",
    "DropConnectLinear",
    "DropPath",
    "DropPathLayer",
    "Dropout",
    "DropoutLayer",
    "EarlyStopping",
    "ElasticNet",
    "ElementwiseTerms",
    "FeatureDropout",
    "GaussianDropout",
    "GaussianDropoutLayer",
    "GaussianNoise",
    "GroupLasso",
    "History",
    "ImageAugment",
    "InsertNorm",
    "Interrupted",
    "LabelSmoothing",
    "MCPrediction",
    "MaxNorm",
    "Mixup",
    "Regularizer",
    "ReplaceNorm",
    "Residual",
    "Selection",
    "SpectralNorm",
    "StopReason",
    "WeightDecay",
    "WeightNorm",
    "adaptive_clip_grad_",
    "alpha_dropout",
    "beta_sample",
    "chain",
    "channel_dropout",
    "color_jitter",
    "confidence_penalty",
    "cutmix",
    "cutout",
    "drop_block",
    "drop_connect",
    "drop_path",
    "dropout",
    "dropout_factors_",
    "evaluate",
    "fit",
    "from_config",
    "gaussian_dropout",
    "gaussian_noise",
    "group_lasso_penalty",
    "group_soft_threshold_",
    "l1_penalty",
    "l2_penalty",
    "load_recipe",
    "max_norm_",
    "mc_predict",
    "mixup",
    "param_groups",
    "random_affine",
    "random_crop",
    "random_erase",
    "random_flip",
    "recipe_from_toml",
    "recipe_to_toml",
    "save_recipe",
    "select_params",
    "smooth_labels",
    "soft_threshold_",
    "to_config",
]
