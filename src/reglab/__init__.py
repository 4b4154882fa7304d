"""reglab: composable, exact regularizers for PyTorch, and a lab that shows whether they help."""

from .augment import (
    Cutout,
    FeatureDropout,
    GaussianNoise,
    ImageAugment,
    color_jitter,
    cutout,
    gaussian_noise,
    random_affine,
    random_crop,
    random_erase,
    random_flip,
)
from .clipping import ClipGradNorm
from .core import (
    Chain,
    ConfigError,
    Regularizer,
    Selection,
    chain,
    from_config,
    param_groups,
    select_params,
    to_config,
)
from .dropout import Dropout, DropoutLayer, dropout
from .mixing import CutMix, Mixup, beta_sample, cutmix, mixup
from .penalties import (
    L1,
    L2,
    ElasticNet,
    GroupLasso,
    MaxNorm,
    WeightDecay,
    group_lasso_penalty,
    l1_penalty,
    l2_penalty,
)
from .proximal import group_soft_threshold_, max_norm_, soft_threshold_
from .serialize import load_recipe, recipe_from_toml, recipe_to_toml, save_recipe
from .stopping import EarlyStopping, StopReason
from .targets import LabelSmoothing, smooth_labels
from .train import History, evaluate, fit

__version__ = "0.1.0"

__all__ = [
    "L1",
    "L2",
    "Chain",
    "ClipGradNorm",
    "ConfigError",
    "CutMix",
    "Cutout",
    "Dropout",
    "DropoutLayer",
    "EarlyStopping",
    "ElasticNet",
    "FeatureDropout",
    "GaussianNoise",
    "GroupLasso",
    "History",
    "ImageAugment",
    "LabelSmoothing",
    "MaxNorm",
    "Mixup",
    "Regularizer",
    "Selection",
    "StopReason",
    "WeightDecay",
    "beta_sample",
    "chain",
    "color_jitter",
    "cutmix",
    "cutout",
    "dropout",
    "evaluate",
    "fit",
    "from_config",
    "gaussian_noise",
    "group_lasso_penalty",
    "group_soft_threshold_",
    "l1_penalty",
    "l2_penalty",
    "load_recipe",
    "max_norm_",
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
