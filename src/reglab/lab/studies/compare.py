"""``reglab compare``: run a study and write its table, CSV files, plots and report."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import tomli_w
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ...core import ConfigError, Regularizer
from ...serialize import recipe_specs
from ..engine.device import CPU_POPULATION
from ..engine.workers import ready, unguarded_main
from ..inputs.user import in_process, reference
from ..reports.plots import write_plots
from ..reports.report import features_summary, write_report
from ..reports.results import (
    RESULT_COLUMNS,
    comparison,
    numeric_rows,
    result_rows,
    rich_tables,
    summary_rows,
    to_csv,
)
from ..reports.verdict import Verdict, verdict
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


def _describe(run: StudyRun, width: int = 100) -> str:
    """The study in a few phrases joined by " · ", broken between phrases (never inside one)
    to fit ``width`` columns; the engine in words a user knows."""
    s, seeds, workers = run.settings, run.config.max_trial_seeds, run.config.workers
    if in_process(s["data"], s["model"]) or unguarded_main() is not None:
        workers = 1
    noise = f", {s['label_noise']:.0%} label noise" if s["label_noise"] else ""
    batched = [r for r in run.recipes if r not in run.sequential]
    at_once = min(CPU_POPULATION, math.ceil(len(batched) * seeds / max(workers, 1)))
    if s["engine"] == "population" and at_once > 1:
        engine = f"up to {at_once} trials at a time per worker"
        if run.sequential:
            engine += f" ({', '.join(run.sequential)}: one at a time)"
    else:
        engine = "one trial at a time per worker"
    engine = f"{workers} worker{'s' if workers != 1 else ''}, {engine}"
    widths = f" {s['widths']}" if s["model"] == "mlp" else ""
    phrases = [
        f"[bold]{s['data']}[/] with {s['model']}{widths}",
        f"{_sizes(run)}{noise}",
        f"{len(run.recipes)} recipes x {_seeds_text(run)}",
        f"{s['epochs']} epochs",
        f"{s['optimizer']} {s['lr']}",
        engine,
    ]
    lines, line = [], ""
    for phrase in phrases:
        visible = len(phrase.replace("[bold]", "").replace("[/]", ""))
        shown = len(line.replace("[bold]", "").replace("[/]", ""))
        if line and shown + 3 + visible > width:
            lines.append(line)
            line = phrase
        else:
            line = f"{line} · {phrase}" if line else phrase
    return "\n".join([*lines, line])


def _seeds_text(run: StudyRun) -> str:
    """``6 seeds``, or ``seeds in rounds 4, 6 (up to 10)``."""
    if run.config.seeds != "auto":
        return f"{run.config.seeds} seeds"
    return f"seeds in rounds {', '.join(map(str, run.rounds))} (up to {run.config.max_seeds})"


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

    Example:
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
    console = console or Console(stderr=False, quiet=quiet)
    started = time.perf_counter()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,  # no stale line of the last trial above the tables
    )
    # the bar's clock starts with the study, not with its first finished trial
    state: dict[str, Any] = {"task": progress.add_task("preparing the study", total=None)}

    def on_trial(result: dict[str, Any], done: int, total: int) -> None:
        test = result.get("final", {}).get("test", {})
        figure = next((f"test {k} {v:.3f}" for k, v in test.items() if k != "loss"), "")
        progress.update(
            state["task"],
            total=total,
            completed=done,
            description=f"{result['recipe']} seed {result['seed']}: {result['status']} {figure}",
        )

    def on_epoch(completed: float, total: int) -> None:
        progress.update(
            state["task"], total=total, completed=completed, description="training populations"
        )

    if storage is not None and config.seeds == "auto":
        raise ConfigError(
            "The 'seeds' parameter of compare must be a number of seeds with --storage (a "
            "shared study runs its seeds at once). Got 'auto'."
        )

    def on_round(seeds: int, most: int) -> None:
        progress.update(state["task"], description=f"round of {seeds} seeds (up to {most})")

    with progress:
        if storage is not None:
            from .shared import run_shared

            name = study_name or f"compare-{Path(config.data).stem}-{config.model}"
            run = run_shared(config, out, storage, name, on_trial=on_trial, overwrite=overwrite)
        elif config.seeds == "auto":
            run = run_rounds(config, out, on_trial, on_epoch, on_round, overwrite=overwrite)
        else:
            run = run_study(config, out, on_trial, on_epoch, overwrite=overwrite)
    planned = len(run.recipes) * (run.rounds[-1] if run.rounds else config.max_trial_seeds)
    if run.interrupted:  # the rerun writes the outputs; stop now, as asked
        console.print(
            f"[yellow]interrupted: rerun the same command to resume ({len(run.results)} of "
            f"{planned} trials finished in {out}/trials; the running "
            f"ones saved checkpoints in {out}/checkpoints).[/]"
        )
        return run
    console.print(_describe(run, min(console.width, 100)))
    if run.task == "classification" and run.settings["label_noise"]:
        console.print(
            f"Label noise: {run.settings['label_noise']:.0%} of the training labels are wrong "
            "on purpose; validation and test labels are clean. Train accuracy and the gap use "
            "the labels trained on; memorized is the share of the wrong ones the model predicts."
        )
    summary = comparison(run.results, run.task, config.baseline, config.design)
    found = study_verdict(run, summary)
    if run.reused:
        console.print(f"Reused {run.reused} finished trials from {out}.")
    resumed = run.resumed
    if resumed:
        console.print(
            f"Resumed {len(resumed)} trials from their checkpoints (at epochs "
            f"{min(resumed)} to {max(resumed)} of {config.epochs})."
        )
    if run.requeued:
        console.print(f"Re-queued {run.requeued} trials of workers that died.")
    if storage is not None and len(run.results) < planned:
        console.print(
            f"{len(run.results)} of {planned} trials are finished; "
            "the others are still running on other machines: run the command again later."
        )
    if in_process(config.data, config.model):
        console.print(
            "The model or data is a Python object other processes cannot import: the trials "
            "ran in this process (pass an importable 'module:function' to use every core)."
        )
    elif unguarded_main() is not None and config.workers > 1:
        console.print(
            f'compare was called outside `if __name__ == "__main__":` ({unguarded_main()}): '
            "worker processes would run the script again, so the trials ran in this process. "
            "Put the call under that guard to use every core."
        )
    for note in _data_notes(run):
        console.print(note)
    by_reason: dict[str, list[str]] = {}
    for recipe, reason in run.sequential.items():
        by_reason.setdefault(reason, []).append(recipe)
    for reason, names in by_reason.items():
        console.print(f"Not batched: {', '.join(names)} ({reason}).")
    paths = write_outputs(run, summary, found)
    for table in rich_tables(summary, run.task, console.width):
        console.print(table)
    for recipe, means, _ in features_summary(run.results):
        if "informative_kept" in means:
            console.print(
                f"{recipe}: keeps {means['informative_kept']:.1f} informative and "
                f"{means['noise_kept']:.1f} noise inputs (mean over seeds)"
            )
    failed = [r for r in run.results if r["status"] in ("failed", "diverged")]
    for r in failed:
        console.print(f"[red]{r['recipe']} seed {r['seed']} {r['status']}[/]: {r['message']}")
    written = [*(p.name for p in paths.values()), "plots/", "trials/", "reglab-study.json"]
    console.print(f"Wrote {', '.join(written)} to {out} in {time.perf_counter() - started:.1f} s.")
    console.print()
    for line in found.answer:
        console.print(line, style="bold", highlight=False)
    console.print(f"Details: {paths['report.html']}", highlight=False)
    return run


def _sizes(run: StudyRun) -> str:
    """``train 300, val 359, test 539`` (seed 0's split), so that a user sees where the data
    went (``--val-fraction``, ``--test-fraction``, ``--train-size`` change it)."""
    from .seams import dataset_for

    try:
        data = dataset_for(run.settings, 0)
    except ConfigError:  # the data moved since the trials ran: the count the study kept
        return f"train size {run.n_train}"
    return f"train {run.n_train}, val {data.size('val')}, test {data.size('test')}"


def _data_notes(run: StudyRun) -> list[str]:
    """What the user should know about the data of seed 0 (e.g. no test split was given)."""
    if not run.results:
        return []
    from .seams import dataset_for

    notes = dataset_for(run.settings, 0).notes
    return [f"Note: {text}." for text in notes.values() if isinstance(text, str)]
