"""``reglab compare``: run a study and write its table, CSV files, plots and report."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import tomli_w
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..reports.report import features_summary, write_plots, write_report
from ..reports.results import (
    RESULT_COLUMNS,
    comparison,
    result_rows,
    rich_tables,
    summary_rows,
    to_csv,
)
from .study import StudyConfig, StudyRun, run_study

__all__ = ["compare", "write_outputs"]


def write_outputs(run: StudyRun) -> dict[str, Path]:
    """Write ``results.csv``, ``summary.csv``, ``trials.csv``, ``study.toml``, plots and
    ``report.html`` for the finished trials of ``run``; return their paths by name."""
    out = run.out
    summary = comparison(run.results, run.task, run.config.baseline)
    paths = {
        name: out / name
        for name in ("results.csv", "summary.csv", "trials.csv", "study.toml", "report.html")
    }
    paths["results.csv"].write_text(to_csv(RESULT_COLUMNS, result_rows(run.results)))
    header, rows = summary_rows(summary, run.task)
    paths["summary.csv"].write_text(to_csv(header, rows))
    paths["trials.csv"].write_text(
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
        )
    )
    study = {k: v for k, v in asdict(run.config).items() if v is not None and k != "recipes"}
    study["recipes"] = run.recipes
    paths["study.toml"].write_text(tomli_w.dumps(study))
    plots = write_plots(run.results, summary, run.task, out, run.config.baseline)
    title = f"reglab compare: {Path(run.config.data).name}, {run.config.model}"
    write_report(
        paths["report.html"],
        title=title,
        settings=run.settings,
        summary=summary,
        results=run.results,
        task=run.task,
        plots=plots,
        recipes=run.recipes,
    )
    return paths


def _describe(run: StudyRun) -> str:
    s, seeds, workers = run.settings, run.config.seeds, run.config.workers
    n_recipes = len(run.recipes)
    noise = f", {s['label_noise']:.0%} label noise" if s["label_noise"] else ""
    size = run.n_train
    return (
        f"[bold]{s['data']}[/] with {s['model']} {s['widths'] if s['model'] == 'mlp' else ''}"
        f" · train size {size}{noise} · {n_recipes} recipes x {seeds} seeds · "
        f"{s['epochs']} epochs · {s['optimizer']} {s['lr']} · {workers} workers, {s['engine']}"
    )


def compare(
    config: StudyConfig,
    out: str | Path,
    console: Console | None = None,
    storage: str | None = None,
    study_name: str | None = None,
) -> StudyRun:
    """Run the study with a progress bar, print the table, write every output file.

    With ``storage`` (an RDB URL, e.g. PostgreSQL) the trials come from the shared study
    ``study_name`` (see :mod:`reglab.lab.studies.shared`): run the same command on several machines.

    Raises:
        ConfigError: for any bad setting or an unreachable storage, before training starts.
    """
    console = console or Console(stderr=False)
    started = time.perf_counter()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    state: dict[str, Any] = {}

    def on_trial(result: dict[str, Any], done: int, total: int) -> None:
        if "task" not in state:
            state["task"] = progress.add_task("trials", total=total, completed=done - 1)
        test = result.get("final", {}).get("test", {})
        figure = next((f"test {k} {v:.3f}" for k, v in test.items() if k != "loss"), "")
        progress.update(
            state["task"],
            completed=done,
            description=f"{result['recipe']} seed {result['seed']}: {result['status']} {figure}",
        )

    def on_epoch(completed: float, total: int) -> None:
        if "task" not in state:
            state["task"] = progress.add_task("trials", total=total, completed=0)
        progress.update(state["task"], completed=completed, description="training populations")

    with progress:
        if storage is not None:
            from .shared import run_shared

            name = study_name or f"compare-{Path(config.data).stem}-{config.model}"
            run = run_shared(config, out, storage, name, on_trial=on_trial)
        else:
            run = run_study(config, out, on_trial=on_trial, on_epoch=on_epoch)
    console.print(_describe(run))
    if run.reused:
        console.print(f"Reused {run.reused} finished trials from {out}.")
    if run.requeued:
        console.print(f"Re-queued {run.requeued} trials of workers that died.")
    if len(run.results) < len(run.recipes) * config.seeds and not run.interrupted:
        console.print(
            f"{len(run.results)} of {len(run.recipes) * config.seeds} trials are finished; "
            "the others are still running on other machines: run the command again later."
        )
    for recipe, reason in run.sequential.items():
        console.print(f"{recipe} trained one trial at a time (not batched): {reason}.")
    paths = write_outputs(run)
    summary = comparison(run.results, run.task, config.baseline)
    for table in rich_tables(summary, run.task):
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
    if run.interrupted:
        console.print(
            f"[yellow]Interrupted: {len(run.results)} finished trials are saved in "
            f"{out}/trials; run the same command again to finish the rest.[/]"
        )
    console.print(
        f"Wrote {', '.join(p.name for p in paths.values())} and plots/ to {out} "
        f"in {time.perf_counter() - started:.1f} s."
    )
    return run
