"""The lab: data, models, studies, statistics and reports, built on the public library.

Grouped by job: :mod:`~reglab.lab.inputs` (data, models, recipes, a user's own functions and
datasets), :mod:`~reglab.lab.engine` (populations, the batched model, devices, worker
processes), :mod:`~reglab.lab.studies` (compare, tune, path, their settings and storage) and
:mod:`~reglab.lab.reports` (statistics, tables, plots, the HTML report)."""

from .engine.population import Member, fit_population, population_reason
from .inputs.data import BUILTIN_DATASETS, DataError, Dataset, load_dataset
from .inputs.models import MODELS, build_model
from .inputs.recipes import BUILTIN_RECIPES, DEFAULT_PANEL, resolve_recipes
from .reports.calibration import calibration_bins, expected_calibration_error
from .reports.stats import mean_ci, paired_test
from .studies.compare import compare, write_outputs
from .studies.path import PathConfig, run_path
from .studies.shared import run_shared
from .studies.study import StudyConfig, StudyRun, run_population, run_study, run_trial
from .studies.tuner import TuneConfig, run_tune

__all__ = [
    "BUILTIN_DATASETS",
    "BUILTIN_RECIPES",
    "DEFAULT_PANEL",
    "MODELS",
    "DataError",
    "Dataset",
    "Member",
    "PathConfig",
    "StudyConfig",
    "StudyRun",
    "TuneConfig",
    "build_model",
    "calibration_bins",
    "compare",
    "expected_calibration_error",
    "fit_population",
    "load_dataset",
    "mean_ci",
    "paired_test",
    "population_reason",
    "resolve_recipes",
    "run_path",
    "run_population",
    "run_shared",
    "run_study",
    "run_trial",
    "run_tune",
    "write_outputs",
]
