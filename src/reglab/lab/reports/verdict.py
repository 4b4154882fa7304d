"""The verdict of a study in words, written from its numbers: a few ranked answer lines, and
the full sentences behind them.

Each recipe falls in one group by its paired comparison with baseline on the test metric
(accuracy, or R² for regression; higher is better): it *helped* when the difference is decided
(adjusted p at most 0.05, see :mod:`reglab.lab.reports.decisions`) and positive, it *hurt* when
decided and negative, and otherwise it had *no detectable effect*, for which the seeds a paired
t-test would need are given. The gap (train − test, on the labels trained on) and, with label
noise, ``memorized`` (the share of the wrong training labels the model predicts) are reported
the same way, and so are test loss and calibration where they moved while the test metric did
not. Every number is read from the same :class:`~reglab.lab.reports.stats.Paired` objects as
the table and the effect plot, so the words cannot contradict them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .results import correction_of, label, primary_metric, seeds_cell
from .stats import Paired, RecipeSummary, p_text

__all__ = ["Verdict", "verdict", "verdict_text"]

#: An undecided comparison needing more seeds than this is not worth a rerun suggestion.
WORTH_RERUNNING = 50
#: At most this many recipes are named in one answer line; the rest are counted.
NAMED = 3


@dataclass
class Verdict:
    """The groups of a study's verdict, its answer lines and its sentences.

    Attributes:
        helps, hurts, unclear: recipe names by effect on the test metric.
        untested: recipes with fewer than two seeds paired with baseline.
        answer: at most about six short lines, ranked: what helped, what hurt, what memorized
            fewer wrong labels, the gap, what else moved, what stayed undecided and how to
            decide it.
        sentences: the details, one sentence per entry.
    """

    helps: list[str]
    hurts: list[str]
    unclear: list[str]
    untested: list[str]
    sentences: list[str]
    answer: list[str] = field(default_factory=list)


def _scale(metric: str, task: str) -> tuple[float, str]:
    """Accuracy-like figures are said in points (x100); others as they are."""
    if task == "classification" and metric in ("test_accuracy", "gap", "memorized"):
        return 100.0, " points"
    return 1.0, ""


def _amount(p: Paired, metric: str, task: str, signed: bool = True, unit: bool = True) -> str:
    """``+4.6 points`` (or ``4.6 points`` unsigned; ``+4.6`` without the unit), ``−0.120``
    for a loss."""
    scale, name = _scale(metric, task)
    name = name if unit else ""
    value = p.diff.mean * scale
    digits = 1 if scale == 100 else 3
    text = f"{value:+.{digits}f}" if signed else f"{abs(value):.{digits}f}"
    return text.replace("-", "−") + name


def _interval(p: Paired, metric: str, task: str) -> str:
    """``CI +0.7 to +8.5`` (the interval drawn, adjusted like the decision)."""
    scale, _ = _scale(metric, task)
    digits = 1 if scale == 100 else 3
    if not math.isfinite(p.low):
        return ""
    low, high = (f"{v * scale:+.{digits}f}".replace("-", "−") for v in (p.low, p.high))
    return f"CI {low} to {high}"


def _said(p: Paired, metric: str, task: str, with_p: bool = True) -> str:
    """A difference with its interval and adjusted p, in words when it has no spread."""
    if p.same_everywhere and p.diff.mean == 0:
        return "no difference: every seed scored exactly as baseline"
    if p.same_everywhere:
        return f"{_amount(p, metric, task)} on every seed alike"
    parts = [_interval(p, metric, task)]
    if with_p:
        parts.append(f"adjusted p{p_text(p.p_adjusted)}")
    inside = ", ".join(x for x in parts if x)
    return f"{_amount(p, metric, task)} ({inside})" if inside else _amount(p, metric, task)


def _names(items: Sequence[str]) -> str:
    """At most :data:`NAMED` items, then how many more."""
    shown = list(items[:NAMED])
    if len(items) > NAMED:
        shown.append(f"{len(items) - NAMED} more")
    return ", ".join(shown)


def _decided(summary: Sequence[RecipeSummary], key: str, baseline: str) -> list[tuple]:
    """(recipe, Paired) of the decided comparisons on ``key``."""
    out = []
    for s in summary:
        p = s.versus_baseline.get(key)
        if s.recipe != baseline and p is not None and p.significant:
            out.append((s, p))
    return out


def verdict(
    summary: Sequence[RecipeSummary],
    task: str,
    baseline: str = "baseline",
    *,
    finished: int | None = None,
    max_seeds: int | None = None,
) -> Verdict:
    """Group the recipes of ``summary`` by their effect on the test metric and write the answer
    lines and the detailed sentences (see the module's docstring for the rules).

    Args:
        summary: the comparison (:func:`reglab.lab.reports.results.comparison`).
        task: ``'classification'`` or ``'regression'``.
        baseline: the reference recipe's name.
        finished: the study's finished trials, for the rerun suggestion ("the N finished trials
            are reused"); None leaves the count out.
        max_seeds: the most seeds the study allows when its seeds came in rounds (``seeds =
            "auto"``); None for a fixed number of seeds.

    Returns:
        A :class:`Verdict`.

    Examples:
        >>> v = verdict(comparison(results, "classification", "baseline"), "classification")
        >>> print("\\n".join(v.answer))
    """
    metric = primary_metric(task)
    key = f"test_{metric}"
    helps, hurts, unclear, untested = [], [], [], []
    details: list[str] = []
    seeds = max((s.n_ok for s in summary), default=0)
    family = 0
    correction = correction_of(summary)
    for s in summary:
        if s.recipe == baseline:
            continue
        test = s.versus_baseline.get(key)
        if test is None or test.diff.n < 2 or not math.isfinite(test.p_value):
            untested.append(s.recipe)
            continue
        family += 1
        if test.significant:
            (helps if test.diff.mean > 0 else hurts).append(s.recipe)
        else:
            unclear.append(s.recipe)
        details.append(_details(s, test, task, metric))
    base = next((s for s in summary if s.recipe == baseline), None)
    answer = _answer(summary, task, baseline, base, unclear, finished, max_seeds)
    sentences = []
    if seeds:
        how = (
            "Benjamini-Hochberg (false discovery rate 5%)"
            if correction == "bh"
            else "Holm (family-wise error rate 5%)"
        )
        rounds = " with seeds in rounds (alpha spent over the looks)" if max_seeds else ""
        sentences.append(
            f"Each recipe is compared with {baseline} over up to {seeds} seeds, paired by seed; "
            f"p-values and intervals are adjusted for the {family} recipes compared with "
            f"{how}{rounds}, so an interval clears zero exactly when the difference is decided."
        )
    sentences += details
    if untested:
        sentences.append(
            "Not tested (fewer than two seeds paired with the baseline): "
            + ", ".join(untested)
            + "."
        )
    return Verdict(helps, hurts, unclear, untested, sentences, answer)


def _details(s: RecipeSummary, test: Paired, task: str, metric: str) -> str:
    """One recipe's sentence: the test metric, the gap, memorization and what else moved."""
    name = label(f"test_{metric}").replace("acc", "accuracy")
    if test.significant:
        way = "raised" if test.diff.mean > 0 else "lowered"
        first = (
            f"{s.recipe} {way} {name} by {_said(test, f'test_{metric}', task)}, "
            f"decided after {test.seeds} seeds"
        )
    else:
        need = seeds_cell(test)
        first = (
            f"{s.recipe} had no detectable effect on {name}: {_said(test, f'test_{metric}', task)}"
        )
        if need not in ("", "∞"):
            first += f"; about {need} seeds would detect a difference this size with 80% power"
    parts = [first]
    gap = s.versus_baseline.get("gap")
    if gap is not None and gap.diff.n >= 2:
        if gap.significant:
            way = "narrowed" if gap.diff.mean < 0 else "widened"
            parts.append(
                f"it {way} the gap by {_amount(gap, 'gap', task, signed=False)} "
                f"({_interval(gap, 'gap', task)}, adjusted p{p_text(gap.p_adjusted)})"
            )
        else:
            parts.append(f"its change of the gap, {_said(gap, 'gap', task)}, is not decided")
    memo = s.versus_baseline.get("memorized")
    if memo is not None and memo.diff.n >= 2:
        own = s.estimates.get("memorized")
        share = f"{own.mean:.0%}" if own is not None else "?"
        state = "decided" if memo.significant else "not decided"
        parts.append(
            f"it memorized {share} of the wrong training labels "
            f"({_said(memo, 'memorized', task)}, {state})"
        )
    for other in ("test_loss", "test_ece"):
        p = s.versus_baseline.get(other)
        if p is not None and p.significant:
            way = "lowered" if p.diff.mean < 0 else "raised"
            parts.append(f"it {way} {label(other)} by {_said(p, other, task)}")
    return "; ".join(parts) + "."


def _answer(
    summary: Sequence[RecipeSummary],
    task: str,
    baseline: str,
    base: RecipeSummary | None,
    unclear: Sequence[str],
    finished: int | None,
    max_seeds: int | None,
) -> list[str]:
    """The ranked answer lines (see :class:`Verdict`)."""
    metric = primary_metric(task)
    key = f"test_{metric}"
    name = label(key).replace("acc", "accuracy")
    lines = []
    decided = _decided(summary, key, baseline)
    up = sorted((x for x in decided if x[1].diff.mean > 0), key=lambda x: -x[1].diff.mean)
    down = sorted((x for x in decided if x[1].diff.mean < 0), key=lambda x: x[1].diff.mean)
    for title, group in ((f"Helped {name}", up), (f"Hurt {name}", down)):
        if group:
            (s0, p0), rest = group[0], group[1:]
            items = [f"{s0.recipe} {_said(p0, key, task, with_p=False)}"]
            items += [f"{s.recipe} {_amount(p, key, task, unit=False)}" for s, p in rest]
            lines.append(f"{title}: {_names(items)}.")
    memo = _decided(summary, "memorized", baseline)
    fewer = sorted(
        (x for x in memo if x[1].diff.mean < 0), key=lambda x: x[0].estimates["memorized"].mean
    )
    if fewer and base is not None and "memorized" in base.estimates:
        items = [f"{s.recipe} {s.estimates['memorized'].mean:.0%}" for s, _ in fewer]
        lines.append(
            f"Memorized fewer wrong labels (baseline {base.estimates['memorized'].mean:.0%}): "
            f"{_names(items)}."
        )
    gap = _decided(summary, "gap", baseline)
    narrow = sorted((x for x in gap if x[1].diff.mean < 0), key=lambda x: x[1].diff.mean)
    wide = sorted((x for x in gap if x[1].diff.mean > 0), key=lambda x: -x[1].diff.mean)
    said = []
    for group, way in ((narrow, "Narrowed"), (wide, "Widened")):
        if group:
            items = [
                f"{s.recipe} {_amount(p, 'gap', task, signed=False, unit=i == 0)}"
                for i, (s, p) in enumerate(group)
            ]
            what = "widened it" if said else f"{way} the train−test gap"
            said.append(f"{what}: {_names(items)}")
    if said:
        lines.append("; ".join(said) + ".")
    changed_test = {s.recipe for s, _ in decided}
    moved = []
    for other in ("test_loss", "test_ece"):
        for s, p in _decided(summary, other, baseline):
            if s.recipe not in changed_test:
                moved.append(f"{s.recipe} {label(other)} {_amount(p, other, task)}")
    if moved:
        lines.append(f"Also moved where {name} did not: {_names(moved)}.")
    if unclear:
        lines.append(_undecided(summary, key, unclear, finished, max_seeds))
    if not lines:
        lines.append("No recipe could be compared with baseline (fewer than two paired seeds).")
    return lines


def _undecided(
    summary: Sequence[RecipeSummary],
    key: str,
    unclear: Sequence[str],
    finished: int | None,
    max_seeds: int | None,
) -> str:
    """The undecided recipes, the seeds each would need, and how to decide them."""
    tests = {s.recipe: s.versus_baseline[key] for s in summary if s.recipe in unclear}
    needs = {r: p.seeds_needed for r, p in tests.items()}
    ordered = sorted(unclear, key=lambda r: needs[r] if needs[r] is not None else math.inf)

    def need(r: str) -> str:
        cell = seeds_cell(tests[r])
        if needs[r] is None:
            return "no difference"
        return f"over {cell[1:]} seeds" if cell.startswith(">") else f"~{cell} seeds"

    items = [f"{r} ({need(r)})" for r in ordered]
    line = f"No detectable effect on {label(key).replace('acc', 'accuracy')}: {_names(items)}"
    worth = [n for n in needs.values() if n is not None and n <= WORTH_RERUNNING]
    have = max((p.diff.n for p in tests.values()), default=0)
    reused = (
        f"the {finished} finished trials are reused" if finished else "finished trials are reused"
    )
    if max_seeds is not None:
        if all(p.futile for p in tests.values()):
            return line + f"; each would need more than the study's {max_seeds} seeds."
        return line + f"; rerun with a larger `--max-seeds` into the same folder: {reused}."
    if worth:
        more = max(max(worth), have + 1)
        return line + f"; rerun with `--seeds {more}` into the same folder: {reused}."
    return line + f"; each would need over {WORTH_RERUNNING} seeds."


def verdict_text(summary: Sequence[RecipeSummary], task: str, baseline: str = "baseline") -> str:
    """The verdict's details as one paragraph."""
    return " ".join(verdict(summary, task, baseline).sentences)
