"""A study's results as tidy rows, per-trial figures, and the comparison table."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich import box
from rich.table import Table

from .stats import MAX_SEEDS, Design, Paired, RecipeSummary, summarize

__all__ = [
    "RESULT_COLUMNS",
    "comparison",
    "correction_of",
    "has_memorized",
    "headline_metrics",
    "numeric_rows",
    "per_trial_figures",
    "result_rows",
    "rich_tables",
    "summary_rows",
    "to_csv",
]

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
    """CSV text of ``header`` and ``rows``, floats written with 6 significant digits."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    return buffer.getvalue()


def per_trial_figures(results: Iterable[Mapping[str, Any]], task: str) -> list[dict[str, Any]]:
    """One dict per trial with the figures of the comparison table.

    The train metric is measured on the training set as the model was trained on it (with
    label noise on, the labels it was given), so ``gap`` = train − test is what the learning
    curves show and what a user computes on their own data. With label noise, ``memorized`` is
    the fraction of the relabelled training samples for which the model predicts the wrong
    label it was given, and ``train_clean_<metric>`` the train metric on the labels before the
    noise."""
    m = primary_metric(task)
    out = []
    for r in results:
        final, model = r.get("final", {}), r.get("model", {})
        ok = bool(final) and r["status"] in ("completed", "stopped_early")
        nan = float("nan")
        train = final.get("train", {})
        test = final.get("test", {})
        figures = {
            "recipe": r["recipe"],
            "seed": r["seed"],
            "ok": ok,
            "status": r["status"],
            f"train_{m}": train.get(m, nan),
            f"val_{m}": final.get("val", {}).get(m, nan),
            f"test_{m}": test.get(m, nan),
            "test_loss": test.get("loss", nan),
            "test_ece": test.get("ece", nan),
            "gap": train.get(m, nan) - test.get(m, nan),
            "zero_fraction": model.get("zero_fraction", nan),
            "weight_l2": model.get("weight_l2", nan),
            "epochs": float(r.get("epochs_run", 0)),
        }
        if "train_clean" in final:
            figures["memorized"] = train.get("memorized", nan)
            figures[f"train_clean_{m}"] = final["train_clean"].get(m, nan)
        out.append(figures)
    return out


def table_metrics(task: str, noisy: bool = False) -> tuple[list[str], list[str]]:
    """(columns estimated with a CI, columns tested against baseline). The first compared
    columns are the headline ones (the test metric, the gap and, with label noise,
    ``memorized``); test loss and calibration follow as secondary ones."""
    m = primary_metric(task)
    headline = headline_metrics(task, noisy)
    secondary = ["test_loss", *(["test_ece"] if task == "classification" else [])]
    return (
        [
            f"train_{m}",
            f"val_{m}",
            f"test_{m}",
            "gap",
            *(["memorized", f"train_clean_{m}"] if noisy else []),
            "test_loss",
            *(["test_ece"] if task == "classification" else []),
            "zero_fraction",
            "weight_l2",
            "epochs",
        ],
        headline + secondary,
    )


def headline_metrics(task: str, noisy: bool = False) -> list[str]:
    """The compared metrics a study's answer is about (and its seeds in rounds wait for)."""
    m = primary_metric(task)
    return [f"test_{m}", "gap", *(["memorized"] if noisy else [])]


def comparison(
    results: Sequence[Mapping[str, Any]],
    task: str,
    baseline: str,
    design: Design | None = None,
) -> list[RecipeSummary]:
    """The comparison table's rows (see :func:`reglab.lab.reports.stats.summarize`), decided
    under ``design`` (None: Benjamini-Hochberg over a fixed number of seeds)."""
    noisy = any("train_clean" in r.get("final", {}) for r in results)
    metrics, compare = table_metrics(task, noisy)
    return summarize(per_trial_figures(results, task), metrics, compare, baseline, design)


_LABELS = {
    "train_accuracy": "train acc",
    "train_clean_accuracy": "train acc (clean labels)",
    "val_accuracy": "val acc",
    "test_accuracy": "test acc",
    "train_r2": "train R²",
    "val_r2": "val R²",
    "test_r2": "test R²",
    "test_loss": "test loss",
    "test_ece": "test ECE",
    "gap": "gap (train−test)",
    "memorized": "memorized",
    "zero_fraction": "zeros",
    "weight_l2": "‖w‖₂",
    "epochs": "epochs",
}


def label(metric: str) -> str:
    """A figure's name for a reader (``test_accuracy`` -> ``test acc``)."""
    return _LABELS.get(metric, metric)


def seeds_cell(paired: Paired | None) -> str:
    """The "n for 80%" cell: the seeds a paired t-test would need to detect the observed
    difference with 80% power at the corrected level; empty when decided or untested,
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


def correction_of(summary: Sequence[RecipeSummary]) -> str:
    """The correction the comparisons of ``summary`` used (``'bh'``, ``'holm'``)."""
    for s in summary:
        for paired in s.versus_baseline.values():
            if paired.correction != "none":
                return paired.correction
    return "bh"


def has_memorized(summary: Sequence[RecipeSummary]) -> bool:
    """True when the study injected label noise, so its summary has ``memorized``."""
    return any("memorized" in s.estimates for s in summary)


def numeric_rows(summary: Sequence[RecipeSummary], task: str) -> list[dict[str, Any]]:
    """The comparison table as numbers, one dict per recipe: ``recipe``, ``trials`` and
    ``finished``; per figure its mean, ``low`` and ``high`` (the 95% CI over seeds); per
    compared figure ``Δ``, ``Δ low`` and ``Δ high`` (the interval drawn, adjusted like the
    decision), ``p`` (unadjusted), ``p_<correction>``, ``d_z``, ``n for 80%`` (``inf``: no
    difference observed), ``seeds`` (the seeds the verdict took) and ``decided`` (1.0 or
    0.0). A figure that does not apply is NaN.

    Examples:
        >>> numeric_rows(summary, "classification")[1]["Δ (test acc)"]
        0.046
    """
    nan = float("nan")
    metrics, compare = table_metrics(task, has_memorized(summary))
    correction = correction_of(summary)
    rows = []
    for s in summary:
        row: dict[str, Any] = {"recipe": s.recipe, "trials": float(s.n_trials)}
        row["finished"] = float(s.n_ok)
        for m in metrics:
            est = s.estimates[m]
            row[f"{label(m)} mean"] = est.mean
            row[f"{label(m)} low"] = est.mean - est.half_width
            row[f"{label(m)} high"] = est.mean + est.half_width
        for c in compare:
            paired = s.versus_baseline.get(c)
            name = label(c)
            if paired is None or paired.diff.n == 0:
                for key in ("Δ", "Δ low", "Δ high", "p", f"p_{correction}", "d_z", "n for 80%"):
                    row[f"{key} ({name})"] = nan
                row[f"seeds ({name})"] = nan
                row[f"decided ({name})"] = nan
                continue
            needed = seeds_cell(paired)
            row[f"Δ ({name})"] = paired.diff.mean
            row[f"Δ low ({name})"] = paired.low
            row[f"Δ high ({name})"] = paired.high
            row[f"p ({name})"] = paired.p_value
            row[f"p_{correction} ({name})"] = paired.p_adjusted
            row[f"d_z ({name})"] = paired.d_z
            row[f"n for 80% ({name})"] = (
                nan if needed == "" else math.inf if needed == "∞" else float(paired.seeds_needed)
            )
            row[f"seeds ({name})"] = float(paired.seeds)
            row[f"decided ({name})"] = 1.0 if paired.significant else 0.0
        rows.append(row)
    return rows


def summary_rows(
    summary: Sequence[RecipeSummary], task: str, detail: bool = False
) -> tuple[list[str], list[list[Any]]]:
    """Header and cells of the comparison table (shared by the terminal, CSV and HTML).

    Each figure has a display cell (``0.741 ± 0.070``) and each compared figure a ``Δ ... vs
    baseline`` cell (the mean paired difference and its adjusted p, ``*`` when decided). The
    table shows "n for 80%" of the test metric; with ``detail`` (``summary.csv``) the numbers
    of :func:`numeric_rows` follow as their own columns instead."""
    metrics, compare = table_metrics(task, has_memorized(summary))
    header = (
        ["recipe", "n"]
        + [label(m) for m in metrics]
        + [f"Δ {label(c)} vs baseline" for c in compare]
    )
    numeric = numeric_rows(summary, task) if detail else []
    if detail:
        header += [k for k in numeric[0] if k != "recipe"] if numeric else []
    else:
        header.append(f"n for 80% ({label(compare[0])})")
    rows = []
    for i, s in enumerate(summary):
        cells: list[Any] = [s.recipe, f"{s.n_ok}/{s.n_trials}"]
        for m in metrics:
            digits = {"epochs": 0, "weight_l2": 1}.get(m, 3)  # epochs are whole numbers
            cells.append(s.estimates[m].format(digits))
        for c in compare:
            paired = s.versus_baseline.get(c)
            cells.append(paired.format() if paired else "")
        if detail:
            cells += [v for k, v in numeric[i].items() if k != "recipe"]
        else:
            cells.append(seeds_cell(s.versus_baseline.get(compare[0])))
        rows.append(cells)
    return header, rows


#: The terminal's headline table, from the most to the least detailed: the first that fits the
#: console's width is printed (the full table is in the report and ``summary.csv``).
_LAYOUTS = (
    ("n", "train±", "test±", "gap±", "memorized±", "Δ test p", "Δ gap p", "Δ memorized p", "n80"),
    ("train", "test", "gap", "memorized", "Δ test p", "Δ gap p", "Δ memorized p", "n80"),
    ("train", "test", "gap", "memorized", "Δ test", "Δ gap", "Δ memorized", "n80"),
    ("test", "gap", "memorized", "Δ test", "Δ gap", "Δ memorized", "n80"),
    ("test", "gap", "Δ test", "Δ gap", "Δ memorized", "n80"),
    ("test", "Δ test", "Δ gap", "Δ memorized"),
)


def rich_tables(
    summary: Sequence[RecipeSummary], task: str, width: int | None = None
) -> list[Table]:
    """Two terminal tables: the answer (test metric, gap, memorized, their differences from
    baseline), then the trained model. Columns are abbreviated or left out until both fit
    ``width`` columns (None: no limit); ``*`` marks a decided difference in every layout."""
    from rich.console import Console

    m = primary_metric(task)
    noisy = has_memorized(summary)
    keys = {
        "train": f"train_{m}",
        "test": f"test_{m}",
        "gap": "gap",
        "memorized": "memorized",
    }
    measure = Console(width=10_000)

    def est(s: RecipeSummary, key: str, spread: bool, digits: int = 3) -> str:
        e = s.estimates.get(key)
        if e is None:
            return ""
        return e.format(digits).replace(" ± ", "±") if spread else _number(e.mean, digits)

    def delta(s: RecipeSummary, key: str, with_p: bool) -> str:
        paired = s.versus_baseline.get(key)
        if paired is None or paired.diff.n == 0:
            return ""
        if with_p:
            return paired.format(compact=True)
        return f"{paired.diff.mean:+.3f}{'*' if paired.significant else ''}"

    def cell(s: RecipeSummary, column: str) -> str:
        if column == "n":
            return f"{s.n_ok}/{s.n_trials}"
        if column == "n80":
            return seeds_cell(s.versus_baseline.get(keys["test"]))
        if column.startswith("Δ "):
            name, _, p = column[2:].partition(" ")
            return delta(s, keys[name], p == "p")
        return est(s, keys[column.rstrip("±")], column.endswith("±"))

    def heading(column: str) -> str:
        return {"n80": "n 80%", "memorized": "memo", "memorized±": "memorized"}.get(
            column, column.replace(" p", "").replace("±", "").replace("memorized", "memo")
        )

    correction = "Benjamini-Hochberg" if correction_of(summary) == "bh" else "Holm"
    first, columns = None, []
    for layout in _LAYOUTS:
        columns = [c for c in layout if noisy or "memorized" not in c]
        table = Table(title=f"Generalization: {m}", box=box.SIMPLE_HEAD)
        table.add_column("recipe", justify="left", no_wrap=True)
        for c in columns:
            table.add_column(heading(c), justify="right", no_wrap=True)
        for s in summary:
            table.add_row(s.recipe, *(cell(s, c) for c in columns))
        first = table
        if width is None or measure.measure(table).maximum <= width:
            break
    shown = " ".join(columns)
    notes = ["gap: train − test on the labels trained on"] if "gap" in shown else []
    if "memorized" in shown:
        notes.append("memo: share of the wrong training labels the model predicts")
    notes.append(f"Δ: paired difference from baseline, * decided ({correction}, 5%)")
    if "n80" in shown:
        notes.append("n 80%: seeds a paired t-test would need for Δ test")
    first.caption = " · ".join(notes)
    second = None
    for spread in (True, False):
        second = Table(title="The trained model", box=box.SIMPLE_HEAD)
        model_columns = ["recipe", "test loss", "zero weights", "‖w‖₂", "epochs"]
        if task == "classification":
            model_columns.insert(2, "test ECE")
        for col in model_columns:
            second.add_column(col, justify="left" if col == "recipe" else "right", no_wrap=True)
        for s in summary:
            second.add_row(
                s.recipe,
                est(s, "test_loss", spread),
                *([est(s, "test_ece", spread)] if task == "classification" else []),
                est(s, "zero_fraction", spread),
                est(s, "weight_l2", spread, 1),
                est(s, "epochs", spread, 0),
            )
        if width is None or measure.measure(second).maximum <= width:
            break
    return [first, second]
