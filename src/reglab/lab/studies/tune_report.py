"""``reglab tune`` on the console and in ``tune_report.html``: progress, the best values with
their validation and test metrics, the tuning history and Optuna's parameter importances."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from rich.console import Console
from rich.table import Table

from ..reports.html import counting, html_page, image_html
from .optuna_storage import storage_note
from .seams import board_line
from .tune import TuneConfig, TuneRun, run_tune, write_tune_outputs

__all__ = ["plot_history", "plot_importances", "plot_slices", "tune", "write_tune_report"]


def plot_history(run: TuneRun, path: Path) -> None:
    """Each finished trial's objective (validation loss) by trial number, and the best so far;
    pruned trials show their last reported value as crosses."""
    fig, ax = plt.subplots(figsize=(7, 4))
    trials = sorted(run.trials, key=lambda t: t.number)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    pruned = [t for t in trials if t.state.name == "PRUNED" and t.intermediate_values]
    ax.scatter([t.number for t in done], [t.value for t in done], s=18, label="complete")
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.scatter([t.number for t in pruned], last, marker="x", c="grey", label="pruned")
    best, running = float("inf"), []
    for t in done:
        best = min(best, t.value)
        running.append(best)
    ax.step([t.number for t in done], running, where="post", c="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation loss")
    ax.legend()
    ax.set_title(f"Tuning history: {run.name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_slices(run: TuneRun, path: Path) -> bool:
    """The objective (validation loss) against each searched parameter, one panel each, on
    the parameter's own scale (log or linear); pruned trials as crosses at their last
    reported value, the best trial circled. False (nothing written) when no trial has a value.
    """
    dims = run.config.dims
    done = [t for t in run.trials if t.state.name == "COMPLETE"]
    pruned = [t for t in run.trials if t.state.name == "PRUNED" and t.intermediate_values]
    if not done and not pruned:
        return False
    fig, axes = plt.subplots(1, len(dims), figsize=(4.2 * len(dims), 3.6), squeeze=False)
    for ax, dim in zip(axes[0], dims, strict=True):
        shown = [t for t in done if dim.name in t.params]
        ax.scatter([t.params[dim.name] for t in shown], [t.value for t in shown], s=18,
                   c=[t.number for t in shown], cmap="viridis", label="complete")  # fmt: skip
        cut = [t for t in pruned if dim.name in t.params]
        if cut:
            last = [t.intermediate_values[max(t.intermediate_values)] for t in cut]
            ax.scatter([t.params[dim.name] for t in cut], last, marker="x", c="grey",
                       label="pruned (last value)")  # fmt: skip
        if run.best is not None and dim.name in run.best.params:
            ax.scatter([run.best.params[dim.name]], [run.best.value], s=120, facecolors="none",
                       edgecolors="C3", linewidths=1.5, label="best")  # fmt: skip
        if dim.log:
            ax.set_xscale("log")
        ax.set_xlim(dim.low, dim.high)
        ax.set_xlabel(dim.name)
        ax.set_ylabel("validation loss")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Objective by parameter: {run.name} (colour: trial number)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_importances(importances: dict[str, float], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.4 * len(importances)))
    names = list(importances)
    ax.barh(names, [importances[n] for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("importance (fANOVA, normalized)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_tune_report(run: TuneRun, out: Path) -> Path:
    """``tune_report.html``: settings, the best trial, the history, the objective against
    each searched parameter and, when more than one was searched, their importances."""
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    plot_history(run, plots / "tune_history.png")
    parts = [f"<h1>reglab tune: {html.escape(run.name)}</h1>"]
    parts.append(
        f"<p>Storage <code>{html.escape(run.storage)}</code>; {len(run.trials)} finished trials "
        f"(complete or pruned) in the study; this run added {run.added}"
        + (f" and took over {run.requeued} trials of dead workers" if run.requeued else "")
        + ".</p>"
    )
    if run.best is not None:
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v:.6g}</td></tr>"
            for k, v in run.best.params.items()
        )
        metrics = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>"
            for k, v in run.best.user_attrs.items()
            if isinstance(v, float)
        )
        parts.append(
            f"<h2>Best trial ({run.best.number})</h2><table>{rows}{metrics}</table>"
            "<p><code>best.toml</code> is a study file with this recipe beside baseline: "
            "<code>reglab compare --config best.toml</code> measures it over seeds.</p>"
        )
    parts.append(f"<h2>History</h2>{image_html(plots / 'tune_history.png')}")
    if plot_slices(run, plots / "tune_slices.png"):
        parts.append(
            "<h2>Objective by parameter</h2><p>Each trial's validation loss against the value "
            "it tried; pruned trials at the last value they reported.</p>"
            f"{image_html(plots / 'tune_slices.png')}"
        )
    if len(run.importances) > 1:  # one searched parameter explains everything: trivially 1.0
        plot_importances(run.importances, plots / "tune_importances.png")
        parts.append(
            "<h2>Parameter importances</h2><p>Optuna's fANOVA estimate of how much of the "
            f"objective's variance each parameter explains.</p>"
            f"{image_html(plots / 'tune_importances.png')}"
        )
    path = out / "tune_report.html"
    path.write_text(html_page("reglab tune", "".join(parts)))
    return path


def tune(config: TuneConfig, out: str | Path, workers: int, console: Console) -> TuneRun:
    """Run the search with a progress bar, print the best trial, write every output."""
    out = Path(out)
    with counting(console, "trials", config.trials) as update:
        run = run_tune(config, out, workers, lambda done, _: update(done), storage_note)
    paths = write_tune_outputs(run, out)
    paths["tune_report.html"] = write_tune_report(run, out)
    console.print(
        f"Study [bold]{run.name}[/] in {run.storage}: {len(run.trials)} finished trials "
        f"({run.added} added by this run"
        f"{f', {run.requeued} taken over from workers that died' if run.requeued else ''})."
    )
    if run.sequential:
        console.print(f"Trials ran one at a time (not batched): {run.sequential}.")
    errors: dict[str, list[int]] = {}
    for t in run.failed:
        errors.setdefault(t.user_attrs["error"], []).append(t.number)
    for error, numbers in errors.items():
        which = ", ".join(map(str, sorted(numbers)))
        console.print(f"[red]{len(numbers)} trial(s) failed[/] ({which}): {error}")
    if run.best is None:
        console.print("[red]No trial completed[/]; see tune_trials.csv.")
    else:
        table = Table(title=f"Best trial ({run.best.number})")
        table.add_column("")
        table.add_column("value")
        for key, value in run.best.params.items():
            table.add_row(key, f"{value:.6g}")
        for key, value in run.best.user_attrs.items():
            if isinstance(value, float):
                table.add_row(key, f"{value:.4f}")
        console.print(table)
        if len(run.importances) > 1:
            for name, share in run.importances.items():
                console.print(f"importance of {name}: {share:.2f}")
    console.print(f"Wrote {', '.join(paths)} to {out}.")
    if (line := board_line(out, config.study.tensorboard)) is not None:
        console.print(line, highlight=False)
    return run
