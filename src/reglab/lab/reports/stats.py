"""Statistics over seeds: means with t-based confidence intervals, paired tests against baseline."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

__all__ = ["Estimate", "Paired", "RecipeSummary", "mean_ci", "paired_test", "summarize"]


@dataclass(frozen=True)
class Estimate:
    """Mean over ``n`` seeds and the half-width of its confidence interval (NaN if n < 2)."""

    mean: float
    half_width: float
    n: int

    def format(self, digits: int = 3) -> str:
        if self.n == 0:
            return "-"
        if not math.isfinite(self.half_width):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def mean_ci(values: Sequence[float], level: float = 0.95) -> Estimate:
    """Mean and Student-t confidence interval half-width ``t * sd / sqrt(n)``."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(arr)
    if n == 0:
        return Estimate(float("nan"), float("nan"), 0)
    if n == 1:
        return Estimate(float(arr[0]), float("nan"), 1)
    sd = float(arr.std(ddof=1))
    return Estimate(
        float(arr.mean()), float(sps.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)), n
    )


@dataclass(frozen=True)
class Paired:
    """Mean of ``recipe - baseline`` over the seeds both finished, and a paired t-test."""

    diff: Estimate
    p_value: float

    @property
    def significant(self) -> bool:
        """True when the two-sided paired t-test rejects no difference at the 5% level."""
        return math.isfinite(self.p_value) and self.p_value < 0.05

    def format(self, digits: int = 3, compact: bool = False) -> str:
        """``+0.035 (p=0.045)*``, or ``+0.035 p=0.045*`` when compact; ``*`` marks p < 0.05."""
        if self.diff.n == 0:
            return "-"
        mark = "*" if self.significant else ""
        p = f"p={self.p_value:.3f}" if math.isfinite(self.p_value) else "p=n/a"
        if compact:
            return f"{self.diff.mean:+.{digits}f} {p}{mark}"
        return f"{self.diff.mean:+.{digits}f} ({p}){mark}"


def paired_test(recipe: Mapping[int, float], baseline: Mapping[int, float]) -> Paired:
    """Paired two-sided t-test over the seeds present (and finite) in both mappings.

    With fewer than two pairs the p-value is NaN; with identical differences it is 0 if they are
    non-zero and 1 if they are zero.
    """
    seeds = sorted(
        s
        for s in recipe
        if s in baseline and math.isfinite(recipe[s]) and math.isfinite(baseline[s])
    )
    diffs = np.asarray([recipe[s] - baseline[s] for s in seeds], dtype=float)
    estimate = mean_ci(diffs)
    if len(diffs) < 2:
        return Paired(estimate, float("nan"))
    if np.allclose(diffs, diffs[0]):
        return Paired(estimate, 0.0 if diffs[0] != 0 else 1.0)
    return Paired(estimate, float(sps.ttest_1samp(diffs, 0.0).pvalue))


@dataclass
class RecipeSummary:
    """One row of the comparison table."""

    recipe: str
    n_trials: int
    n_ok: int
    estimates: dict[str, Estimate] = field(default_factory=dict)
    versus_baseline: dict[str, Paired] = field(default_factory=dict)


def summarize(
    per_trial: Sequence[Mapping],
    metrics: Sequence[str],
    compare: Sequence[str],
    baseline: str | None = "baseline",
) -> list[RecipeSummary]:
    """Aggregate per-trial figures into one :class:`RecipeSummary` per recipe.

    Args:
        per_trial: dicts with ``recipe``, ``seed``, ``ok`` (bool) and one float per metric.
        metrics: the figures to estimate with a confidence interval.
        compare: the figures to test against ``baseline`` (paired over seeds).
        baseline: the reference recipe's name; None or absent skips the tests.

    Returns:
        Summaries in the order recipes first appear.
    """
    order: list[str] = []
    for t in per_trial:
        if t["recipe"] not in order:
            order.append(t["recipe"])
    by_recipe = {r: [t for t in per_trial if t["recipe"] == r] for r in order}
    base = {t["seed"]: t for t in by_recipe.get(baseline, []) if t["ok"]}
    out = []
    for recipe, trials in by_recipe.items():
        ok = [t for t in trials if t["ok"]]
        row = RecipeSummary(recipe, len(trials), len(ok))
        for m in metrics:
            row.estimates[m] = mean_ci([t[m] for t in ok])
        if base and recipe != baseline:
            for m in compare:
                row.versus_baseline[m] = paired_test(
                    {t["seed"]: t[m] for t in ok}, {s: t[m] for s, t in base.items()}
                )
        out.append(row)
    return out
