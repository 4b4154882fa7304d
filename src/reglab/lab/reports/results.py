"""A study's results as tidy rows, per-trial figures, and the comparison table."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich import box
from rich.table import Table

from .stats import MAX_SEEDS, Paired, RecipeSummary, summarize

__all__ = ["RESULT_COLUMNS", "comparison", "per_trial_figures", "result_rows", "to_csv"]

RESULT_COLUMNS = ("recipe", "seed", "epoch", "split", "metric", "value")
_SKIP = {"epoch", "seconds", "lr"}


def primary_metric(task: str) -> str:
    """The headline metric: accuracy for classification, R² for regression."""
    return "accuracy" if task == "classification" else "r2"


def _split_metric(key: str) -> tuple[str, str]:
    for split in ("train", "val"):
        if key.startswith(split + "_"):
            return split, key[len(split) + 1 :]
    return "train", key  # objective, penalty and regularizer logs describe training


def result_rows(results: Iterable[Mapping[str, Any]]) -> list[tuple]:
    """``(recipe, seed, epoch, split, metric, value)`` rows: per-epoch learning curves with an
    integer epoch; the final model on train/val/test with epoch ``final``; whole-model figures
    with split ``model``. Non-finite values are left out."""
    rows = []
    for r in results:
        for record in r.get("history", []):
            for key, value in record.items():
                if key not in _SKIP and math.isfinite(value):
                    split, metric = _split_metric(key)
                    rows.append(
                        (r["recipe"], r["seed"], int(record["epoch"]), split, metric, value)
                    )
        for split, metrics in r.get("final", {}).items():
            rows += [
                (r["recipe"], r["seed"], "final", split, m, v)
                for m, v in metrics.items()
                if math.isfinite(v)
            ]
        rows += [
            (r["recipe"], r["seed"], "final", "model", m, v) for m, v in r.get("model", {}).items()
        ]
    return rows


def to_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    return buffer.getvalue()


def per_trial_figures(results: Iterable[Mapping[str, Any]], task: str) -> list[dict[str, Any]]:
    """One dict per trial with the figures of the comparison table."""
    m = primary_metric(task)
    out = []
    for r in results:
        final, model = r.get("final", {}), r.get("model", {})
        ok = bool(final) and r["status"] in ("completed", "stopped_early")
        nan = float("nan")
        noisy = final.get("train", {}).get(m, nan)
        # the gap uses the clean training labels: on noisy ones a model that does not memorize
        # the wrong labels looks like it generalizes "better than it trains"
        train = final.get("train_clean", final.get("train", {})).get(m, nan)
        test = final.get("test", {}).get(m, nan)
        out.append(
            {
                "recipe": r["recipe"],
                "seed": r["seed"],
                "ok": ok,
                "status": r["status"],
                f"train_{m}": train,
                f"train_noisy_{m}": noisy,
                f"val_{m}": final.get("val", {}).get(m, nan),
                f"test_{m}": test,
                "test_loss": final.get("test", {}).get("loss", nan),
                "test_ece": final.get("test", {}).get("ece", nan),
                "gap": train - test,
                "zero_fraction": model.get("zero_fraction", nan),
                "weight_l2": model.get("weight_l2", nan),
                "epochs": float(r.get("epochs_run", 0)),
            }
        )
    return out


def table_metrics(task: str, noisy: bool = False) -> tuple[list[str], list[str]]:
    """(columns estimated with a CI, columns tested against baseline); with ``noisy`` (label
    noise), the training metric on the noisy labels too."""
    m = primary_metric(task)
    return (
        [
            f"train_{m}",
            *([f"train_noisy_{m}"] if noisy else []),
            f"val_{m}",
            f"test_{m}",
            "test_loss",
            "gap",
            *(["test_ece"] if task == "classification" else []),
            "zero_fraction",
            "weight_l2",
            "epochs",
        ],
        [f"test_{m}", "gap"],
    )


def comparison(
    results: Sequence[Mapping[str, Any]], task: str, baseline: str
) -> list[RecipeSummary]:
    """The comparison table's rows (see :func:`reglab.lab.reports.stats.summarize`)."""
    noisy = any("train_clean" in r.get("final", {}) for r in results)
    metrics, compare = table_metrics(task, noisy)
    return summarize(per_trial_figures(results, task), metrics, compare, baseline)


_LABELS = {
    "train_accuracy": "train acc",
    "train_noisy_accuracy": "train acc (noisy labels)",
    "val_accuracy": "val acc",
    "test_accuracy": "test acc",
    "train_r2": "train R²",
    "val_r2": "val R²",
    "test_r2": "test R²",
    "test_loss": "test loss",
    "test_ece": "test ECE",
    "gap": "gap (train−test)",
    "zero_fraction": "zeros",
    "weight_l2": "‖w‖₂",
    "epochs": "epochs",
}


def label(metric: str) -> str:
    return _LABELS.get(metric, metric)


def seeds_cell(paired: Paired | None) -> str:
    """The "n for 80%" cell: the seeds a paired t-test would need to detect the observed
    difference with 80% power at the corrected level; empty when significant or untested,
    ``∞`` when the observed difference is 0."""
    if paired is None or paired.diff.n < 2 or paired.significant:
        return ""
    if paired.seeds_needed is None:
        return "∞"
    if paired.seeds_needed >= MAX_SEEDS:
        return f">{MAX_SEEDS}"
    return str(paired.seeds_needed)


def _number(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else ""


def summary_rows(
    summary: Sequence[RecipeSummary], task: str, detail: bool = False
) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the comparison table (shared by the terminal, CSV and HTML).

    Each compared metric has a ``Δ ... vs baseline`` cell (the mean paired difference and its
    Holm-adjusted p, ``*`` when below 0.05). The table shows "n for 80%" of the test metric;
    with ``detail`` (``summary.csv``) every compared metric has ``p`` (unadjusted), ``p_holm``,
    ``d_z`` and ``n for 80%`` columns instead."""
    noisy = any(f"train_noisy_{primary_metric(task)}" in s.estimates for s in summary)
    metrics, compare = table_metrics(task, noisy)
    header = (
        ["recipe", "n"]
        + [label(m) for m in metrics]
        + [f"Δ {label(c)} vs baseline" for c in compare]
    )
    if detail:
        for c in compare:
            header += [f"{k} ({label(c)})" for k in ("p", "p_holm", "d_z", "n for 80%")]
    else:
        header.append(f"n for 80% ({label(compare[0])})")
    rows = []
    for s in summary:
        n = f"{s.n_ok}/{s.n_trials}"
        cells = [s.recipe, n]
        for m in metrics:
            digits = {"epochs": 0, "weight_l2": 1}.get(m, 3)  # epochs are whole numbers
            cells.append(s.estimates[m].format(digits))
        for c in compare:
            paired = s.versus_baseline.get(c)
            cells.append(paired.format() if paired else "")
        if detail:
            for c in compare:
                paired = s.versus_baseline.get(c)
                if paired is None:
                    cells += ["", "", "", ""]
                    continue
                cells += [
                    _number(paired.p_value, 4),
                    _number(paired.p_holm, 4),
                    _number(paired.d_z, 2),
                    seeds_cell(paired),
                ]
        else:
            cells.append(seeds_cell(s.versus_baseline.get(compare[0])))
        rows.append(cells)
    return header, rows


def rich_tables(summary: Sequence[RecipeSummary], task: str) -> list[Table]:
    """Two compact terminal tables: generalization (with the paired tests), then the model."""
    m = primary_metric(task)
    family = max((len([s for s in summary if f"test_{m}" in s.versus_baseline])), 1)
    caption = (
        "mean ± 95% CI over seeds · Δ: paired difference from baseline (paired t-test over "
        f"seeds), p Holm-adjusted across the {family} recipe(s) compared, * when p < 0.05 · "
        "n 80%: seeds a paired t-test would need to detect the observed Δ test with 80% power"
    )
    first = Table(
        title=f"Generalization: {m}",
        caption=caption,
        box=box.SIMPLE_HEAD,
    )
    second = Table(title="The trained model", box=box.SIMPLE_HEAD)
    for col in ("recipe", "n", "train", "val", "test", "gap", "Δ test", "Δ gap", "n 80%"):
        first.add_column(col, justify="left" if col == "recipe" else "right", no_wrap=True)
    model_columns = ["recipe", "test loss", "zero weights", "‖w‖₂", "epochs"]
    if task == "classification":
        model_columns.insert(2, "test ECE")
    for col in model_columns:
        second.add_column(col, justify="left" if col == "recipe" else "right", no_wrap=True)

    def est(s: RecipeSummary, key: str, digits: int = 3) -> str:
        return s.estimates[key].format(digits).replace(" ± ", "±")

    def delta(s: RecipeSummary, key: str) -> str:
        paired = s.versus_baseline.get(key)
        return paired.format(compact=True) if paired else ""

    for s in summary:
        first.add_row(
            s.recipe,
            f"{s.n_ok}/{s.n_trials}",
            est(s, f"train_{m}"),
            est(s, f"val_{m}"),
            est(s, f"test_{m}"),
            est(s, "gap"),
            delta(s, f"test_{m}"),
            delta(s, "gap"),
            seeds_cell(s.versus_baseline.get(f"test_{m}")),
        )
        second.add_row(
            s.recipe,
            est(s, "test_loss"),
            *([est(s, "test_ece")] if task == "classification" else []),
            est(s, "zero_fraction"),
            est(s, "weight_l2", 1),
            est(s, "epochs", 0),
        )
    return [first, second]
