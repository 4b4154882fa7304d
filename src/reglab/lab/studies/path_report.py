"""``reglab path`` on the console and on disk: ``path.csv``, ``plots/path.png`` (the U-curve,
sparsity and weight norm against strength, with the best and the one-standard-error choice
marked) and ``path_report.html``."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from rich.console import Console
from rich.table import Table

from ..reports.html import counting, html_page, image_html
from ..reports.results import to_csv
from .path import PathConfig, PathRun, run_path
from .seams import board_line

__all__ = ["path", "plot_path", "write_path_outputs"]

_COLUMNS = (
    "strength",
    "seed",
    "epochs",
    "seconds",
    "status",
    "first_train_loss",
    "train_loss",
    "val_loss",
    "test_loss",
    "zero_fraction",
    "weight_l2",
)


def _mean_se(run: PathRun, key: str) -> tuple[list[float], list[float], list[float]]:
    strengths = sorted({r["strength"] for r in run.rows})
    means, ses = [], []
    for s in strengths:
        values = np.array([r[key] for r in run.rows if r["strength"] == s], dtype=float)
        means.append(float(np.nanmean(values)))
        n = np.isfinite(values).sum()
        ses.append(float(np.nanstd(values, ddof=1) / np.sqrt(n)) if n > 1 else 0.0)
    return strengths, means, ses


def plot_path(run: PathRun, path: Path) -> None:
    """Validation and train loss (mean ± standard error over seeds), and sparsity and weight
    norm, against strength on a log axis; the best and one-SE strengths as vertical lines."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("val_loss", "validation loss"), ("train_loss", "train loss")):
        x, mean, se = _mean_se(run, key)
        left.errorbar(x, mean, yerr=se, marker="o", capsize=3, label=label)
    right_twin = right.twinx()
    x, zero, _ = _mean_se(run, "zero_fraction")
    right.plot(x, zero, "o-", c="C2", label="zero weights")
    x, norm, _ = _mean_se(run, "weight_l2")
    right_twin.plot(x, norm, "s--", c="C4", label="‖w‖₂")
    right.set_ylabel("fraction of weights exactly zero")
    right_twin.set_ylabel("weight norm ‖w‖₂")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel(run.config.dim.name)
        for key, style in (("best", "-"), ("one_se", ":")):
            if run.choice[key] is not None:
                ax.axvline(run.choice[key], c="k", ls=style, lw=1)
    left.set_ylabel("loss")
    left.legend(title="— best, ··· one-SE choice")
    lines = right.get_legend_handles_labels()
    twin = right_twin.get_legend_handles_labels()
    right.legend(lines[0] + twin[0], lines[1] + twin[1])
    fig.suptitle(f"Regularization path: {run.config.recipe}, {run.config.dim.name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_path_outputs(run: PathRun, out: Path) -> dict[str, Path]:
    """``path.csv``, ``plots/path.png`` and ``path_report.html``."""
    (out / "plots").mkdir(parents=True, exist_ok=True)
    paths = {"path.csv": out / "path.csv", "path.png": out / "plots" / "path.png"}
    paths["path.csv"].write_text(
        to_csv(_COLUMNS, ([r.get(c, "") for c in _COLUMNS] for r in run.rows))
    )
    plot_path(run, paths["path.png"])
    c = run.config
    start = "warm starts" if c.warm else "cold starts"
    rows = "".join(
        f"<tr><td>{s:.4g}</td><td>{mean:.4f}</td><td>{se:.4f}</td></tr>"
        for s, (mean, se) in sorted(run.choice["stats"].items(), reverse=True)
    )
    best, one_se = run.choice["best"], run.choice["one_se"]
    body = (
        f"<h1>reglab path: {html.escape(c.recipe)}, {html.escape(c.dim.name)}</h1>"
        f"<p>{c.points} strengths from {c.dim.high:g} down to {c.dim.low:g}, {c.seeds} seeds, "
        f"{start} ({c.study.epochs} epochs for the first point, {c.later_epochs} for the "
        f"others), {run.seconds:.1f} s.</p>"
        + (
            f"<p>Best strength {best:.4g}; one-standard-error choice {one_se:.4g} (the "
            "strongest within one standard error of the best mean validation loss).</p>"
            if best is not None
            else "<p class='bad'>No point finished with a finite validation loss.</p>"
        )
        + (f"<p class='bad'>{html.escape(run.edge)}</p>" if run.edge is not None else "")
        + f"{image_html(paths['path.png'])}<h2>Validation loss by strength</h2>"
        f"<table><tr><th>strength</th><th>mean</th><th>standard error</th></tr>{rows}</table>"
    )
    paths["path_report.html"] = out / "path_report.html"
    paths["path_report.html"].write_text(html_page("reglab path", body))
    return paths


def path(config: PathConfig, out: str | Path, workers: int, console: Console) -> PathRun:
    """Run the path with a progress bar, print the table and the choice, write the outputs."""
    out = Path(out)
    with counting(console, "seeds", config.seeds) as update:
        run = run_path(config, workers, lambda done, _: update(done), out=out)
    table = Table(title=f"Regularization path of {config.recipe} ({config.dim.name})")
    for col in ("strength", "val loss", "± SE", "train loss", "zero weights", "‖w‖₂"):
        table.add_column(col)
    _, train, _ = _mean_se(run, "train_loss")
    strengths, zero, _ = _mean_se(run, "zero_fraction")
    _, norm, _ = _mean_se(run, "weight_l2")
    extra = {s: (t, z, w) for s, t, z, w in zip(strengths, train, zero, norm, strict=True)}
    for s, (mean, se) in sorted(run.choice["stats"].items(), reverse=True):
        mark = " best" if s == run.choice["best"] else ""
        mark += " 1-SE" if s == run.choice["one_se"] else ""
        t, z, w = extra[s]
        table.add_row(
            f"{s:.4g}{mark}", f"{mean:.4f}", f"{se:.4f}", f"{t:.4f}", f"{z:.3f}", f"{w:.2f}"
        )
    console.print(table)
    if run.edge is not None:
        console.print(run.edge, style="yellow", highlight=False)
    paths = write_path_outputs(run, out)
    console.print(f"Wrote {', '.join(paths)} to {out} in {run.seconds:.1f} s.")
    if (line := board_line(out, config.study.tensorboard)) is not None:
        console.print(line, highlight=False)
    return run
