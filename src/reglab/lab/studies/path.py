"""``reglab path``: a regularization path over a log-spaced strength grid, with warm starts.

As glmnet does for linear models, the grid runs from the strongest value to the weakest and each
fit starts from the previous fit's weights (``warm``), so later points need fewer epochs
(``warm_epochs``). Every seed runs its own chain, in parallel worker processes. For each
strength the path records validation and train loss, sparsity and weight norm; the best strength
has the lowest mean validation loss over seeds, and the one-standard-error choice is the
strongest whose mean is within one standard error of the best (Hastie, Tibshirani & Friedman,
*The Elements of Statistical Learning*, 7.10).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...checkpoint import Checkpoint
from ...core import ConfigError, Interval, check_param
from ...train import evaluate, fit
from ..engine.device import worker_devices
from ..engine.runner import run_jobs
from ..inputs.data import dataset_task
from ..inputs.recipes import recipe_spec
from ..reports.inspect import model_figures
from .checkpoints import Checkpoints
from .config import StudyConfig
from .dimensions import Dimension, parse_dimension, with_values
from .fields import PATH_SETTINGS
from .seams import (
    board_for,
    build,
    curve_for,
    dataset_for,
    datasets_to_hand,
    fit_options,
    splits_for,
    start_worker,
)
from .study import plan

__all__ = ["PathConfig", "PathRun", "choose", "edge_note", "grid", "run_path"]


@dataclass
class PathConfig:
    """A path of ``recipe``'s argument ``param`` (``'strength=1e-5:1'``) over ``points``
    log-spaced values, ``seeds`` chains, on the study ``study``. ``recipe`` is a name
    ``study.recipes`` defines (a study file's ``[recipes]`` table), else a built-in name.

    Raises:
        ConfigError: for a bad value, an unknown argument or a bad range.
    """

    recipe: str
    param: str
    study: StudyConfig = field(default_factory=StudyConfig)
    points: int = PATH_SETTINGS["points"].default
    seeds: int = PATH_SETTINGS["seeds"].default
    warm: bool = True
    warm_epochs: int | None = None

    CONSTRAINTS = {
        "points": Interval(int, 2, 200),
        "seeds": Interval(int, 1, 100),
        "warm_epochs": Interval(int, 1, None, allow_none=True),
    }

    def __post_init__(self) -> None:
        for name, constraint in self.CONSTRAINTS.items():
            check_param("path", name, getattr(self, name), constraint)
        study = self.study
        task = dataset_task(
            study.data, study.target, study.image_size, study.features, study.missing
        )
        self.spec = recipe_spec(self.recipe, self.study.recipes, task, "path")
        self.dim = parse_dimension(self.param, self.spec, self.recipe)
        if not self.dim.log:
            raise ConfigError(
                f"The 'param' parameter of path must be a log-scale range (a path is "
                f"log-spaced). Got {self.param!r}."
            )

    @property
    def later_epochs(self) -> int:
        """Epochs of every point after the first: ``warm_epochs``, by default a third of the
        study's epochs when warm-starting, all of them otherwise."""
        if not self.warm:
            return self.study.epochs
        return self.warm_epochs or max(1, self.study.epochs // 3)


def grid(dim: Dimension, points: int) -> list[float]:
    """``points`` log-spaced values from ``dim.high`` down to ``dim.low`` (strongest first)."""
    values = np.geomspace(dim.high, dim.low, points)
    return [round(float(v)) if dim.integer else float(v) for v in values]


def _as_is(model: torch.nn.Module) -> torch.nn.Module:
    return model


def _chain_checkpoint(payload: dict[str, Any], checkpoints: Checkpoints) -> Checkpoint:
    """The checkpoint of one seed's chain: tagged with everything that shapes its numbers."""
    shaping = [payload["seed"], repr(payload["dim"]), payload["spec"], payload["grid"]]
    shaping += [payload["warm"], payload["later_epochs"]]
    name = f"path-{payload['dim'].name}-seed{payload['seed']}"
    return checkpoints.run(name, payload["settings"], *shaping)


def _chain(payload: dict[str, Any], checkpoints: Checkpoints | None = None) -> list[dict[str, Any]]:
    """One seed's path: every strength in order, each fit starting from the previous one.
    With ``checkpoints`` the chain saves its finished points (rows and warm-start weights) and
    its running fit, and a rerun continues at the point where it was."""
    torch.set_num_threads(1)
    settings, seed, dim = payload["settings"], payload["seed"], payload["dim"]
    data = dataset_for(settings, seed)
    rows, state = [], None
    chain = None if checkpoints is None else _chain_checkpoint(payload, checkpoints)
    if chain is not None and (saved := chain.load("path")) is not None:
        rows, state = [dict(r) for r in saved["rows"]], saved["state"]
    for i, value in enumerate(payload["grid"]):
        if i < len(rows):  # finished before an interruption
            continue
        spec = with_values(payload["spec"], [dim], {dim.name: value})
        _, model, recipe = build(settings, spec, seed, data)
        if state is not None:  # the previous fit's weights, in the structure its recipe made
            model = recipe.transform_model(model)
            model.load_state_dict(state)
            recipe.transform_model = _as_is  # type: ignore[method-assign]  # fit's call: done
        epochs = settings["epochs"] if i == 0 else payload["later_epochs"]
        started = time.perf_counter()
        point = None if chain is None else chain.part(f"p{i}")
        history = fit(
            model,
            *splits_for(settings, data, seed),
            recipe=recipe,
            seed=seed,
            checkpoint=point,
            **{**fit_options(settings, data), **curve_for(data), "epochs": epochs},
            **board_for(settings, payload["recipe"], f"{dim.name}={value:.4g}", f"seed-{seed}"),
        )
        row: dict[str, Any] = {
            "strength": value,
            "seed": seed,
            "epochs": history.epochs_run,
            "seconds": time.perf_counter() - started,
            "status": history.status,
            "first_train_loss": history.epochs[0]["train_loss"] if history.epochs else math.nan,
        }
        for split in ("train", "val", "test"):
            metrics = evaluate(history.model, data.source(split), data.task)
            row.update({f"{split}_{k}": v for k, v in metrics.items()})
        figures = model_figures(history.model, data)["figures"]
        row["zero_fraction"], row["weight_l2"] = figures["zero_fraction"], figures["weight_l2"]
        rows.append(row)
        if payload["warm"]:
            state = {k: v.detach().clone() for k, v in history.model.state_dict().items()}
        if chain is not None:
            chain.save("path", {"rows": rows, "state": state})
            point.path.unlink(missing_ok=True)
    return rows


def choose(rows: Sequence[dict[str, Any]], metric: str = "val_loss") -> dict[str, Any]:
    """Per strength the mean and standard error of ``metric`` over seeds; the best strength
    (lowest mean) and the one-standard-error choice (the strongest with a mean within one
    standard error of the best)."""
    by: dict[float, list[float]] = {}
    for r in rows:
        if math.isfinite(r[metric]):
            by.setdefault(r["strength"], []).append(r[metric])
    stats = {}
    for s, values in by.items():
        se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
        stats[s] = (float(np.mean(values)), se)
    if not stats:
        return {"stats": {}, "best": None, "one_se": None}
    best = min(stats, key=lambda s: stats[s][0])
    limit = stats[best][0] + stats[best][1]
    one_se = max(s for s, (mean, _) in stats.items() if mean <= limit)
    return {"stats": stats, "best": best, "one_se": one_se}


@dataclass
class PathRun:
    """What :func:`run_path` produced: one row per strength and seed, the choice, the time."""

    config: PathConfig
    rows: list[dict[str, Any]]
    choice: dict[str, Any]
    seconds: float
    task: str = "classification"

    @property
    def edge(self) -> str | None:
        """One line when the chosen strength (best or one-standard-error) is an end of the
        grid, where a better one may lie outside it; None otherwise."""
        return edge_note(self.choice, self.config.dim.high, self.config.dim.low)


def edge_note(choice: dict[str, Any], strongest: float, weakest: float) -> str | None:
    """:attr:`PathRun.edge` for a :func:`choose` result on a grid from ``strongest`` down to
    ``weakest``.

    Examples:
        >>> edge_note({"best": 0.1, "one_se": 0.1}, 0.1, 1e-4).endswith("may lie beyond 0.1.")
        True
    """
    for key, what in (("best", "best strength"), ("one_se", "one-standard-error choice")):
        value = choice.get(key)
        if value is None:
            continue
        if math.isclose(value, strongest, rel_tol=1e-9):
            return (
                f"The {what} is the strongest tried ({strongest:g}): widen the range, the best "
                f"strength may lie beyond {strongest:g}."
            )
        if math.isclose(value, weakest, rel_tol=1e-9):
            return (
                f"The {what} is the weakest tried ({weakest:g}): widen the range, the best "
                f"strength may lie below {weakest:g}."
            )
    return None


def run_path(
    config: PathConfig,
    workers: int = 1,
    on_chain: Callable[[int, int], None] | None = None,
    out: str | Path | None = None,
) -> PathRun:
    """Run every seed's chain (in ``workers`` processes) and choose the strength.

    With ``out``, each chain checkpoints to ``<out>/checkpoints/`` (its finished points and its
    running fit, every ``checkpoint_every`` seconds of the study), a rerun continues each chain
    where it was, and the checkpoints are removed when the path is done. Ctrl-C: the running
    fits save at their next epoch end and ``KeyboardInterrupt`` propagates.

    Raises:
        ConfigError: for bad settings, before training.
    """
    started = time.perf_counter()
    study = dataclasses.replace(
        config.study, recipes={config.recipe: config.spec}, seeds=config.seeds
    )
    task, settings, *_ = plan(study, out)
    values = grid(config.dim, config.points)
    payloads = [
        {
            "settings": settings,
            "seed": seed,
            "dim": config.dim,
            "spec": config.spec,
            "grid": values,
            "warm": config.warm,
            "later_epochs": config.later_epochs,
            "recipe": config.recipe,  # names its TensorBoard runs
        }
        for seed in range(config.seeds)
    ]
    checkpoints = None
    if out is not None:
        checkpoints = Checkpoints(str(Path(out) / "checkpoints"), config.study.checkpoint_every)
    chains: dict[int, list[dict[str, Any]]] = {}

    def finish(row: dict[str, Any]) -> None:
        chains.setdefault(row["seed"], []).append(row)
        if on_chain is not None and len(chains[row["seed"]]) == len(values):
            on_chain(sum(len(c) == len(values) for c in chains.values()), len(payloads))

    job = functools.partial(_chain, checkpoints=checkpoints)
    handed = datasets_to_hand(settings, range(config.seeds))
    jobs = [(job, p) for p in payloads]
    devices = worker_devices(settings)  # on GPUs, one worker per GPU (all took GPU 0)
    count = len(devices) if devices else workers
    run_jobs(
        jobs,
        min(count, len(payloads)),
        finish,
        devices=devices,
        prepare=(
            start_worker,
            {"deterministic": settings.get("deterministic"), "datasets": handed},
        ),
    )
    rows = [row for seed in sorted(chains) for row in chains[seed]]
    if checkpoints is not None:
        for payload in payloads:
            _chain_checkpoint(payload, checkpoints).remove()
        checkpoints.clean()
    metric = "val_loss"
    return PathRun(config, rows, choose(rows, metric), time.perf_counter() - started, task)
