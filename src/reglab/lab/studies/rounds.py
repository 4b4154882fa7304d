"""Seeds in rounds (``seeds = "auto"``): run the study a round of seeds at a time, look at its
tests after each round, and stop once every comparison is decided or cannot be within the
study's ``max_seeds``, or when the next round would end past its ``budget``.

The looks and the error each spends are fixed in advance by the design
(:class:`~reglab.lab.reports.decisions.Design`), so the tests stay valid however early the
study stops. A round's new seeds train in new populations; finished trials are reused, because
a trial's key does not depend on the round. A recipe whose comparisons are all decided (or
futile) gets no more seeds.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..reports.decisions import schedule
from ..reports.results import comparison, has_memorized, headline_metrics
from ..reports.stats import RecipeSummary
from .config import StudyConfig
from .study import StudyRun, run_study

__all__ = ["open_recipes", "run_rounds"]


def open_recipes(summary: list[RecipeSummary], task: str, baseline: str) -> set[str]:
    """The recipes that need more seeds: those with a headline comparison (test metric, gap,
    memorized) neither decided nor futile, and the baseline when any does."""
    keys = headline_metrics(task, has_memorized(summary))
    found = set()
    for s in summary:
        for key in keys:
            p = s.versus_baseline.get(key)
            if p is not None and not p.significant and not p.futile:
                found.add(s.recipe)
    return found | {baseline} if found else set()


def run_rounds(
    config: StudyConfig,
    out: str | Path,
    on_trial: Callable[[dict[str, Any], int, int], None] | None = None,
    on_epoch: Callable[[float, int], None] | None = None,
    on_round: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> StudyRun:
    """Run ``config`` (whose ``seeds`` is ``"auto"``) in rounds of seeds.

    Args:
        config: the study.
        out: the output folder (each round's trials are written to it as usual).
        on_trial, on_epoch: as for :func:`~reglab.lab.studies.study.run_study`.
        on_round: called with the seeds of each round as it starts and the study's maximum.
        overwrite: as for :func:`~reglab.lab.studies.study.run_study` (the first round's).

    Returns:
        The last round's :class:`StudyRun` (every finished trial of every round), with
        ``rounds`` the seeds of each look run and ``config`` the study as given.

    Examples:
        >>> run = run_rounds(StudyConfig(data="wine", seeds="auto", max_seeds=6), "runs/w")
        >>> run.rounds
        [4, 6]
    """
    started = time.perf_counter()
    looks = schedule(config.max_seeds)
    run: StudyRun | None = None
    needed: set[str] | None = None
    rounds: list[int] = []
    per_seed = 0.0
    for seeds in looks:
        if rounds and config.budget is not None:
            projected = time.perf_counter() - started + per_seed * (seeds - rounds[-1])
            if projected > config.budget:
                break
        if on_round is not None:
            on_round(seeds, config.max_seeds)
        begun = time.perf_counter()
        run = run_study(
            dataclasses.replace(config, seeds=seeds), out, on_trial, on_epoch, needed, overwrite
        )
        rounds.append(seeds)
        per_seed = (time.perf_counter() - begun) / (seeds - (rounds[-2] if len(rounds) > 1 else 0))
        if run.interrupted:
            break
        summary = comparison(run.results, run.task, config.baseline, config.design)
        needed = open_recipes(summary, run.task, config.baseline)
        if not needed:
            break
    if run is None:  # unreachable: a schedule has at least one look
        raise RuntimeError(f"no round to run in {looks}")
    run.config = config
    run.rounds = rounds
    return run
