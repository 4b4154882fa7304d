"""The lab: data, models, studies, statistics and reports, built on the public library."""

from .calibration import calibration_bins, expected_calibration_error
from .compare import compare, write_outputs
from .data import BUILTIN_DATASETS, DataError, Dataset, load_dataset
from .models import MODELS, build_model
from .recipes import BUILTIN_RECIPES, DEFAULT_PANEL, resolve_recipes
from .stats import mean_ci, paired_test
from .study import StudyConfig, run_study, run_trial

__all__ = [
    "BUILTIN_DATASETS",
    "BUILTIN_RECIPES",
    "DEFAULT_PANEL",
    "MODELS",
    "DataError",
    "Dataset",
    "StudyConfig",
    "build_model",
    "calibration_bins",
    "compare",
    "expected_calibration_error",
    "load_dataset",
    "mean_ci",
    "paired_test",
    "resolve_recipes",
    "run_study",
    "run_trial",
    "write_outputs",
]
