"""What ``reglab compare`` prints: a progress bar while the study runs, then the study in a few
phrases, the notes a user should read (reused and resumed trials, label noise, what was not
batched), the tables, the failures, the files written and the answer."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ...core import ConfigError
from ..engine.device import CPU_POPULATION
from ..engine.workers import unguarded_main
from ..inputs.user import in_process
from ..reports.html import features_summary
from ..reports.results import rich_tables
from ..reports.verdict import Verdict
from .seams import board_line
from .study import StudyRun

__all__ = ["StudyProgress", "print_interrupted", "print_notes", "print_results", "shared_note"]


class StudyProgress:
    """The progress bar of a study: ``trial``, ``epoch`` and ``round`` are the callbacks the
    study runners take. The bar's clock starts with the study, not its first finished trial,
    and the bar leaves no stale line above the tables."""

    def __init__(self, console: Console) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.task = self.bar.add_task("preparing the study", total=None)

    def __enter__(self) -> StudyProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def trial(self, result: dict[str, Any], done: int, total: int) -> None:
        """A trial finished."""
        test = result.get("final", {}).get("test", {})
        figure = next((f"test {k} {v:.3f}" for k, v in test.items() if k != "loss"), "")
        self.bar.update(
            self.task,
            total=total,
            completed=done,
            description=f"{result['recipe']} seed {result['seed']}: {result['status']} {figure}",
        )

    def epoch(self, completed: float, total: int) -> None:
        """Populations trained an epoch (``completed`` counts their fraction of trials)."""
        self.bar.update(
            self.task, total=total, completed=completed, description="training populations"
        )

    def round(self, seeds: int, most: int) -> None:
        """A round of ``seeds = "auto"`` starts."""
        self.bar.update(self.task, description=f"round of {seeds} seeds (up to {most})")


def _planned(run: StudyRun) -> int:
    return len(run.recipes) * (run.rounds[-1] if run.rounds else run.config.max_trial_seeds)


def print_interrupted(console: Console, run: StudyRun, out: str | Path) -> None:
    """What a Ctrl-C left, and how to resume."""
    console.print(
        f"[yellow]interrupted: rerun the same command to resume ({len(run.results)} of "
        f"{_planned(run)} trials finished in {out}/trials; the running "
        f"ones saved checkpoints in {out}/checkpoints).[/]"
    )


def shared_note(storage: str) -> str:
    """Why a shared study's numbers are those of the sequential engine, for the console and
    the report: nobody should read a difference from a local run as a recipe's effect."""
    return (
        f"Shared study ({storage}): every trial trained with the sequential engine (one "
        "reglab.fit each). Compare its numbers with a local --engine sequential run, not with "
        "the default population engine's: that one sums floats in another order, so a few "
        "figures differ in their last digits, up to about 2% after many epochs, with no recipe "
        "having changed anything."
    )


def print_notes(console: Console, run: StudyRun, out: str | Path, *, shared: bool) -> None:
    """The study in a few phrases and the notes before its tables."""
    config = run.config
    console.print(_describe(run, min(console.width, 100)))
    if run.task == "classification" and run.settings["label_noise"]:
        console.print(
            f"Label noise: {run.settings['label_noise']:.0%} of the training labels are wrong "
            "on purpose; validation and test labels are clean. Train accuracy and the gap use "
            "the labels trained on; memorized is the share of the wrong ones the model predicts."
        )
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
    if run.shared:
        console.print(shared_note(run.shared))
    if shared and len(run.results) < _planned(run):
        console.print(
            f"{len(run.results)} of {_planned(run)} trials are finished; "
            "the others are still running on other machines: run the command again later."
        )
    if in_process(config.data, config.model):
        console.print(
            "The model or data is a Python object other processes cannot import: the trials "
            "ran in this process (pass an importable 'module:function' to use every core)."
        )
    elif (where := unguarded_main()) is not None and config.workers > 1:
        console.print(
            f'compare was called outside `if __name__ == "__main__":` ({where}): '
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


def print_results(
    console: Console,
    run: StudyRun,
    summary: list,
    found: Verdict,
    paths: dict[str, Path],
    seconds: float,
) -> None:
    """The tables, the inputs each recipe keeps, the failures, the files written and the
    answer."""
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
    console.print(f"Wrote {', '.join(written)} to {run.out} in {seconds:.1f} s.")
    console.print()
    for line in found.answer:
        console.print(line, style="bold", highlight=False)
    console.print(f"Details: {paths['report.html']}", highlight=False)
    if (line := board_line(run.out, run.config.tensorboard)) is not None:
        console.print(line, highlight=False)


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
