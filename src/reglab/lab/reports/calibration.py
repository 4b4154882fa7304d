"""Calibration, Monte-Carlo dropout uncertainty and weight averaging, measured on a trained
model, and their plot and report sections.

Every classification trial gets the expected calibration error (ECE) of its test predictions
and the counts of a reliability diagram; a model that holds dropout modules also gets
Monte-Carlo dropout figures (:func:`reglab.mc_predict`); a recipe with weight averaging gets the
test metrics of its raw (not averaged) weights.

The report sections at the end import matplotlib and the statistics when they are called: a
worker process that only measures trials does not load them.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...core import Regularizer
from ...devices import model_device
from ...mc_dropout import STOCHASTIC, mc_predict
from ...train import evaluate

__all__ = [
    "BINS",
    "MC_SAMPLES",
    "calibration_bins",
    "expected_calibration_error",
    "mc_rows",
    "mc_sample",
    "plot_reliability",
    "raw_weight_metrics",
    "uncertainty_figures",
]

#: Equal-width confidence bins of the reliability diagram and the ECE (as Guo et al. 2017).
BINS = 15
#: Forward passes of Monte-Carlo dropout per test set.
MC_SAMPLES = 30
#: The share of a trial's training that its Monte-Carlo dropout passes may cost, and the
#: fewest and most test rows they use (all of a smaller test set).
MC_SHARE, MC_MIN_ROWS, MC_MAX_ROWS = 0.1, 1_000, 10_000


def mc_rows(n_test: int, n_train: int, n_val: int, epochs: int) -> int:
    """How many test rows the Monte-Carlo dropout figures use: as many as keep their
    :data:`MC_SAMPLES` passes within :data:`MC_SHARE` of the training's cost, counted in
    forward passes of one row (a training step's forward and backward as 3, plus each epoch's
    evaluation of the train and validation splits), but at least :data:`MC_MIN_ROWS` and at
    most :data:`MC_MAX_ROWS` (and never more than the test set). It depends on the study's
    sizes only, so every recipe of a seed is measured on the same rows.

    Examples:
        >>> mc_rows(n_test=60_000, n_train=100_000, n_val=40_000, epochs=3)
        4400
    """
    training = epochs * (4 * n_train + n_val)
    return min(n_test, MC_MAX_ROWS, max(MC_MIN_ROWS, int(MC_SHARE * training / MC_SAMPLES)))


def mc_sample(y: torch.Tensor, rows: int, task: str, seed: int) -> torch.Tensor:
    """``rows`` indices of the test set (sorted), stratified by class for classification and
    drawn from ``seed``: the same rows for every recipe of a seed."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    if rows >= len(y):
        return torch.as_tensor(index)
    strata = y.cpu().numpy() if task == "classification" else None
    try:
        kept, _ = train_test_split(index, train_size=rows, random_state=seed, stratify=strata)
    except ValueError:  # a class too rare to stratify
        kept, _ = train_test_split(index, train_size=rows, random_state=seed)
    return torch.as_tensor(np.sort(kept))


def calibration_bins(probs: torch.Tensor, y: torch.Tensor, bins: int = BINS) -> dict[str, list]:
    """Per confidence bin ``((k-1)/bins, k/bins]``: the number of samples, the sum of their
    confidences (top-class probability) and the number predicted correctly.

    Returns:
        ``{"counts": [...], "confidence": [...], "correct": [...]}``, sums that add across seeds.
    """
    conf, pred = probs.max(1)
    idx = (torch.ceil(conf * bins).long() - 1).clamp(0, bins - 1)
    return {
        "counts": torch.bincount(idx, minlength=bins).tolist(),
        "confidence": torch.bincount(idx, conf.double(), minlength=bins).tolist(),
        "correct": torch.bincount(idx, (pred == y).double(), minlength=bins).tolist(),
    }


def _ece(b: Mapping[str, Sequence[float]]) -> float:
    n = sum(b["counts"])
    gaps = (abs(c - s) for c, s in zip(b["correct"], b["confidence"], strict=True))
    return float(sum(gaps) / n) if n else float("nan")


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, bins: int = BINS) -> float:
    """ECE: ``sum_k |B_k|/n * |accuracy(B_k) - confidence(B_k)|`` over equal-width confidence
    bins. Guo et al. 2017, https://arxiv.org/abs/1706.04599.

    Args:
        probs: ``(n, K)`` predicted class probabilities.
        y: ``(n,)`` true classes.
        bins: number of bins.

    Returns:
        The ECE in ``[0, 1]``; 0 for a perfectly calibrated model.

    Examples:
        >>> expected_calibration_error(torch.tensor([[0.9, 0.1], [0.6, 0.4]]), torch.tensor([0, 1]))
        0.25
    """
    return _ece(calibration_bins(probs, y, bins))


def _batches(data: Any) -> Any:
    return [data] if isinstance(data, tuple) else data


def _first_rows(data: Any, rows: int | None) -> list[torch.Tensor]:
    """The inputs of the first ``rows`` samples (all when None), batch by batch."""
    out, seen = [], 0
    for x, _ in _batches(data):
        if rows is not None and seen >= rows:
            break
        keep = len(x) if rows is None else min(len(x), rows - seen)
        out.append(x[:keep])
        seen += keep
    return out


@torch.no_grad()
def uncertainty_figures(
    model: nn.Module, data: Any, task: str, seed: int, rows: int | None = None
) -> tuple[dict[str, float], dict[str, list] | None]:
    """Test-set calibration and, for models with dropout, Monte-Carlo dropout figures.

    ``data`` is the test set as ``(X, y)`` tensors or an iterable of batches (a
    ``DataLoader``); batches move to the model's device and only the outputs are kept.
    Calibration uses every row; the Monte-Carlo passes use ``rows`` of them (all when None):
    a stratified sample drawn from ``seed`` (:func:`mc_sample`), or the first batches of
    streamed data.

    Returns:
        ``(metrics, bins)``. Classification: ``ece``; with dropout also ``mc_accuracy``,
        ``mc_loss`` (NLL of the mean probabilities), ``mc_ece`` and ``mc_std`` (mean spread of
        the predicted class's probability). Regression with dropout: ``mc_loss`` (MSE of the
        mean) and ``mc_std``. ``bins`` are the reliability counts (None for regression).
    """
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        pairs = [
            (model(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))
            for x, y in _batches(data)
        ]
    finally:
        model.train(was_training)
    out, y = torch.cat([o for o, _ in pairs]), torch.cat([t for _, t in pairs])
    metrics: dict[str, float] = {}
    bins = None
    if task == "classification":
        bins = calibration_bins(out.softmax(-1), y)
        metrics["ece"] = _ece(bins)
    if any(isinstance(m, STOCHASTIC) for m in model.modules()):
        generator = torch.Generator(device).manual_seed(seed)
        classify = task == "classification"
        if isinstance(data, tuple) and rows is not None and rows < len(y):
            chosen = mc_sample(y, rows, task, seed)
            inputs, y = [data[0][chosen.to(data[0].device)]], y[chosen.to(y.device)]
        else:
            inputs = _first_rows(data, rows)
            y = y[: sum(len(x) for x in inputs)]
        draws = [
            mc_predict(model, x.to(device), MC_SAMPLES, probabilities=classify, generator=generator)
            for x in inputs
        ]
        mean, std = torch.cat([d.mean for d in draws]), torch.cat([d.std for d in draws])
        if classify:
            pred = mean.argmax(1)
            metrics["mc_accuracy"] = float((pred == y).double().mean())
            metrics["mc_loss"] = float(F.nll_loss(mean.clamp_min(1e-12).log(), y))
            metrics["mc_ece"] = expected_calibration_error(mean, y)
            metrics["mc_std"] = float(std.gather(1, pred[:, None]).mean())
        else:
            target = y.to(mean.dtype).reshape(mean.shape)
            metrics["mc_loss"] = float(F.mse_loss(mean, target))
            metrics["mc_std"] = float(std.mean())
    return metrics, bins


def raw_weight_metrics(
    recipe: Regularizer, model: nn.Module, data: Any, task: str
) -> dict[str, float] | None:
    """Test metrics of the raw weights of a recipe whose weight averaging (EMA, SWA) swapped
    its average in; None when no averaging is in. The averages are swapped back afterwards.
    ``data`` is ``(X, y)`` or an iterable of batches, as :func:`reglab.evaluate` takes."""
    members = getattr(recipe, "regularizers", (recipe,))
    averaged = [r for r in members if getattr(r, "averaged_in", False)]
    if not averaged:
        return None
    for reg in averaged:
        reg.swap()
    try:
        return evaluate(model, data, task)
    finally:
        for reg in reversed(averaged):
            reg.swap()


# --------------------------------------------------------------------------- report


def _pooled_bins(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for r in results:
        b = r.get("calibration")
        if not b:
            continue
        pooled = out.setdefault(r["recipe"], {k: np.zeros(len(v)) for k, v in b.items()})
        for k, v in b.items():
            pooled[k] += np.asarray(v, dtype=float)
    return out


#: Recipes per panel of the reliability diagram (besides the baseline, drawn in every panel).
PER_PANEL = 3


def plot_reliability(
    results: Sequence[Mapping[str, Any]], path: Path, baseline: str = "baseline"
) -> bool:
    """Reliability diagram: accuracy against confidence per bin, pooled over seeds, as small
    multiples of at most :data:`PER_PANEL` recipes each (the baseline, grey, in every panel for
    reference), with the diagonal of perfect calibration and each panel's legend outside its
    axes. Returns False (and writes nothing) when no trial has calibration counts."""
    pooled = _pooled_bins(results)
    if not pooled:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [r for r in pooled if r != baseline] or list(pooled)
    groups = [others[i : i + PER_PANEL] for i in range(0, len(others), PER_PANEL)]
    cols = min(2, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.8 * cols, 3.6 * rows), squeeze=False)

    def curve(ax: Any, recipe: str, **style: Any) -> None:
        b = pooled[recipe]
        seen = b["counts"] > 0
        conf = b["confidence"][seen] / b["counts"][seen]
        acc = b["correct"][seen] / b["counts"][seen]
        ece = _ece({k: v.tolist() for k, v in b.items()})
        ax.plot(conf, acc, marker="o", ms=3, label=f"{recipe} (ECE {ece:.3f})", **style)

    colors = plt.get_cmap("tab10").colors
    for ax, group in zip(axes.flat, groups, strict=False):
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
        if baseline in pooled and baseline not in group:
            curve(ax, baseline, color="0.55", lw=1.0)
        for i, recipe in enumerate(group):
            curve(ax, recipe, color=colors[i % len(colors)], lw=1.4)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence (top-class probability)")
        ax.set_ylabel("accuracy in bin")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    for ax in axes.flat[len(groups) :]:
        ax.axis("off")
    fig.suptitle("Reliability diagrams (test set, pooled over seeds; grey: baseline)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _mean(trials: Sequence[Mapping[str, Any]], split: str, metric: str) -> str:
    from .stats import mean_ci

    values = [t["final"][split][metric] for t in trials if metric in t["final"].get(split, {})]
    return mean_ci(values).format(3) if values else "—"  # e.g. MC figures without dropout


def _done(results: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list] = {}
    for r in results:
        if r.get("final"):
            out.setdefault(r["recipe"], []).append(r)
    return out


def uncertainty_html(results: Sequence[Mapping[str, Any]], task: str) -> str:
    """The report's calibration and MC-dropout table (empty when there is nothing to show)."""
    groups = _done(results)
    columns = [("test", "ece", "ECE")] if task == "classification" else []
    if any("mc_std" in t["final"]["test"] for ts in groups.values() for t in ts):
        if task == "classification":
            columns += [("test", "mc_accuracy", "MC accuracy"), ("test", "mc_ece", "MC ECE")]
        columns += [("test", "mc_loss", "MC loss"), ("test", "mc_std", "MC spread")]
    if not columns:
        return ""
    head = "<tr><th>recipe</th>" + "".join(f"<th>{c[2]}</th>" for c in columns) + "</tr>"
    body = "".join(
        f"<tr><td>{html.escape(recipe)}</td>"
        + "".join(f"<td>{_mean(trials, s, m)}</td>" for s, m, _ in columns)
        + "</tr>"
        for recipe, trials in groups.items()
    )
    return (
        "<h2>Calibration and uncertainty</h2><p>ECE: expected calibration error of the test "
        f"predictions over {BINS} confidence bins (0 is perfect). For recipes with dropout, "
        f"Monte-Carlo dropout averages {MC_SAMPLES} stochastic passes (dropout on, everything "
        "else in eval mode); MC spread is the mean standard deviation of the predicted "
        f"output across passes.{_sample_text(results)} Mean ± 95% CI over seeds.</p>"
        f"<table>{head}{body}</table>"
    )


def _sample_text(results: Sequence[Mapping[str, Any]]) -> str:
    """Which test rows the Monte-Carlo figures used, when a sample (see :func:`mc_rows`)."""
    drawn = [r["mc_sample"] for r in results if r.get("mc_sample")]
    sampled = sorted({(d["rows"], d["of"]) for d in drawn if d["rows"] < d["of"]})
    if not sampled:
        return ""
    rows, of = sampled[0]
    return (
        f" The MC figures use a stratified sample of {rows:,} of the {of:,} test rows, drawn per "
        f"seed and the same for every recipe, so that their passes cost at most "
        f"{MC_SHARE:.0%} of a trial's training; ECE and every other figure use all rows."
    )


def averaging_html(results: Sequence[Mapping[str, Any]], task: str) -> str:
    """The report's table of averaged against raw weights, for recipes with EMA or SWA."""
    from .results import primary_metric
    from .stats import mean_ci, paired_test

    m = primary_metric(task)
    rows = ""
    for recipe, trials in _done(results).items():
        pairs = [t for t in trials if "test_raw" in t["final"]]
        if not pairs:
            continue
        averaged = {t["seed"]: t["final"]["test"][m] for t in pairs}
        raw = {t["seed"]: t["final"]["test_raw"][m] for t in pairs}
        diff = paired_test(averaged, raw)
        cls = ' class="sig"' if diff.significant else ""
        rows += (
            f"<tr><td>{html.escape(recipe)}</td><td>{mean_ci(list(averaged.values())).format()}"
            f"</td><td>{mean_ci(list(raw.values())).format()}</td><td{cls}>{diff.format()}</td>"
            "</tr>"
        )
    if not rows:
        return ""
    return (
        f"<h2>Weight averaging</h2><p>Test {m} of the averaged weights (what the recipe "
        f"returns) and of the raw weights at the end of training, and their paired difference "
        f"over seeds.</p><table><tr><th>recipe</th><th>averaged</th><th>raw</th>"
        f"<th>Δ averaged − raw</th></tr>{rows}</table>"
    )
