"""Plots (PNG) and a self-contained HTML report of a study."""

from __future__ import annotations

import base64
import contextlib
import html
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from .calibration import averaging_html, plot_reliability, uncertainty_html
from .results import RESULT_COLUMNS, label, primary_metric, summary_rows
from .stats import RecipeSummary

__all__ = ["write_plots", "write_report"]


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
    noisy = any("memorized" in s.estimates for s in summary)
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


def notebook_html(run: Any) -> str:
    """A finished study in a notebook cell: its answer lines, the headline table and the
    effect plot (when written)."""
    esc = html.escape
    if not run.results:
        return f"<p>No finished trial in {esc(str(run.out))}.</p>"
    from .results import comparison

    summary = comparison(run.results, run.task, run.config.baseline, run.config.design)
    header, rows = summary_rows(summary, run.task)
    headline, _ = _report_columns(header, run.task)
    answer = "".join(f"<li>{_code(esc(line))}</li>" for line in run.answer)
    effects = run.out / "plots" / "effects.png"
    return (
        '<div class="reglab">'
        + (f"<ul>{answer}</ul>" if answer else "")
        + f"<table>{_html_table(header, rows, headline)}</table>"
        + (_img(effects) if effects.is_file() else "")
        + "</div>"
    )


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:0.9em}td,th{padding:4px 8px;border-bottom:1px solid #ddd;
text-align:right;white-space:nowrap}td:first-child,th:first-child{text-align:left}th{background:#f4f4f4;white-space:normal}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}.sig{font-weight:bold}
.verdict{background:#f6f8fa;border-left:4px solid #4a7;padding:0.6em 1em;line-height:1.5}
code{background:#f4f4f4;padding:1px 4px}.bad{color:#b22}td.l{text-align:left;white-space:normal}"""


@contextlib.contextmanager
def counting(console: Any, label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar ``label ━━━ done/total`` on ``console``; yields ``update(done)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), console=console)
    with progress:
        task = progress.add_task(label, total=total)
        yield lambda done: progress.update(task, completed=done)


def html_page(title: str, body: str) -> str:
    """A self-contained HTML page with the reports' style; ``body`` is already escaped."""
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>{body}</body></html>"
    )


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def features_summary(
    results: Sequence[Mapping[str, Any]],
) -> list[tuple[str, dict[str, float], list[str] | None]]:
    """Per recipe: mean over seeds of the inputs kept (and informative/noise inputs kept, when
    the data know them), and the names kept by the first finished seed."""
    rows = []
    for recipe, trials in _by_recipe(results).items():
        done = [t for t in trials if "features_kept" in t.get("model", {})]
        if not done:
            continue
        keys = [
            k for k in ("features_kept", "informative_kept", "noise_kept") if k in done[0]["model"]
        ]
        means = {k: float(np.mean([t["model"][k] for t in done])) for k in keys}
        rows.append((recipe, means, done[0].get("features")))
    return rows


#: What a strength means, for the regularizers where it is not obvious from the name.
STRENGTHS = {
    "L1": "strength λ adds λ·Σ|w| to the loss (by default as proximal steps: exact zeros)",
    "L2": "strength λ adds λ/2·Σw² to the loss: its gradient λ·w equals SGD's weight_decay=λ",
    "ElasticNet": "strength λ with l1_ratio r adds λ·(r·Σ|w| + (1−r)/2·Σw²)",
    "GroupLasso": "strength λ adds λ·Σ √(group size)·‖w_group‖₂ over output units",
    "WeightDecay": "rate r shrinks w ← w·(1 − lr·r) every step: the rate is multiplied by the "
    "learning rate (AdamW's convention), so rate 5 at lr 1e-3 removes 0.5% per step",
    "MaxNorm": "max_norm c rescales each unit's incoming weights to norm at most c",
    "Dropout": "p is the probability of zeroing each hidden unit in training",
    "GaussianNoise": "std σ adds N(0, σ²) to each standardized input (×the feature's std when "
    "relative)",
    "LabelSmoothing": "eps ε moves ε of each target's probability onto the other classes",
    "Mixup": "alpha α: mixing weights drawn from Beta(α, α)",
    "CutMix": "alpha α: box areas drawn from Beta(α, α)",
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def recipes_toml(recipes: Mapping[str, Any]) -> str:
    """The recipes as a study file's ``[recipes]`` table, one line per recipe."""
    lines = ["[recipes]"]
    for name, specs in recipes.items():
        key = name if name.replace("_", "").replace("-", "").isalnum() else json.dumps(name)
        lines.append(f"{key} = {_toml_value([dict(s) for s in specs or []])}")
    return "\n".join(lines)


def _count(value: float) -> str:
    """A mean of counts: an integer when it is one (``64``), else one decimal (``63.5``)."""
    return f"{value:.0f}" if value == round(value) else f"{value:.1f}"


def _features_html(results: Sequence[Mapping[str, Any]]) -> str:
    rows = features_summary(results)
    if not rows:
        return ""
    esc = html.escape
    totals = {t["model"].get("features_total") for t in results if t.get("model")} - {None}
    total = max(totals) if totals else None
    if total is not None and all(means["features_kept"] == total for _, means, _ in rows):
        return (
            f"<h2>Which inputs survive</h2><p>Every recipe uses all {_count(total)} inputs (no "
            "first-layer weight column is exactly zero): nothing to show.</p>"
        )
    informative = "informative_kept" in rows[0][1]
    head = (
        "<tr><th>recipe</th><th>inputs used</th>"
        + ("<th>informative kept</th><th>noise kept</th>" if informative else "")
        + "<th>the first seed's inputs</th></tr>"
    )
    first: dict[str, Mapping[str, Any]] = {}
    for r in results:
        if r.get("features") is not None:
            first.setdefault(r["recipe"], r)
    body = ""
    for recipe, means, names in rows:
        dropped = first.get(recipe, {}).get("dropped")
        listed = ""
        if names is not None:
            listed = f"{len(names)} used"
            if dropped:
                listed = (
                    f"<details><summary>{len(names)} used, {len(dropped)} dropped</summary>"
                    f"dropped: {esc(', '.join(dropped))}</details>"
                )
        body += (
            f"<tr><td>{esc(recipe)}</td><td>{_count(means['features_kept'])}</td>"
            + (
                f"<td>{_count(means['informative_kept'])}</td>"
                f"<td>{_count(means['noise_kept'])}</td>"
                if informative
                else ""
            )
            + f'<td class="l">{listed}</td></tr>'
        )
    note = (
        " The data have known informative features: a sparse recipe should keep them and drop"
        " the rest."
        if informative
        else ""
    )
    return (
        f"<h2>Which inputs survive</h2><p>An input survives when any first-layer weight from it"
        f" is non-zero (mean over seeds; the names dropped by the first seed open on a click)."
        f"{note}</p><table>{head}{body}</table>"
    )


def _report_columns(header: Sequence[str], task: str) -> tuple[list[int], list[int]]:
    """The report's two tables as column indices of :func:`summary_rows`' header: the answer
    (train and test metric, gap, memorized, their differences from baseline, the seeds needed)
    and the details."""
    m = primary_metric(task)
    figures = [f"train_{m}", f"test_{m}", "gap", "memorized"]
    wanted = {"recipe", *map(label, figures)}
    wanted |= {f"Δ {label(f)} vs baseline" for f in figures}
    headline = [i for i, h in enumerate(header) if h in wanted or h.startswith("n for 80%")]
    details = [0] + [i for i in range(1, len(header)) if i not in headline]
    return headline, details


def _code(text: str) -> str:
    """``--seeds 12`` between backticks as code."""
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _noisy_summary(summary: Sequence[RecipeSummary]) -> bool:
    return any("memorized" in s.estimates for s in summary)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], cols: Sequence[int]) -> str:
    """An HTML table of the columns ``cols``; an empty cell (a figure that does not apply)
    shows "—"; ``*`` cells are bold."""
    esc = html.escape
    out = "<tr>" + "".join(f"<th>{esc(header[i])}</th>" for i in cols) + "</tr>"
    for row in rows:
        cells = "".join(
            f'<td class="sig">{esc(row[i])}</td>'
            if row[i].endswith("*")
            else f"<td>{esc(row[i]) if row[i] not in ('', '-') else '—'}</td>"
            for i in cols
        )
        out += f"<tr>{cells}</tr>"
    return out


def _noise_html(settings: Mapping[str, Any], task: str) -> str:
    """A warning at the top when the study corrupted training labels on purpose."""
    noise = settings.get("label_noise") or 0
    if not noise or task != "classification":
        return ""
    m = primary_metric(task)
    return (
        f'<p class="bad">Label noise is on: {noise:.0%} of the training labels were made wrong '
        f"on purpose (<code>label_noise = {noise}</code>), so that overfitting shows. Train "
        f"{m}, the gap (train − test) and the learning curves' train lines are measured on "
        "the labels the model was trained on; <i>memorized</i> is the share of the wrong "
        "labels the final model predicts (Zhang et al. 2017; Arpit et al. 2017), the direct "
        f"measure of what regularization prevents. Train {m} on the clean labels is in the "
        "details. Validation and test labels are clean.</p>"
    )


def write_report(
    path: Path,
    *,
    title: str,
    settings: Mapping[str, Any],
    summary: Sequence[RecipeSummary],
    results: Sequence[Mapping[str, Any]],
    task: str,
    plots: Mapping[str, Path],
    recipes: Mapping[str, Any],
    answer: Sequence[str] = (),
    details: Sequence[str] = (),
    design: str = "",
    baseline: str = "baseline",
) -> None:
    """One HTML file: the answer lines first, then the headline table, the effect plot, the
    details (the full verdict and the other figures), the other plots (embedded) and each
    trial's status. ``design`` names the correction (and the rounds) in the captions."""
    esc = html.escape
    header, rows = summary_rows(summary, task)
    table, detail_table = (
        _html_table(header, rows, cols) for cols in _report_columns(header, task)
    )
    settings_html = "".join(
        f"<li><code>{esc(str(k))}</code> = {esc(str(v))}</li>" for k, v in settings.items()
    )
    recipe_html = esc(recipes_toml(recipes))
    used = {spec.get("type") for specs in recipes.values() for spec in specs or []}
    meanings = "".join(
        f"<li><code>{esc(kind)}</code>: {esc(text)}</li>"
        for kind, text in STRENGTHS.items()
        if kind in used
    )
    trials = "".join(
        f"<tr><td>{esc(r['recipe'])}</td><td>{r['seed']}</td>"
        f'<td class="l{" bad" if r["status"] in ("diverged", "failed") else ""}">'
        f"{esc(r['status'])}</td><td>{r.get('epochs_run', 0)}</td>"
        f'<td>{r.get("seconds", 0):.1f}</td><td class="l">{esc(r.get("message", ""))}</td></tr>'
        for r in results
    )
    answer_html = "".join(f"<li>{_code(esc(line))}</li>" for line in answer)
    details_html = "".join(f"<li>{esc(line)}</li>" for line in details)
    metric = esc(primary_metric(task))
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{esc(title)}</h1>
{f'<ul class="verdict">{answer_html}</ul>' if answer else ""}
{_noise_html(settings, task)}
<h2>Comparison</h2>
<p>Mean ± 95% confidence interval over seeds (Student t). Each seed has its own data split and
initial weights, shared by every recipe, so differences from baseline are paired (Δ: the mean
paired difference, with its p-value adjusted across the recipes compared, one family per
metric: {esc(design)}); <span class="sig">bold*</span> marks a decided difference (adjusted
p ≤ 0.05). The gap is train − test {metric}, the train figure measured on the labels the model
was trained on. "n for 80%" is the number of seeds a paired t-test would need to detect the
observed difference in test {metric} with 80% power at the corrected level (∞: no observed
difference). <code>summary.csv</code> adds every figure as numbers: intervals, unadjusted and
adjusted p, Cohen's d_z and the seeds each verdict took.</p>
<table>{table}</table>
<h2>Effect on test performance, the generalization gap{
        " and memorization" if _noisy_summary(summary) else ""
    }</h2>
<p>Each recipe's difference from {esc(baseline)} paired over seeds, with the interval its
decision used ({esc(design)}): a filled dot is decided, and its whisker clears the dashed zero
line; a grey whisker that crosses it is a difference these seeds cannot tell from none.</p>
{_img(plots["effects"])}
<h2>Details</h2>
<ul>{details_html}</ul>
<p>n: trials that finished out of those run; train {metric} on the clean labels (with label
noise); test loss, ECE (classification), the fraction of weights exactly zero, the weight norm
and the epochs trained, mean ± 95% CI over seeds.</p>
<table>{detail_table}</table>
<h2>Learning curves</h2>{_img(plots["curves"])}
<h2>Weights</h2>{_img(plots["weights"])}
<h2>Sparsity</h2>{
        _img(plots["sparsity"])
        if "sparsity" in plots
        else "<p>No recipe has a weight that is exactly zero: nothing to show.</p>"
    }
{_features_html(results)}
{uncertainty_html(results, task)}
{"<h2>Reliability diagram</h2>" + _img(plots["reliability"]) if "reliability" in plots else ""}
{averaging_html(results, task)}
<h2>Recipes</h2><p>As a study file's <code>[recipes]</code> table (reuse it with
<code>--config</code>):</p><pre>{recipe_html}</pre>
{f"<p>What the strengths mean:</p><ul>{meanings}</ul>" if meanings else ""}
<h2>Settings</h2><ul>{settings_html}</ul>
<h2>Trials</h2><p>Seconds: each trial's own time (in a population, its share of each epoch it
trained in, and its evaluation).</p><table><tr><th>recipe</th><th>seed</th><th>status</th>
<th>epochs</th><th>seconds</th><th>message</th></tr>{trials}</table>
<p>Files: <code>results.csv</code> (columns {", ".join(RESULT_COLUMNS)}),
<code>summary.csv</code>, <code>trials.csv</code>, <code>plots/</code>.</p>
</body></html>"""
    path.write_text(doc)
