"""The verdict of a study in words, written from its numbers.

Each recipe falls in one group by its paired comparison with baseline on the test metric
(accuracy, or R² for regression; higher is better): it *helps* when the Holm-adjusted p is below
0.05 and the difference is positive, it *hurts* when significant and negative, and otherwise it
has *no detectable effect*, for which the seeds a paired t-test would need are given. The change
of the generalization gap is reported beside it with its own adjusted p. Every number in the
sentences is read from the same :class:`~reglab.lab.reports.stats.Paired` objects as the table,
so the words cannot contradict it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .results import primary_metric, seeds_cell
from .stats import Paired, RecipeSummary

__all__ = ["Verdict", "verdict", "verdict_text"]


@dataclass
class Verdict:
    """The groups of a study's verdict, and its sentences.

    Attributes:
        helps, hurts, unclear: recipe names by effect on the test metric.
        untested: recipes with fewer than two seeds paired with baseline.
        sentences: the paragraph, one sentence per entry.
    """

    helps: list[str]
    hurts: list[str]
    unclear: list[str]
    untested: list[str]
    sentences: list[str]


def _ci(p: Paired) -> str:
    lo, hi = p.diff.mean - p.diff.half_width, p.diff.mean + p.diff.half_width
    if not math.isfinite(p.diff.half_width):
        return f"{p.diff.mean:+.3f}"
    return f"{p.diff.mean:+.3f} (95% CI {lo:+.3f} to {hi:+.3f}, adjusted p={p.p_holm:.3f})"


def _gap(p: Paired | None) -> str:
    if p is None or p.diff.n < 2:
        return ""
    if p.significant:
        way = "narrows" if p.diff.mean < 0 else "widens"
        return f"; it {way} the gap by {_ci(p)}"
    return f"; its change of the gap, {_ci(p)}, is not significant"


def verdict(summary: Sequence[RecipeSummary], task: str, baseline: str = "baseline") -> Verdict:
    """Group the recipes of ``summary`` by their effect on the test metric and write the
    paragraph (see the module's docstring for the rules).

    Args:
        summary: the comparison (:func:`reglab.lab.reports.results.comparison`).
        task: ``'classification'`` or ``'regression'``.
        baseline: the reference recipe's name.

    Returns:
        A :class:`Verdict`.

    Example:
        >>> verdict(comparison(results, "classification", "baseline"), "classification")
    """
    metric = primary_metric(task)
    key = f"test_{metric}"
    helps, hurts, unclear, untested = [], [], [], []
    lines: dict[str, list[str]] = {"helps": [], "hurts": [], "unclear": []}
    seeds = max((s.n_ok for s in summary), default=0)
    family = 0
    for s in summary:
        if s.recipe == baseline:
            continue
        test = s.versus_baseline.get(key)
        if test is None or test.diff.n < 2 or not math.isfinite(test.p_value):
            untested.append(s.recipe)
            continue
        family += 1
        gap = _gap(s.versus_baseline.get("gap"))
        if test.significant and test.diff.mean > 0:
            helps.append(s.recipe)
            lines["helps"].append(f"{s.recipe} helps: it raises test {metric} by {_ci(test)}{gap}.")
        elif test.significant and test.diff.mean < 0:
            hurts.append(s.recipe)
            lines["hurts"].append(f"{s.recipe} hurts: it lowers test {metric} by {_ci(test)}{gap}.")
        else:
            unclear.append(s.recipe)
            need = seeds_cell(test)
            needed = (
                "no difference was observed"
                if need == "∞"
                else f"about {need} seeds would detect a difference this size with 80% power"
            )
            lines["unclear"].append(
                f"{s.recipe} has no detectable effect on test {metric}: {_ci(test)}, and "
                f"{needed}{gap}."
            )
    sentences = []
    if seeds:
        df = f"{seeds - 1} degree{'s' if seeds != 2 else ''} of freedom"
        sentences.append(
            f"Verdict on test {metric} against {baseline}, from {seeds} seeds (so each paired "
            f"t-test has {df}), p-values Holm-adjusted across the {family} recipes compared."
        )
        if seeds <= 3:
            sentences.append(
                f"With {seeds} seeds only large, consistent effects can be detected; run more "
                "seeds before trusting a null result."
            )
    sentences += lines["helps"] + lines["hurts"] + lines["unclear"]
    if untested:
        sentences.append(
            "Not tested (fewer than two seeds paired with the baseline): "
            + ", ".join(untested)
            + "."
        )
    if not helps and not hurts and unclear:
        sentences.append(f"No recipe changed test {metric} detectably in this study.")
    return Verdict(helps, hurts, unclear, untested, sentences)


def verdict_text(summary: Sequence[RecipeSummary], task: str, baseline: str = "baseline") -> str:
    """The verdict as one paragraph."""
    return " ".join(verdict(summary, task, baseline).sentences)
