"""How a study decides: the multiplicity correction, the seeds' looks and their alpha spending,
and the intervals that agree with the decisions.

A study compares every recipe with ``baseline`` on several metrics; each metric is one family
of tests, corrected together:

- ``holm``: Holm's step-down method (Holm 1979) controls the family-wise error rate (the chance
  of any false "decided") at 5%.
- ``bh``: Benjamini-Hochberg (Benjamini & Hochberg 1995) controls the false discovery rate (the
  expected share of false "decided" among those called decided) at 5%: the usual choice when
  screening many recipes. When no recipe has a true effect, the two rates are the same thing.

**Seeds in rounds** (``seeds = "auto"``). The seeds are added in rounds, and the tests are
looked at after each one (:func:`schedule`): 4, 6, 10, 16... seeds up to ``max_seeds``. Each look
``k`` at ``n_k`` seeds spends ``a_k = alpha * (n_k - n_{k-1}) / max_seeds`` of the error rate
(the linear member of the power family of spending functions, Lan & DeMets 1983; Kim & DeMets
1987), and a comparison's p-values over the looks are combined as ``p* = min_k p_k * alpha /
a_k``. Since the ``a_k`` sum to at most ``alpha``, ``P(p* <= x) <= x`` under no effect whatever
the dependence between looks (Bonferroni over the looks: more conservative than the exact
group-sequential boundaries of Jennison & Turnbull 2000, but valid with the t-test's unknown
variance and any number of looks). The correction then runs on the ``p*``. A study that stops
early (every comparison decided, or futile, or out of budget) spends less and stays valid; a
fixed number of seeds is one look with ``a_1 = alpha``, so ``p* = p``.

**Intervals that agree.** A comparison is drawn at the look that decided it (the last one that
does), otherwise at its last look, with the two-sided t-interval at the level its own test was
held to there: ``gamma = tau * a_k / alpha``, where ``tau`` is the correction's threshold for
that comparison (Holm: ``alpha / (m - j + 1)`` at its step ``j``, or at the first step Holm did
not pass; BH: ``alpha * R / m`` with ``R`` the number decided, ``alpha / m`` when none is). A
t-interval at level ``1 - gamma`` excludes 0 exactly when the test's p-value is at most
``gamma``, so a whisker clears zero exactly when the comparison is decided. For BH these are the
false-coverage-rate adjusted intervals of Benjamini & Yekutieli (2005).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ALPHA",
    "CORRECTIONS",
    "Design",
    "Thresholds",
    "bh",
    "correct",
    "holm",
    "schedule",
]

#: The error rate a study controls (family-wise with Holm, false discoveries with BH).
ALPHA = 0.05
#: The corrections a study can use.
CORRECTIONS = ("holm", "bh")
#: The first look of a study with ``seeds = "auto"``.
FIRST_LOOK = 4


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (Holm 1979): the ``k``-th smallest of ``m`` p-values
    times ``m - k + 1``, made non-decreasing in that order and capped at 1. NaN entries stay NaN
    and do not count as tests (the same numbers as statsmodels' ``multipletests(method=
    'holm')``, which a test checks).

    Examples:
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


def bh(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (Benjamini & Hochberg 1995): the ``k``-th smallest
    of ``m`` p-values times ``m / k``, made non-decreasing from the largest down and capped at 1.
    NaN entries stay NaN and do not count as tests (statsmodels' ``multipletests(method=
    'fdr_bh')``, which a test checks).

    Examples:
        >>> bh([0.01, 0.04, 0.03])
        [0.03, 0.04, 0.04]
    """
    finite = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    out = [float("nan")] * len(p_values)
    order = sorted(finite, key=lambda i: p_values[i], reverse=True)
    running, m = 1.0, len(order)
    for k, i in enumerate(order):
        running = min(running, m * p_values[i] / (m - k))
        out[i] = min(1.0, running)
    return out


@dataclass(frozen=True)
class Thresholds:
    """What a correction decided for one family.

    Attributes:
        adjusted: each comparison's adjusted p-value (NaN where untested).
        decided: whether each is decided (adjusted p at most ``alpha``).
        tau: the level each comparison's own test was held to (see the module's docstring).
        next_level: the level the next comparison would have to pass to be decided (the
            level "seeds for 80% power" and the futility rule aim at).
    """

    adjusted: list[float]
    decided: list[bool]
    tau: list[float]
    next_level: float


def correct(p_values: Sequence[float], correction: str, alpha: float = ALPHA) -> Thresholds:
    """Run ``correction`` (``'holm'`` or ``'bh'``) over one family of p-values.

    Args:
        p_values: one per comparison; NaN for a comparison that could not be tested.
        correction: ``'holm'`` or ``'bh'``.
        alpha: the error rate controlled.

    Returns:
        :class:`Thresholds`.

    Raises:
        ConfigError: an unknown correction.

    Examples:
        >>> correct([0.001, 0.2, 0.02], "bh").decided
        [True, False, True]
    """
    from ...core import ConfigError

    if correction not in CORRECTIONS:
        raise ConfigError(
            f"The 'correction' parameter of compare must be one of {', '.join(CORRECTIONS)}. "
            f"Got {correction!r}."
        )
    nan = float("nan")
    finite = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    m = len(finite)
    order = sorted(finite, key=lambda i: p_values[i])
    adjusted = (holm if correction == "holm" else bh)(p_values)
    decided = [math.isfinite(p) and p <= alpha for p in adjusted]
    tau = [nan] * len(p_values)
    rejected = sum(decided)
    if correction == "holm":
        # the first step Holm did not pass caps the level of every later step
        stop = rejected  # 0-based rank of the first comparison not decided
        for rank, i in enumerate(order):
            tau[i] = alpha / (m - min(rank, stop))
        next_level = alpha / (m - rejected) if rejected < m else alpha
    else:
        for i in order:
            tau[i] = alpha * max(rejected, 1) / m
        next_level = alpha * min(rejected + 1, m) / m if m else alpha
    return Thresholds(adjusted, decided, tau, next_level)


def schedule(max_seeds: int) -> list[int]:
    """The looks of a study with ``seeds = "auto"``: 4 seeds, then half as many again (at least
    2 more) each round, the last one at ``max_seeds`` (a round of one seed is merged into the
    one before).

    Examples:
        >>> schedule(10), schedule(20), schedule(3)
        ([4, 6, 10], [4, 6, 9, 14, 20], [3])
    """
    looks = [min(FIRST_LOOK, max_seeds)]
    if max_seeds - looks[0] == 1:
        looks = [max_seeds]
    while looks[-1] < max_seeds:
        following = max(looks[-1] + 2, round(1.5 * looks[-1]))
        looks.append(max_seeds if following >= max_seeds - 1 else following)
    return looks


@dataclass(frozen=True)
class Design:
    """How a study's seeds are looked at and corrected.

    Attributes:
        correction: ``'holm'`` or ``'bh'``.
        max_seeds: None for a fixed number of seeds (one look at all of them); else the seeds
            come in the rounds of :func:`schedule` up to this many.
        alpha: the error rate controlled.

    Examples:
        >>> Design("bh", max_seeds=10).spend([4, 6, 10])
        [0.02, 0.01, 0.02]
    """

    correction: str = "bh"
    max_seeds: int | None = None
    alpha: float = ALPHA

    @property
    def sequential(self) -> bool:
        """True when the seeds come in rounds (``seeds = "auto"``)."""
        return self.max_seeds is not None

    def looks(self, available: int) -> list[int | None]:
        """The looks made with ``available`` seeds: the rounds of :func:`schedule` reached (or,
        before the first one was, the seeds there are, spending only their share), or
        ``[None]`` (every seed at once) for a fixed number of seeds."""
        if self.max_seeds is None:
            return [None]
        return [n for n in schedule(self.max_seeds) if n <= available] or [max(available, 1)]

    def spend(self, looks: Sequence[int | None]) -> list[float]:
        """The error rate each look spends (the looks' ``a_k``; they sum to at most alpha)."""
        if self.max_seeds is None or looks == [None]:
            return [self.alpha] * len(looks)
        out, before = [], 0
        for n in looks:
            out.append(self.alpha * (n - before) / self.max_seeds)
            before = n
        return out

    @property
    def final_spend(self) -> float:
        """What the last planned look spends: the level a comparison still open is aimed at."""
        if self.max_seeds is None:
            return self.alpha
        planned = schedule(self.max_seeds)
        return self.spend(planned)[-1]

    def describe(self) -> str:
        """The design in words, for captions and the verdict."""
        name = "Benjamini-Hochberg" if self.correction == "bh" else "Holm"
        rate = "false discovery rate" if self.correction == "bh" else "family-wise error rate"
        text = f"{name} ({rate} {self.alpha:.0%})"
        if self.sequential:
            looks = ", ".join(map(str, schedule(self.max_seeds)))
            text += f", seeds in rounds of {looks} with alpha spent linearly over the looks"
        return text
