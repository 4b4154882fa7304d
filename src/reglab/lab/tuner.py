"""Running ``reglab tune``: the study, its worker processes, and what it writes.

See :mod:`reglab.lab.tune` for the search space, the storage and how trials are shared.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import tomli_w
import torch

from ..core import ConfigError, Interval, Predicate, check_param
from ..train import evaluate, fit
from .config import StudyConfig
from .recipes import build_recipe, resolve_recipes
from .study import dataset_for, model_for, plan
from .tune import (
    Dimension,
    claim,
    finite_or_inf,
    masked,
    open_storage,
    parse_dimension,
    requeue_dead,
    with_values,
)

__all__ = ["TuneConfig", "TuneRun", "run_tune"]


@dataclass
class TuneConfig:
    """What ``reglab tune`` searches: ``recipe`` (a built-in name) with ``params`` (e.g.
    ``['strength=1e-5:1e-1:log']``), ``trials`` more trials on the study of ``study`` (the data,
    model and training settings, as for ``reglab compare``), trained at ``seed``.

    Raises:
        ConfigError: for a bad value (checked at construction).
    """

    recipe: str
    params: list[str]
    study: StudyConfig = field(default_factory=StudyConfig)
    trials: int = 20
    seed: int = 0
    storage: str | None = None
    study_name: str | None = None
    pruning: bool = True

    CONSTRAINTS = {
        "trials": Interval(int, 1, 100_000),
        "seed": Interval(int, 0, None),
        "storage": Predicate(lambda v: v is None or (isinstance(v, str) and "://" in v), "a URL"),
        "study_name": Predicate(lambda v: v is None or (isinstance(v, str) and v), "a name"),
    }

    def __post_init__(self) -> None:
        for name, constraint in self.CONSTRAINTS.items():
            check_param("tune", name, getattr(self, name), constraint)
        if not self.params:
            raise ConfigError(
                "The 'param' parameter of tune must be given at least once, e.g. "
                "--param strength=1e-5:1e-1:log. Got none."
            )
        self.spec = resolve_recipes([self.recipe], self.study_task())[self.recipe]
        self.dims = [parse_dimension(p, self.spec, self.recipe) for p in self.params]
        names = [d.name for d in self.dims]
        if len(set(names)) != len(names):
            raise ConfigError(
                f"The 'param' parameter of tune must name each argument once. Got {names}."
            )

    def study_task(self) -> str:
        from .data import dataset_task

        return dataset_task(self.study.data, self.study.target)

    @property
    def name(self) -> str:
        return self.study_name or f"{self.recipe}-{Path(self.study.data).stem}"


def _suggest(trial: Any, dims: Sequence[Dimension]) -> dict[str, Any]:
    values = {}
    for d in dims:
        if d.integer:
            values[d.name] = trial.suggest_int(d.name, int(d.low), int(d.high), log=d.log)
        else:
            values[d.name] = trial.suggest_float(d.name, d.low, d.high, log=d.log)
    return values


def evaluate_trial(trial: Any, payload: dict[str, Any]) -> float:
    """Train one Optuna trial; report validation loss each epoch (pruning); return the final
    model's validation loss. Test metrics and the run's status go to the trial's user attrs."""
    import optuna

    settings, seed = payload["settings"], payload["seed"]
    values = _suggest(trial, payload["dims"])
    spec = with_values(payload["spec"], payload["dims"], values)
    data = dataset_for(settings, seed)
    model = model_for(settings, data, seed)

    def report(record: dict[str, float]) -> None:
        trial.report(record["val_loss"], record["epoch"])
        if payload["pruning"] and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {record['epoch']}")

    history = fit(
        model,
        (data.x_train, data.y_train),
        (data.x_val, data.y_val),
        recipe=build_recipe(spec, data.image_shape),
        epochs=settings["epochs"],
        optimizer=settings["optimizer"],
        lr=settings["lr"],
        batch_size=settings["batch_size"],
        seed=seed,
        task=data.task,
        num_classes=data.num_classes,
        divergence_threshold=settings["divergence_threshold"],
        on_epoch=report,
    )
    val = evaluate(history.model, (data.x_val, data.y_val), data.task)
    test = evaluate(history.model, (data.x_test, data.y_test), data.task)
    trial.set_user_attr("status", history.status)
    trial.set_user_attr("epochs_run", history.epochs_run)
    for split, metrics in (("val", val), ("test", test)):
        for key, value in metrics.items():
            trial.set_user_attr(f"{split}_{key}", value)
    return finite_or_inf(val["loss"])


def _work(payload: dict[str, Any]) -> None:
    """A worker process: take waiting trials until none is left."""
    import optuna

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(payload["storage"], Path(payload["out"]))
    study = optuna.load_study(
        study_name=payload["name"],
        storage=storage,
        sampler=optuna.samplers.TPESampler(seed=None),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=5),
    )
    heartbeat = hasattr(storage, "record_heartbeat")
    while True:
        if heartbeat:
            optuna.storages.fail_stale_trials(study)
        trial = claim(study)
        if trial is None:
            return
        from optuna.storages._heartbeat import get_heartbeat_thread  # as study.optimize does

        with get_heartbeat_thread(trial._trial_id, storage):
            try:
                value = evaluate_trial(trial, payload)
            except optuna.TrialPruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                continue
            except ConfigError as exc:
                trial.set_user_attr("error", str(exc))
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
        study.tell(trial, value)


@dataclass
class TuneRun:
    """What :func:`run_tune` did: the study name, the storage as shown (password masked), the
    finished trials of the whole study, and the best one."""

    name: str
    storage: str
    trials: list[Any]
    best: Any
    added: int
    requeued: int
    config: TuneConfig
    importances: dict[str, float] = field(default_factory=dict)


def run_tune(
    config: TuneConfig,
    out: str | Path,
    workers: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> TuneRun:
    """Add ``config.trials`` trials to the study (created on first use) and run them in
    ``workers`` processes; a dead worker's trial is re-queued and taken by another.

    Raises:
        ConfigError: for bad settings or an unreachable storage, before any training.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(out)
    study_config = dataclasses.replace(config.study, recipes=[config.recipe], seeds=1)
    _, settings, *_ = plan(study_config)  # checks data, model and the recipe before training
    storage = open_storage(config.storage, out)
    study = optuna.create_study(
        study_name=config.name, storage=storage, direction="minimize", load_if_exists=True
    )
    requeued = requeue_dead(study)
    added = config.trials  # waiting trials of an interrupted run are taken too
    for _ in range(added):
        study.enqueue_trial({}, skip_if_exists=False)
    payload = {
        "settings": settings,
        "seed": config.seed,
        "spec": config.spec,
        "dims": config.dims,
        "pruning": config.pruning,
        "storage": config.storage,
        "out": str(out),
        "name": config.name,
    }
    total = config.trials
    done_before = _finished(study)
    ctx = get_context("spawn")
    for _round in range(5):  # more rounds only when dead workers left re-queued trials
        procs = [ctx.Process(target=_work, args=(payload,)) for _ in range(max(1, workers))]
        for p in procs:
            p.start()
        try:
            while any(p.is_alive() for p in procs):
                time.sleep(0.3)
                if any(p.exitcode not in (None, 0) for p in procs):
                    requeued += requeue_dead(study)
                if on_progress is not None:
                    on_progress(min(total, _finished(study) - done_before), total)
        except BaseException:
            for p in procs:
                p.kill()
            raise
        for p in procs:
            p.join()
        requeued += requeue_dead(study)
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            break
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    if on_progress is not None:
        on_progress(min(total, len(finished) - done_before), total)
    best = min(complete, key=lambda t: t.value) if complete else None
    importances: dict[str, float] = {}
    if len(complete) >= 3:
        try:
            importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError):  # e.g. every trial with the same value
            importances = {}
    return TuneRun(
        config.name,
        masked(config.storage) if config.storage else str(out / "tune.journal"),
        finished,
        best,
        added,
        requeued,
        config,
        dict(importances),
    )


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def best_study_toml(run: TuneRun) -> str:
    """A study file for ``reglab compare --config``: the tuned recipe beside baseline."""
    config = run.config
    study = {k: v for k, v in dataclasses.asdict(config.study).items() if v is not None}
    study.pop("recipes", None)
    tuned = with_values(config.spec, config.dims, run.best.params)
    study["recipes"] = {"baseline": [], f"{config.recipe}_tuned": tuned}
    return tomli_w.dumps(study)


def trials_csv(run: TuneRun) -> str:
    """One row per finished trial: number, state, parameters, validation and test metrics."""
    names = [d.name for d in run.config.dims]
    attrs = sorted({k for t in run.trials for k in t.user_attrs if k[:4] in ("val_", "test")})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", *names, "value", *attrs])
    for t in sorted(run.trials, key=lambda t: t.number):
        row = [t.number, t.state.name.lower(), *(t.params.get(n, "") for n in names)]
        row += [t.value if t.value is not None else "", *(t.user_attrs.get(a, "") for a in attrs)]
        writer.writerow(row)
    return buffer.getvalue()


def write_tune_outputs(run: TuneRun, out: Path) -> dict[str, Path]:
    """``tune_trials.csv``, ``best.toml`` (if a trial completed) and ``tune.json``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"tune_trials.csv": out / "tune_trials.csv", "tune.json": out / "tune.json"}
    paths["tune_trials.csv"].write_text(trials_csv(run))
    summary = {
        "study": run.name,
        "storage": run.storage,
        "finished": len(run.trials),
        "best": None
        if run.best is None
        else {
            "number": run.best.number,
            "params": run.best.params,
            "value": run.best.value,
            **run.best.user_attrs,
        },
    }
    paths["tune.json"].write_text(json.dumps(summary, indent=2, default=str))
    if run.best is not None:
        paths["best.toml"] = out / "best.toml"
        paths["best.toml"].write_text(best_study_toml(run))
    return paths
