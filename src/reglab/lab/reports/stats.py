"""Statistics over seeds: means with t-based confidence intervals, paired tests against
baseline, the study's decisions (corrected across the recipes, and across the looks when seeds
come in rounds; see :mod:`reglab.lab.reports.decisions`), standardized effects and the seeds a
paired t-test would need.

Every recipe is compared with ``baseline`` on the same seeds (same split, same initial weights),
so the tests are paired t-tests on the per-seed differences. A study compares many recipes, so
the p-values of one metric are corrected together (Benjamini-Hochberg by default, or Holm); a
difference is *decided* when its adjusted p-value is at most 0.05, and the interval drawn for it
excludes zero exactly then.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .decisions import ALPHA, FIRST_LOOK, Design, bh, correct, holm, schedule

__all__ = [
    "ALPHA",
    "MAX_SEEDS",
    "POWER",
    "Design",
    "Estimate",
    "Paired",
    "RecipeSummary",
    "bh",
    "decide",
    "holm",
    "mean_ci",
    "null_false_positive_rate",
    "p_text",
    "paired_test",
    "seeds_for_power",
    "summarize",
    "t_power",
]

#: The power "n for 80%" and the futility rule aim at.
POWER = 0.8
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
    from scipy.special import stdtrit  # here: drawing a report's plots needs no SciPy

    half = float(stdtrit(n - 1, 0.5 + level / 2) * sd / math.sqrt(n))
    return Estimate(float(arr.mean()), half, n)


@dataclass(frozen=True)
class Paired:
    """One comparison of a recipe with baseline on one metric: the mean paired difference over
    the seeds both finished, its test, and the decision of the study's design
    (:mod:`reglab.lab.reports.decisions`).

    Attributes:
        diff: the mean paired difference with its plain (unadjusted) 95% CI, over the seeds of
            the look it is reported at (``diff.n`` pairs).
        p_value: the two-sided paired t-test's p-value at that look (NaN with fewer than two
            pairs).
        p_adjusted: the p-value after the study's correction (and, with seeds in rounds, after
            combining the looks); equal to ``p_value`` for a lone test.
        d_z: the standardized paired effect, Cohen's d_z = mean difference / SD of the
            differences (NaN when the SD is 0 or there are fewer than two pairs).
        seeds_needed: for a comparison that is not decided, the seeds a paired t-test would
            need to detect an effect of this d_z with 80% power at ``level`` (None when the
            observed difference is 0 or decided); capped at :data:`MAX_SEEDS`.
        level: the level ``seeds_needed`` aims at: what the next comparison of the family
            would have to pass to be decided.
        low, high: the interval drawn for the difference: adjusted like the decision, so it
            excludes 0 exactly when ``significant`` (NaN with fewer than two pairs).
        correction: ``'holm'``, ``'bh'`` or ``'none'`` (a lone test).
        seeds: the seeds the verdict took: the first look at which it was decided, else the
            pairs of its last look.
        futile: with seeds in rounds, not decided and needing more seeds for 80% power than
            the study allows.
    """

    diff: Estimate
    p_value: float
    p_adjusted: float = float("nan")
    d_z: float = float("nan")
    seeds_needed: int | None = None
    level: float = ALPHA
    low: float = float("nan")
    high: float = float("nan")
    correction: str = "none"
    seeds: int = 0
    futile: bool = False

    def __post_init__(self) -> None:
        if math.isnan(self.p_adjusted) and not math.isnan(self.p_value):
            object.__setattr__(self, "p_adjusted", self.p_value)
        if not self.seeds:
            object.__setattr__(self, "seeds", self.diff.n)
        if math.isnan(self.low) and math.isfinite(self.diff.half_width):
            object.__setattr__(self, "low", self.diff.mean - self.diff.half_width)
            object.__setattr__(self, "high", self.diff.mean + self.diff.half_width)

    @property
    def significant(self) -> bool:
        """True when the adjusted p-value is at most 0.05: the difference is decided."""
        return math.isfinite(self.p_adjusted) and self.p_adjusted <= ALPHA

    @property
    def same_everywhere(self) -> bool:
        """True when every pair differed by exactly the same amount (e.g. every trial of both
        recipes scored the same): the interval has no width."""
        return self.diff.n >= 2 and self.diff.half_width == 0

    def format(self, digits: int = 3, compact: bool = False) -> str:
        """``+0.035 (p=0.045)*``, or ``+0.035 p=0.045*`` when compact: the difference and the
        adjusted p-value (``p<0.001`` below 0.001); ``*`` marks a decided difference."""
        if self.diff.n == 0:
            return "-"
        mark = "*" if self.significant else ""
        p = f"p{p_text(self.p_adjusted)}"
        if compact:
            return f"{self.diff.mean:+.{digits}f} {p}{mark}"
        return f"{self.diff.mean:+.{digits}f} ({p}){mark}"


def p_text(p: float) -> str:
    """A p-value after ``p``: ``=0.045``, ``<0.001`` or ``=n/a``.

    Examples:
        >>> "p" + p_text(0.00002)
        'p<0.001'
    """
    if not math.isfinite(p):
        return "=n/a"
    return "<0.001" if p < 0.001 else f"={p:.3f}"


def seeds_for_power(d_z: float, level: float = ALPHA, power: float = POWER) -> int | None:
    """The number of seeds (pairs) a two-sided paired t-test needs to detect a standardized
    effect ``d_z`` with ``power`` at ``level``: the smallest ``n`` whose power (:func:`power`,
    the noncentral t) reaches it, found by bisection; None for an effect of 0 or NaN; at most
    :data:`MAX_SEEDS`.

    Examples:
        >>> seeds_for_power(0.5)  # a medium effect, 5% level, 80% power
        34
    """
    if not math.isfinite(d_z) or d_z == 0:
        return None
    if t_power(d_z, 2, level) >= power:
        return 2
    if t_power(d_z, MAX_SEEDS, level) < power:
        return MAX_SEEDS
    low, high = 2, MAX_SEEDS  # power(low) < power <= power(high): power grows with n
    while high - low > 1:
        mid = (low + high) // 2
        if t_power(d_z, mid, level) >= power:
            high = mid
        else:
            low = mid
    return high


def t_power(d_z: float, n: int, level: float) -> float:
    """The power of a two-sided paired t-test on ``n`` pairs at ``level`` against a standardized
    effect ``d_z`` (the noncentral t distribution; 0 for fewer than two pairs).

    Examples:
        >>> round(t_power(1.0, 10, 0.05), 3)
        0.803
    """
    if n < 2 or not math.isfinite(d_z):
        return 0.0
    from scipy.special import nctdtr, stdtrit

    crit = stdtrit(n - 1, 1 - level / 2)
    nc = abs(d_z) * math.sqrt(n)
    found = float(1 - nctdtr(n - 1, nc, crit) + nctdtr(n - 1, nc, -crit))
    if not math.isfinite(found):  # the noncentral t fails far out: the normal limit
        from scipy.special import ndtr

        found = float(ndtr(nc - crit) + ndtr(-nc - crit))
    return found


def paired_test(
    recipe: Mapping[int, float], baseline: Mapping[int, float], seeds: int | None = None
) -> Paired:
    """Paired two-sided t-test over the seeds present (and finite) in both mappings, or over
    those below ``seeds`` (a look at the first ``seeds`` seeds).

    With fewer than two pairs the p-value is NaN; with identical differences it is 0 if they are
    non-zero and 1 if they are zero.

    Examples:
        >>> paired_test({0: 0.81, 1: 0.79, 2: 0.84}, {0: 0.75, 1: 0.77, 2: 0.78}).diff.mean
        0.0466...
    """
    pairs = sorted(
        s
        for s in recipe
        if s in baseline
        and math.isfinite(recipe[s])
        and math.isfinite(baseline[s])
        and (seeds is None or s < seeds)
    )
    diffs = np.asarray([recipe[s] - baseline[s] for s in pairs], dtype=float)
    estimate = mean_ci(diffs)
    if len(diffs) < 2:
        return Paired(estimate, float("nan"))
    if np.all(diffs == diffs[0]):
        return Paired(estimate, 0.0 if diffs[0] != 0 else 1.0)
    sd = float(diffs.std(ddof=1))
    d_z = float(diffs.mean() / sd)
    from scipy.special import stdtr

    t = abs(d_z) * math.sqrt(len(diffs))  # the one-sample t statistic on the differences
    return Paired(estimate, float(2 * stdtr(len(diffs) - 1, -t)), d_z=d_z)


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
    design: Design | None = None,
) -> list[RecipeSummary]:
    """Aggregate per-trial figures into one :class:`RecipeSummary` per recipe, and decide every
    comparison with baseline under ``design`` (one family per compared metric; see
    :mod:`reglab.lab.reports.decisions`). Every comparison that is not decided gets the seeds
    it would need for 80% power.

    Args:
        per_trial: dicts with ``recipe``, ``seed``, ``ok`` (bool) and one float per metric.
        metrics: the figures to estimate with a confidence interval.
        compare: the figures to test against ``baseline`` (paired over seeds).
        baseline: the reference recipe's name; None or absent skips the tests.
        design: the correction and the looks; None is Benjamini-Hochberg over a fixed number
            of seeds.

    Returns:
        Summaries in the order recipes first appear.

    Examples:
        >>> rows = summarize(trials, ["test_accuracy"], ["test_accuracy"], "baseline")
        >>> rows[1].versus_baseline["test_accuracy"].significant
        True
    """
    design = design or Design()
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
        out.append(row)
    if not base:
        return out
    available = max(base) + 1
    tested = [row for row in out if row.recipe != baseline]
    for m in compare:
        pairs = [
            ({t["seed"]: t[m] for t in by_recipe[row.recipe] if t["ok"]},
             {s: t[m] for s, t in base.items()})
            for row in tested
        ]  # fmt: skip
        for row, paired in zip(tested, decide(pairs, design, available), strict=True):
            row.versus_baseline[m] = paired
    return out


def decide(
    pairs: Sequence[tuple[Mapping[int, float], Mapping[int, float]]],
    design: Design,
    available: int,
) -> list[Paired]:
    """One family's comparisons decided under ``design``: the paired test at each look, the
    looks combined (``p* = min_k p_k * alpha / a_k``), the correction over the family, and for
    each comparison the interval drawn at the look that decided it (or its last look).

    Args:
        pairs: per comparison, (the recipe's figure by seed, the baseline's figure by seed).
        design: the correction and the looks.
        available: the seeds the study has run (``0..available-1``).

    Returns:
        One :class:`Paired` per comparison, in order.

    Examples:
        >>> decide([({0: 0.9, 1: 0.8, 2: 0.85}, {0: 0.7, 1: 0.72, 2: 0.69})], Design(), 3)[0]
        Paired(diff=Estimate(mean=0.1466..., half_width=0.1517..., n=3), p_value=0.0532...)
    """
    looks = design.looks(available)
    spend = design.spend(looks)
    tests = [[paired_test(r, b, n) for n in looks] for r, b in pairs]
    combined = []
    for at_looks in tests:
        ratios = [
            min(1.0, t.p_value * design.alpha / a)
            for t, a in zip(at_looks, spend, strict=True)
            if math.isfinite(t.p_value)
        ]
        combined.append(min(ratios) if ratios else float("nan"))
    found = correct(combined, design.correction, design.alpha)
    aimed = found.next_level * design.final_spend / design.alpha
    out = []
    for i, at_looks in enumerate(tests):
        usable = [k for k, t in enumerate(at_looks) if math.isfinite(t.p_value)]
        if not usable:  # fewer than two pairs at every look
            out.append(replace(at_looks[-1], correction=design.correction))
            continue
        gammas = {k: found.tau[i] * spend[k] / design.alpha for k in usable}
        passing = [k for k in usable if at_looks[k].p_value <= gammas[k]]
        if not found.decided[i]:
            passing = []
        k = passing[-1] if passing else usable[-1]
        test = at_looks[k]
        low, high = _interval(test.diff, gammas[k])
        paired = replace(
            test,
            p_adjusted=found.adjusted[i],
            low=low,
            high=high,
            correction=design.correction,
            level=aimed,
            seeds=at_looks[passing[0]].diff.n if passing else test.diff.n,
        )
        if not paired.significant:
            needed = seeds_for_power(paired.d_z, aimed)
            futile = design.sequential and (needed is None or needed > design.max_seeds)
            paired = replace(paired, seeds_needed=needed, futile=futile)
        out.append(paired)
    return out


def _interval(diff: Estimate, gamma: float) -> tuple[float, float]:
    """The two-sided t-interval at level ``1 - gamma`` around ``diff`` (whose half-width is the
    95% one): the same mean and standard error, another quantile."""
    if diff.n < 2 or not math.isfinite(diff.half_width):
        return float("nan"), float("nan")
    if diff.half_width == 0:
        return diff.mean, diff.mean
    from scipy.special import stdtrit

    se = diff.half_width / stdtrit(diff.n - 1, 0.975)
    half = stdtrit(diff.n - 1, 1 - min(gamma, 1.0) / 2) * se
    return float(diff.mean - half), float(diff.mean + half)


def null_false_positive_rate(
    design: Design,
    *,
    studies: int = 1000,
    recipes: int = 9,
    seed: int = 0,
    naive: bool = False,
) -> float:
    """The share of simulated studies with no true effect in which some recipe is called
    decided: the family-wise false-positive rate of ``design`` (the false discovery rate too,
    since every discovery is false).

    Each study draws, per seed, a level shared by the baseline and every recipe (the pairing)
    plus independent noise per trial, and looks at its tests as a study with ``design`` does:
    with seeds in rounds it stops once every comparison is decided or futile, as
    :func:`reglab.lab.studies.rounds.run_rounds` does. With ``naive``, each look instead tests
    the seeds so far as if their number had been fixed in advance (a repeated test at
    the full ``alpha``, stopping at the first decision): the error that alpha spending avoids.

    Examples:
        >>> null_false_positive_rate(Design("bh", max_seeds=10), studies=200)
        0.045
    """
    rng = np.random.default_rng(seed)
    most = design.max_seeds or FIRST_LOOK
    looks = schedule(most) if design.sequential else [most]
    fixed = Design(design.correction, None, design.alpha)
    wrong = 0
    for _ in range(studies):
        level = rng.normal(0.8, 0.05, size=most)
        base = dict(enumerate(level + rng.normal(0, 0.02, size=most)))
        values = [dict(enumerate(level + rng.normal(0, 0.02, size=most))) for _ in range(recipes)]
        for n in looks:
            if naive:
                cut = [
                    ({s: v[s] for s in range(n)}, {s: base[s] for s in range(n)}) for v in values
                ]
                found = decide(cut, fixed, n)
            else:
                found = decide([(v, base) for v in values], design, n)
            if any(p.significant for p in found):
                wrong += 1
                break
            if all(p.futile for p in found):
                break
    return wrong / studies
