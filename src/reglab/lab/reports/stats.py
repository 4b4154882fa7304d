"""Statistics over seeds: means with t-based confidence intervals, paired tests against baseline,
Holm-Bonferroni adjustment across the recipes of a study, standardized effects and the seeds a
paired t-test would need.

Every recipe is compared with ``baseline`` on the same seeds (same split, same initial weights),
so the tests are paired t-tests on the per-seed differences. A study compares many recipes, so
the p-values of one metric are adjusted together with Holm's step-down method (which controls
the family-wise error rate, the chance of any false "significant", at 5%); "significant" means
an adjusted p below 0.05.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = [
    "ALPHA",
    "POWER",
    "Estimate",
    "Paired",
    "RecipeSummary",
    "holm",
    "mean_ci",
    "paired_test",
    "seeds_for_power",
    "summarize",
]

#: The family-wise error rate of a study's tests, and the power "n for 80%" aims at.
ALPHA, POWER = 0.05, 0.8
#: Reported as "more than" this many seeds.
MAX_SEEDS = 10_000


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
    from scipy import stats as sps  # here: drawing a report's plots needs no SciPy

    return Estimate(
        float(arr.mean()), float(sps.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)), n
    )


@dataclass(frozen=True)
class Paired:
    """Mean of ``recipe - baseline`` over the seeds both finished, and a paired t-test.

    Attributes:
        diff: the mean paired difference with its 95% CI.
        p_value: the two-sided paired t-test's p-value (NaN with fewer than two pairs).
        p_holm: ``p_value`` adjusted with Holm's method across the comparisons of the same
            metric in one study (:func:`summarize`); equal to ``p_value`` for a lone test.
        d_z: the standardized paired effect, Cohen's d_z = mean difference / SD of the
            differences (NaN when the SD is 0 or there are fewer than two pairs).
        seeds_needed: for a comparison that is not significant, the seeds a paired t-test
            would need to detect an effect of this d_z with 80% power at ``level`` (None when
            the observed difference is 0 or significant); capped at :data:`MAX_SEEDS`.
        level: the corrected level ``seeds_needed`` is computed at: ``ALPHA / m`` for ``m``
            comparisons, the strictest step of Holm's procedure.
    """

    diff: Estimate
    p_value: float
    p_holm: float = float("nan")
    d_z: float = float("nan")
    seeds_needed: int | None = None
    level: float = ALPHA

    def __post_init__(self) -> None:
        if math.isnan(self.p_holm) and not math.isnan(self.p_value):
            object.__setattr__(self, "p_holm", self.p_value)

    @property
    def significant(self) -> bool:
        """True when the Holm-adjusted p-value is below 0.05."""
        return math.isfinite(self.p_holm) and self.p_holm < ALPHA

    def format(self, digits: int = 3, compact: bool = False) -> str:
        """``+0.035 (p=0.045)*``, or ``+0.035 p=0.045*`` when compact: the difference and the
        Holm-adjusted p-value; ``*`` marks an adjusted p < 0.05."""
        if self.diff.n == 0:
            return "-"
        mark = "*" if self.significant else ""
        p = f"p={self.p_holm:.3f}" if math.isfinite(self.p_holm) else "p=n/a"
        if compact:
            return f"{self.diff.mean:+.{digits}f} {p}{mark}"
        return f"{self.diff.mean:+.{digits}f} ({p}){mark}"


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (Holm 1979): the ``k``-th smallest of ``m`` p-values
    times ``m - k + 1``, made non-decreasing in that order and capped at 1. NaN entries stay NaN
    and do not count as tests. (The same numbers as statsmodels' ``multipletests(method=
    'holm')``, which a test checks; that function runs a full garbage collection per call.)

    Example:
        >>> holm([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
    """
    finite = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    out = [float("nan")] * len(p_values)
    order = sorted(finite, key=lambda i: p_values[i])
    running, m = 0.0, len(order)
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p_values[i]))
        out[i] = running
    return out


def seeds_for_power(d_z: float, level: float = ALPHA, power: float = POWER) -> int | None:
    """The number of seeds (pairs) a two-sided paired t-test needs to detect a standardized
    effect ``d_z`` with ``power`` at ``level`` (statsmodels' ``TTestPower``); None for an effect
    of 0 or NaN; at most :data:`MAX_SEEDS`.

    Example:
        >>> seeds_for_power(0.5)  # a medium effect, 5% level, 80% power
        34
    """
    if not math.isfinite(d_z) or d_z == 0:
        return None
    from statsmodels.stats.power import TTestPower

    try:
        with warnings.catch_warnings():  # its root finder warns where it fails; handled below
            warnings.simplefilter("ignore")
            n = TTestPower().solve_power(
                effect_size=abs(d_z), alpha=level, power=power, alternative="two-sided"
            )
        n = float(np.asarray(n).ravel()[0])
    except (ValueError, RuntimeError):
        n = math.nan
    if not math.isfinite(n):  # the solver fails at the ends: a huge effect needs the fewest
        return 2 if abs(d_z) >= 1 else MAX_SEEDS
    return int(min(MAX_SEEDS, max(2, math.ceil(n))))


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
    d_z = float(diffs.mean() / diffs.std(ddof=1))
    from scipy import stats as sps

    return Paired(estimate, float(sps.ttest_1samp(diffs, 0.0).pvalue), d_z=d_z)


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
    """Aggregate per-trial figures into one :class:`RecipeSummary` per recipe. The paired tests
    of each compared metric are Holm-adjusted together (one family per metric), and every
    comparison that is not significant gets the seeds it would need for 80% power.

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
    for m in compare:
        _adjust([row for row in out if m in row.versus_baseline], m)
    return out


def _adjust(rows: Sequence[RecipeSummary], metric: str) -> None:
    """Holm-adjust one metric's tests across ``rows`` and add the seeds for 80% power."""
    tests = [row.versus_baseline[metric] for row in rows]
    adjusted = holm([t.p_value for t in tests])
    family = sum(1 for t in tests if math.isfinite(t.p_value))
    level = ALPHA / max(family, 1)
    for row, test, p in zip(rows, tests, adjusted, strict=True):
        done = replace(test, p_holm=p, level=level)
        if not done.significant and done.diff.n >= 2:
            done = replace(done, seeds_needed=seeds_for_power(done.d_z, level))
        row.versus_baseline[metric] = done
