"""A study's plots (PNG): learning curves, the effects with the intervals their decisions used,
weights, sparsity per layer and (from :mod:`.calibration`) the reliability diagram; drawn in two
processes when a warm one is at hand."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullLocator

from ..engine.workers import context
from .calibration import plot_reliability
from .results import has_memorized, label, primary_metric
from .stats import RecipeSummary

__all__ = [
    "effect_points",
    "plot_curves",
    "plot_effects",
    "plot_sparsity",
    "plot_weights",
    "write_plots",
]


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return math.ceil(n / cols), cols


def _by_recipe(results: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list] = {}
    for r in results:
        out.setdefault(r["recipe"], []).append(r)
    return out


def plot_curves(results: Sequence[Mapping[str, Any]], task: str, path: Path) -> None:
    """Train vs validation curves of the headline metric, one panel per recipe."""
    m = primary_metric(task)
    groups = _by_recipe(results)
    rows, cols = _grid(len(groups))
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, sharey=True
    )
    for ax, (recipe, trials) in zip(axes.flat, groups.items(), strict=False):
        for split, color in (("train", "tab:blue"), ("val", "tab:orange")):
            curves = [[e[f"{split}_{m}"] for e in t["history"]] for t in trials if t["history"]]
            for c in curves:
                ax.plot(range(1, len(c) + 1), c, color=color, alpha=0.25, lw=0.8)
            if curves:
                longest = max(len(c) for c in curves)
                mean = [np.mean([c[i] for c in curves if i < len(c)]) for i in range(longest)]
                ax.plot(range(1, longest + 1), mean, color=color, lw=1.8, label=split)
        ax.set_title(recipe, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(groups) :]:
        ax.axis("off")
    axes[0, 0].set_ylabel(m)
    axes[0, 0].legend(loc="lower right", fontsize=8)
    fig.suptitle("Learning curves: train vs validation (thin: seeds, thick: mean)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def effect_points(
    summary: Sequence[RecipeSummary], metric: str, baseline: str = "baseline"
) -> list[tuple[str, float, float, float, bool]]:
    """What the effect plot draws for ``metric``: per recipe other than ``baseline``, its
    paired difference from baseline, the interval drawn (``low``, ``high``: adjusted like the
    decision, so it excludes 0 exactly when the difference is decided) and whether it is
    decided. Recipes without a paired comparison are left out."""
    points = []
    for s in summary:
        paired = s.versus_baseline.get(metric)
        if s.recipe == baseline or paired is None or paired.diff.n == 0:
            continue
        low = paired.diff.mean if math.isnan(paired.low) else paired.low
        high = paired.diff.mean if math.isnan(paired.high) else paired.high
        points.append((s.recipe, paired.diff.mean, low, high, paired.significant))
    return points


def _effect_metrics(summary: Sequence[RecipeSummary], task: str) -> tuple[str, ...]:
    m = primary_metric(task)
    noisy = has_memorized(summary)
    return (f"test_{m}", "gap", *(("memorized",) if noisy else ()))


def plot_effects(
    summary: Sequence[RecipeSummary], task: str, path: Path, baseline: str = "baseline"
) -> None:
    """Each recipe's paired difference from baseline in the test metric, the generalization gap
    and (with label noise) memorized, with the interval the decision used (filled: decided); a
    whisker clears 0 exactly when the difference is decided. Without a baseline, each recipe's
    own mean and 95% CI."""
    metrics = _effect_metrics(summary, task)
    paired = {metric: effect_points(summary, metric, baseline) for metric in metrics}
    rows = max((len(p) for p in paired.values()), default=0) or len(summary)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 0.45 * rows + 1.8))
    for ax, metric in zip(axes, metrics, strict=True):
        points = paired[metric]
        if points:
            title = f"Δ {label(metric)} vs {baseline} (adjusted interval)"
            ax.axvline(0, color="grey", ls="--", lw=1)
        else:  # no baseline to pair with: each recipe's own estimate
            points = []
            for s in summary:
                e = s.estimates[metric]
                half = 0.0 if math.isnan(e.half_width) else e.half_width
                points.append((s.recipe, e.mean, e.mean - half, e.mean + half, False))
            title = f"{label(metric)} (mean, 95% CI)"
        y = np.arange(len(points))
        for yi, (_, mean, low, high, decided) in zip(y, points, strict=True):
            ax.errorbar(mean, yi, xerr=[[mean - low], [high - mean]], fmt="o", capsize=4,
                        color="tab:blue" if decided else "tab:grey",
                        markerfacecolor="tab:blue" if decided else "white")  # fmt: skip
        ax.set_yticks(y, [p[0] for p in points])
        ax.set_ylim(len(points) - 0.5, -0.5)  # first recipe on top, no empty band
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_weights(results: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Histogram of the final weights (default selection) of each recipe's first seed."""
    groups = _by_recipe(results)
    rows, cols = _grid(len(groups))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False)
    for ax, (recipe, trials) in zip(axes.flat, groups.items(), strict=False):
        trial = next((t for t in trials if t.get("histogram")), None)
        if trial is None:
            ax.set_title(f"{recipe} (no finished trial)", fontsize=10)
            continue
        counts = np.asarray(trial["histogram"]["counts"])
        bound = trial["histogram"]["bound"][0]
        edges = np.linspace(-bound, bound, len(counts) + 1)
        ax.stairs(counts, edges, fill=True, alpha=0.7)
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks: half the drawing time
        ax.set_ylim(bottom=0.8)  # empty bins stay empty on the log axis
        zeros = trial["model"].get("zero_fraction", 0.0)
        ax.set_title(
            f"{recipe}: ‖w‖₂={trial['model']['weight_l2']:.1f}, zeros {zeros:.3f}", fontsize=9
        )
    for ax in axes.flat[len(groups) :]:
        ax.axis("off")
    fig.suptitle("Final weights of the first seed of each recipe (log counts)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _layer_means(results: Sequence[Mapping[str, Any]], prefix: str) -> dict[str, dict[str, float]]:
    """recipe -> {layer: mean over finished seeds} of the ``<prefix>[<layer>]`` model figures."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in results:
        for key, value in r.get("model", {}).items():
            if key.startswith(prefix + "["):
                out.setdefault(r["recipe"], {}).setdefault(key[len(prefix) + 1 : -1], []).append(
                    value
                )
    return {
        rec: {layer: float(np.mean(v)) for layer, v in layers.items()}
        for rec, layers in out.items()
    }


def plot_sparsity(results: Sequence[Mapping[str, Any]], path: Path) -> bool:
    """Fraction of exactly-zero weights per layer and recipe (mean over seeds); nothing is
    drawn (False) when no recipe has a zero weight."""
    means = _layer_means(results, "zero_fraction")
    if not any(v > 0 for layers in means.values() for v in layers.values()):
        return False
    recipes = list(_by_recipe(results))
    layers = list(next(iter(means.values()), {}))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(recipes) * max(1, len(layers) / 2) + 1.6))
    height = 0.8 / max(len(layers), 1)
    y = np.arange(len(recipes))
    names = next((r["layers"] for r in results if r.get("layers")), {})
    for i, layer in enumerate(layers):
        values = [means.get(r, {}).get(layer, 0.0) for r in recipes]
        ax.barh(y + i * height, values, height, label=names.get(layer, layer))
    ax.set_yticks(y + height * (len(layers) - 1) / 2, recipes)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of weights exactly zero (mean over seeds)")
    ax.set_title("Sparsity per layer")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _draw(
    name: str,
    results: Sequence[Mapping[str, Any]],
    summary: Sequence[RecipeSummary],
    task: str,
    path: Path,
    baseline: str,
) -> bool:
    """Draw plot ``name`` into ``path``; False when it has nothing to show (nothing written)."""
    if name == "curves":
        plot_curves(results, task, path)
    elif name == "effects":
        plot_effects(summary, task, path, baseline)
    elif name == "weights":
        plot_weights(results, path)
    elif name == "sparsity":
        return plot_sparsity(results, path)
    else:
        return plot_reliability(results, path, baseline=baseline)
    return True


#: drawn in the second process when ``write_plots`` has one: about half of the drawing time
_ELSEWHERE = ("weights", "effects")


def write_plots(
    results: Sequence[Mapping[str, Any]],
    summary: Sequence[RecipeSummary],
    task: str,
    out: Path,
    baseline: str = "baseline",
    parallel: bool = False,
) -> dict[str, Path]:
    """Write ``curves.png``, ``effects.png``, ``weights.png`` and, when they have something to
    show, ``sparsity.png`` (some weight is exactly zero) and ``reliability.png``
    (classification) into ``out/plots``; return the paths written, by name.

    With ``parallel``, the weights and effects plots are drawn in a second process (one of the
    lab's workers: pass it only where they start in milliseconds,
    :func:`reglab.lab.engine.workers.ready`) while this one draws the others; the files are
    the same (for the default study, 2.2-3.0 s became 1.5-1.7 s). A process that cannot start
    leaves the drawing to this one; an error while drawing is raised here either way."""
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    names = ("curves", "effects", "weights", "sparsity", "reliability")
    paths = {n: folder / f"{n}.png" for n in names}
    for name in ("sparsity", "reliability"):
        paths[name].unlink(missing_ok=True)  # a rerun must not show an older run's plot
    args = (results, summary, task)
    with contextlib.ExitStack() as stack:
        futures = {}
        if parallel:
            try:
                pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=context()))
                futures = {n: pool.submit(_draw, n, *args, paths[n], baseline) for n in _ELSEWHERE}
            except (OSError, RuntimeError, BrokenProcessPool):
                futures = {}
        drawn = {n: _draw(n, *args, paths[n], baseline) for n in names if n not in futures}
        try:
            drawn.update({n: future.result() for n, future in futures.items()})
        except BrokenProcessPool:  # the process died (not an error of the drawing): draw here
            drawn.update({n: _draw(n, *args, paths[n], baseline) for n in futures})
    return {n: paths[n] for n in names if drawn[n]}
