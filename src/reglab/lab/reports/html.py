"""A study's self-contained HTML report (its plots come from :mod:`.plots`), and what the
other reports share: the page's style, embedded images, a progress bar."""

from __future__ import annotations

import base64
import contextlib
import html
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...serialize import recipes_toml
from .calibration import averaging_html, uncertainty_html
from .plots import _by_recipe
from .results import RESULT_COLUMNS, has_memorized, label, primary_metric, summary_rows
from .stats import RecipeSummary

__all__ = [
    "counting",
    "features_summary",
    "html_page",
    "image_html",
    "notebook_html",
    "write_report",
]


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
        + (image_html(effects) if effects.is_file() else "")
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


def image_html(path: Path) -> str:
    """A PNG file as an ``<img>`` with its bytes inline (base64), so the page stands alone."""
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
    notes: Sequence[str] = (),
) -> None:
    """One HTML file: the answer lines first, then ``notes`` (paragraphs on how the study ran),
    the headline table, the effect plot, the details (the full verdict and the other
    figures), the other plots (embedded) and each trial's status. ``design`` names the
    correction (and the rounds) in the captions."""
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
{"".join(f'<p class="note">{esc(note)}</p>' for note in notes)}
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
        " and memorization" if has_memorized(summary) else ""
    }</h2>
<p>Each recipe's difference from {esc(baseline)} paired over seeds, with the interval its
decision used ({esc(design)}): a filled dot is decided, and its whisker clears the dashed zero
line; a grey whisker that crosses it is a difference these seeds cannot tell from none.</p>
{image_html(plots["effects"])}
<h2>Details</h2>
<ul>{details_html}</ul>
<p>n: trials that finished out of those run; train {metric} on the clean labels (with label
noise); test loss, ECE (classification), the fraction of weights exactly zero, the weight norm
and the epochs trained, mean ± 95% CI over seeds.</p>
<table>{detail_table}</table>
<h2>Learning curves</h2>{image_html(plots["curves"])}
<h2>Weights</h2>{image_html(plots["weights"])}
<h2>Sparsity</h2>{
        image_html(plots["sparsity"])
        if "sparsity" in plots
        else "<p>No recipe has a weight that is exactly zero: nothing to show.</p>"
    }
{_features_html(results)}
{uncertainty_html(results, task)}
{
        "<h2>Reliability diagram</h2>" + image_html(plots["reliability"])
        if "reliability" in plots
        else ""
    }
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
    held = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # a kill never leaves half a page
    held.write_text(doc)
    os.replace(held, path)
