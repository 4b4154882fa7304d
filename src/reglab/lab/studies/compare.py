"""``reglab compare``: run a study and write its table, CSV files, plots and report."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import tomli_w
from rich.console import Console

from ...core import ConfigError, Interval, Regularizer, check_param
from ...serialize import recipe_specs
from ..engine.workers import ready
from ..inputs.user import reference
from ..reports.html import write_report
from ..reports.plots import write_plots
from ..reports.results import (
    RESULT_COLUMNS,
    comparison,
    numeric_rows,
    result_rows,
    summary_rows,
    to_csv,
)
from ..reports.verdict import Verdict, verdict
from .compare_report import (
    StudyProgress,
    print_interrupted,
    print_notes,
    print_results,
    shared_note,
)
from .fields import STORAGE_SETTINGS
from .holds import hold
from .rounds import run_rounds
from .store import write_atomic
from .study import StudyConfig, StudyRun, run_study

__all__ = ["compare", "study_verdict", "write_outputs"]


def write_outputs(
    run: StudyRun, summary: list | None = None, found: Verdict | None = None
) -> dict[str, Path]:
    """Write ``results.csv``, ``summary.csv``, ``trials.csv``, ``study.toml``, plots and
    ``report.html`` for the finished trials of ``run``, and fill ``run.table``,
    ``run.answer`` and ``run.paths``; return the paths by name. ``summary`` and the verdict
    ``found`` are computed from the results when not given."""
    out = run.out
    if summary is None:
        summary = comparison(run.results, run.task, run.config.baseline, run.config.design)
    if found is None:
        found = study_verdict(run, summary)
    paths = {
        name: out / name
        for name in ("results.csv", "summary.csv", "trials.csv", "study.toml", "report.html")
    }
    write_atomic(paths["results.csv"], to_csv(RESULT_COLUMNS, result_rows(run.results)))
    header, rows = summary_rows(summary, run.task, detail=True)
    write_atomic(paths["summary.csv"], to_csv(header, rows))
    run.table = numeric_rows(summary, run.task)
    run.answer = list(found.answer)
    write_atomic(
        paths["trials.csv"],
        to_csv(
            ("recipe", "seed", "status", "epochs_run", "seconds", "message"),
            (
                (
                    r["recipe"],
                    r["seed"],
                    r["status"],
                    r.get("epochs_run", 0),
                    r.get("seconds", 0.0),
                    r.get("message", ""),
                )
                for r in run.results
            ),
        ),
    )
    study = {k: v for k, v in asdict(run.config).items() if v is not None and k != "recipes"}
    study["recipes"] = run.recipes
    write_atomic(paths["study.toml"], tomli_w.dumps(study))
    hold("report", out)
    parallel = ready() and (os.cpu_count() or 1) > 1  # a second process starts at once
    plots = write_plots(run.results, summary, run.task, out, run.config.baseline, parallel)
    title = f"reglab compare: {Path(run.config.data).name}, {run.config.model}"
    write_report(
        paths["report.html"],
        baseline=run.config.baseline,
        title=title,
        # the values used: a default train size is the number of samples it became
        settings={**run.settings, "train_size": run.settings["train_size"] or run.n_train},
        summary=summary,
        results=run.results,
        task=run.task,
        plots=plots,
        recipes=run.recipes,
        answer=found.answer,
        details=found.sentences,
        design=run.config.design.describe() + _rounds_text(run),
        notes=[shared_note(run.shared)] if run.shared else [],
    )
    run.paths = paths
    return paths


def study_verdict(run: StudyRun, summary: list) -> Verdict:
    """The verdict of ``run``'s ``summary``, with its rerun suggestion."""
    auto = run.config.seeds == "auto"
    return verdict(
        summary,
        run.task,
        run.config.baseline,
        finished=len(run.results),
        max_seeds=run.config.max_seeds if auto else None,
    )


def _rounds_text(run: StudyRun) -> str:
    if not run.rounds:
        return ""
    return f"; this study ran rounds of {', '.join(map(str, run.rounds))} seeds"


def _settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Python objects among ``compare``'s keyword arguments as the plain values a study stores:
    a model factory or data function by reference, a ``Dataset`` mapping as a token held in
    this process, regularizer objects as specs."""
    out = dict(settings)
    for name in ("model", "data"):
        if name in out and not isinstance(out[name], str):
            out[name] = reference(out[name], name)
    recipes = out.get("recipes")
    if isinstance(recipes, Mapping):
        out["recipes"] = {
            str(k): recipe_specs(v) if isinstance(v, Regularizer) else v for k, v in recipes.items()
        }
    return out


def compare(
    config: StudyConfig | None = None,
    out: str | Path = "runs/compare",
    console: Console | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    *,
    quiet: bool = False,
    overwrite: bool = False,
    storage_retry: float = STORAGE_SETTINGS["storage_retry"].default,
    **settings: Any,
) -> StudyRun:
    """Run a study with a progress bar, print its table and write every output file: what
    ``reglab compare`` does, from Python.

    Args:
        config: a :class:`StudyConfig`; None starts from the defaults.
        out: the output folder; a rerun with the same settings reuses its finished trials.
        console: where to print (a ``rich`` console); None prints to standard output.
        storage: an RDB URL (e.g. PostgreSQL) shared by machines; the trials then come from the
            shared study ``study_name`` (see :mod:`reglab.lab.studies.shared`).
        storage_retry: with ``storage``, the seconds each call to the database waits out an
            outage (training goes on meanwhile); past it
            :class:`~reglab.errors.StorageUnavailable` ends the run, every finished result
            kept, and rerunning resumes.
        quiet: print nothing.
        overwrite: when ``out`` holds a study run with other settings (epochs, data, model,
            optimizer, ...), move it aside to ``<out>.<time>`` and start afresh; without it
            such a rerun raises a ConfigError naming each difference, and changes nothing.
        **settings: any :class:`StudyConfig` field, overriding ``config``. ``model`` may be a
            built-in name, a ``'module:function'`` reference or the factory itself (called as
            ``factory(input_shape, num_outputs, **model_args)``); ``data`` a name, a path, a
            reference, a data function or a mapping ``{'train', 'val'[, 'test']}`` of
            ``Dataset`` objects; ``recipes`` a list of built-in names or a mapping from name to
            a regularizer (``reglab.chain(...)``), a built-in name or a list of specs. A
            function other processes can import is sent to worker processes by name; any other
            Python object keeps the study in this process.

    Returns:
        A :class:`~reglab.lab.studies.study.StudyRun`: ``table`` (one dict per recipe, and
        ``to_pandas()``), ``results`` and ``histories`` (per trial), ``report`` (the HTML
        report's path) and ``paths``.

    Raises:
        ConfigError: for any bad setting, model, data or recipe, an unreachable storage, or
            an ``out`` whose study ran with other settings (without ``overwrite``), before
            training starts (nothing in ``out`` is touched).
        StorageUnavailable: the shared study's database stayed unreachable ``storage_retry``
            seconds.

    Examples:
        >>> run = reglab.lab.compare(model=my_factory, data={"train": tr, "val": va},
        ...                          recipes={"baseline": reglab.chain(),
        ...                                   "l2": reglab.chain(reglab.L2(1e-4))},
        ...                          seeds=3, epochs=20, out="runs/mine")
        >>> run.table[1]["recipe"], run.report
    """
    given = _settings(settings)
    if config is None:
        config = StudyConfig(**given)
    elif given:
        config = StudyConfig(**{**asdict(config), **given})
    check_param("compare", "storage_retry", storage_retry, Interval(float, 0, None))
    if storage is not None and config.seeds == "auto":
        raise ConfigError(
            "The 'seeds' parameter of compare must be a number of seeds with --storage (a "
            "shared study runs its seeds at once). Got 'auto'."
        )
    console = console or Console(stderr=False, quiet=quiet)
    started = time.perf_counter()
    bar = StudyProgress(console)
    with bar:
        if storage is not None:
            from .optuna_storage import storage_note
            from .shared import run_shared

            name = study_name or f"compare-{Path(config.data).stem}-{config.model}"
            run = run_shared(
                config,
                out,
                storage,
                name,
                on_trial=bar.trial,
                overwrite=overwrite,
                storage_retry=storage_retry,
                notify=storage_note,
            )
        elif config.seeds == "auto":
            run = run_rounds(config, out, bar.trial, bar.epoch, bar.round, overwrite=overwrite)
        else:
            run = run_study(config, out, bar.trial, bar.epoch, overwrite=overwrite)
    if run.interrupted:  # the rerun writes the outputs; stop now, as asked
        print_interrupted(console, run, out)
        return run
    summary = comparison(run.results, run.task, config.baseline, config.design)
    found = study_verdict(run, summary)
    print_notes(console, run, out, shared=storage is not None)
    paths = write_outputs(run, summary, found)
    print_results(console, run, summary, found, paths, time.perf_counter() - started)
    return run
