"""The lab: data, models, studies, statistics and reports, built on the public library.

Grouped by job: :mod:`~reglab.lab.inputs` (data, models, recipes, a user's own functions and
datasets), :mod:`~reglab.lab.engine` (populations, the batched model, devices, worker
processes), :mod:`~reglab.lab.studies` (compare, tune, path, their settings and storage) and
:mod:`~reglab.lab.reports` (statistics, tables, plots, the HTML report)."""

from __future__ import annotations

import importlib
from typing import Any

#: Each flat name and the module that defines it. They are imported on first use, so a worker
#: process that only trains (it imports ``reglab.lab.studies.trial``) does not pay for the
#: plotting and statistics libraries the reports need.
_WHERE = {
    "Member": "engine.population",
    "fit_population": "engine.population",
    "population_reason": "engine.population",
    "BUILTIN_DATASETS": "inputs.data",
    "DataError": "inputs.data",
    "Dataset": "inputs.data",
    "load_dataset": "inputs.data",
    "MODELS": "inputs.models",
    "build_model": "inputs.models",
    "BUILTIN_RECIPES": "inputs.recipes",
    "DEFAULT_PANEL": "inputs.recipes",
    "resolve_recipes": "inputs.recipes",
    "calibration_bins": "reports.calibration",
    "expected_calibration_error": "reports.calibration",
    "mean_ci": "reports.stats",
    "paired_test": "reports.stats",
    "compare": "studies.compare",
    "write_outputs": "studies.compare",
    "PathConfig": "studies.path",
    "run_path": "studies.path",
    "run_shared": "studies.shared",
    "StudyConfig": "studies.config",
    "StudyRun": "studies.study",
    "run_population": "studies.trial",
    "run_study": "studies.study",
    "run_trial": "studies.trial",
    "TuneConfig": "studies.tune",
    "run_tune": "studies.tune",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'reglab.lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


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
