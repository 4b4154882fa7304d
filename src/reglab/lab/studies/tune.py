"""``reglab tune``: search a recipe's regularization strengths with Optuna.

Each Optuna trial trains the recipe with sampled values on the study's data (one seed) and
returns the final model's validation loss; validation loss is reported every epoch, so Optuna's
median pruner stops hopeless trials early. TPE samples by default. The search space is
:mod:`reglab.lab.studies.dimensions`; the storage and how trials are shared between processes
and machines, :mod:`reglab.lab.studies.optuna_storage`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import tomli_w
import torch

from ...checkpoint import Checkpoint, stop_requested
from ...core import Choice, ConfigError, Interval, Predicate, check_param
from ...errors import StorageUnavailable
from ...train import History, evaluate, fit
from ..engine.device import worker_devices
from ..engine.population import fit_population
from ..inputs.recipes import recipe_spec
from .checkpoints import Checkpoints
from .config import StudyConfig
from .dimensions import Dimension, parse_dimension, with_values
from .fields import STORAGE_SETTINGS, TUNE_SETTINGS
from .optuna_storage import (
    BATCH_ATTR,
    Heartbeats,
    adopt,
    claim,
    fail_stale,
    finite_or_inf,
    masked,
    open_storage,
    requeue_dead,
    run_workers,
    store_outcome,
)
from .retrying import Unreachable
from .seams import board_for, build, curve_for, fit_options, member_for, splits_for
from .store import safe_name, write_atomic
from .study import plan
from .trial import error_line

__all__ = ["TuneConfig", "TuneRun", "run_tune"]


@dataclass
class TuneConfig:
    """What ``reglab tune`` searches: ``recipe`` (a name ``study.recipes`` defines, as a study
    file's ``[recipes]`` table does, else a built-in name) with ``params`` (e.g.
    ``['strength=1e-5:1e-1:log']``), ``trials`` more trials on the study of ``study`` (the data,
    model and training settings, as for ``reglab compare``), trained at ``seed``. With an RDB
    ``storage``, every call to it waits out an outage of up to ``storage_retry`` seconds.

    Raises:
        ConfigError: for a bad value (checked at construction).
    """

    recipe: str
    params: list[str]
    study: StudyConfig = field(default_factory=StudyConfig)
    trials: int = TUNE_SETTINGS["trials"].default
    seed: int = TUNE_SETTINGS["seed"].default
    storage: str | None = None
    study_name: str | None = None
    pruning: bool = True
    engine: str = TUNE_SETTINGS["engine"].default
    storage_retry: float = STORAGE_SETTINGS["storage_retry"].default

    CONSTRAINTS = {
        "trials": Interval(int, 1, 100_000),
        "seed": Interval(int, 0, None),
        "storage": Predicate(lambda v: v is None or (isinstance(v, str) and "://" in v), "a URL"),
        "study_name": Predicate(lambda v: v is None or (isinstance(v, str) and v), "a name"),
        "engine": Choice("population", "sequential"),
        "storage_retry": Interval(float, 0, None),
    }

    def __post_init__(self) -> None:
        for name, constraint in self.CONSTRAINTS.items():
            check_param("tune", name, getattr(self, name), constraint)
        if not self.params:
            raise ConfigError(
                "The 'param' parameter of tune must be given at least once, e.g. "
                "--param strength=1e-5:1e-1:log. Got none."
            )
        self.spec = recipe_spec(self.recipe, self.study.recipes, self.study_task(), "tune")
        self.dims = [parse_dimension(p, self.spec, self.recipe) for p in self.params]
        names = [d.name for d in self.dims]
        if len(set(names)) != len(names):
            raise ConfigError(
                f"The 'param' parameter of tune must name each argument once. Got {names}."
            )

    def study_task(self) -> str:
        from ..inputs.data import dataset_task

        study = self.study
        return dataset_task(
            study.data, study.target, study.image_size, study.features, study.missing
        )

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


def _build(trial: Any, payload: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The trial's data, model (initial weights of the seed) and recipe, values sampled."""
    settings, seed = payload["settings"], payload["seed"]
    spec = with_values(payload["spec"], payload["dims"], _suggest(trial, payload["dims"]))
    return build(settings, spec, seed)


class Outcome(NamedTuple):
    """How a trial ended: its objective (None when the pruner stopped it) and the user
    attributes to store on it (status, epochs run and resumed from, final val/test metrics)."""

    value: float | None
    attrs: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "attrs": self.attrs}

    @classmethod
    def from_json(cls, kept: Any) -> Outcome | None:
        try:
            value = kept["value"]
            return cls(None if value is None else float(value), dict(kept["attrs"]))
        except (TypeError, KeyError, ValueError):
            return None


PRUNED = Outcome(None, {})


def _outcome(history: History, data: Any) -> Outcome:
    """The final model's validation loss (the objective) and what is stored with it."""
    val = evaluate(history.model, data.source("val"), data.task)
    test = evaluate(history.model, data.source("test"), data.task)
    attrs: dict[str, Any] = {
        "status": history.status,
        "epochs_run": history.epochs_run,
        "resumed_from": history.resumed_from,
    }
    for split, metrics in (("val", val), ("test", test)):
        for key, value in metrics.items():
            attrs[f"{split}_{key}"] = value
    return Outcome(finite_or_inf(val["loss"]), attrs)


class Reports:
    """A trial's per-epoch validation losses on their way to the storage, for the pruner.

    A step the storage already holds (a resumed trial trains again from its checkpoint's
    epoch) is not reported twice. While the database cannot be reached the values wait here
    and training goes on without a pruning decision; they are sent with the next report that
    gets through, or before the trial's result is stored.
    """

    def __init__(self, trial: Any, pruning: bool) -> None:
        self.trial, self.pruning = trial, pruning
        storage = getattr(getattr(trial, "study", None), "_storage", None)
        self.storage = storage
        stored = storage.get_trial(trial._trial_id).intermediate_values if storage else {}
        self.sent: set[int] = set(stored)
        self.waiting: list[tuple[int, float]] = []

    def prune(self, record: dict[str, float]) -> bool:
        """Report the epoch's validation loss; whether the pruner stops the trial now."""
        step = int(record["epoch"])
        if step not in self.sent and all(s != step for s, _ in self.waiting):
            self.waiting.append((step, record["val_loss"]))
        no_wait = getattr(self.storage, "no_wait", None)
        try:
            with no_wait() if no_wait is not None else contextlib.nullcontext():
                self.flush()
                return self.pruning and self.trial.should_prune()
        except Unreachable:
            return False

    def flush(self) -> None:
        """Send the waiting values (waiting out an outage, outside :meth:`prune`)."""
        while self.waiting:
            step, value = self.waiting[0]
            self.trial.report(value, step)
            self.sent.add(step)
            self.waiting.pop(0)


def _checkpoint(trials: Sequence[Any], payload: dict[str, Any]) -> Checkpoint | None:
    """The checkpoint of Optuna trials taken together: named by the study and trial numbers,
    tagged with those and the settings (a resumed trial keeps its number and its reports). It
    stays after training until the trials' results are stored."""
    if payload.get("checkpoints") is None:
        return None
    numbers = "-".join(str(t.number) for t in trials)
    checkpoints = Checkpoints(payload["checkpoints"], payload["every"])
    shaping = (payload["name"], numbers, payload["spec"], payload["seed"])
    name = f"tune-{payload['name']}-{numbers}"
    return checkpoints.run(name, payload["settings"], *shaping, keep=True)


def evaluate_trial(trial: Any, payload: dict[str, Any], reports: Reports | None = None) -> Outcome:
    """Train one Optuna trial with :func:`reglab.fit`, reporting validation loss each epoch
    (through ``reports``, by default straight to the trial); return its :class:`Outcome`
    (the final model's validation loss and metrics, or :data:`PRUNED`). With
    ``payload['checkpoints']`` (a folder) the trial checkpoints and a rerun resumes it."""
    import optuna

    settings = payload["settings"]
    data, model, recipe = _build(trial, payload)
    reports = reports or Reports(trial, payload["pruning"])

    def report(record: dict[str, float]) -> None:
        if reports.prune(record):
            raise optuna.TrialPruned(f"pruned at epoch {record['epoch']}")

    try:
        history = fit(
            model,
            *splits_for(settings, data, payload["seed"]),
            recipe=recipe,
            seed=payload["seed"],
            on_epoch=report,
            checkpoint=_checkpoint([trial], payload),
            **fit_options(settings, data),
            **curve_for(data),
            **board_for(settings, *_run_name(trial, payload)),
        )
    except optuna.TrialPruned:
        return PRUNED
    return _outcome(history, data)


def _run_name(trial: Any, payload: dict[str, Any]) -> tuple[str, str]:
    """An Optuna trial's TensorBoard run: ``(study name, 'trial-N')``."""
    return payload.get("name", "tune"), f"trial-{trial.number}"


def _discard(checkpoint: Checkpoint | None) -> None:
    if checkpoint is not None:
        checkpoint.remove()


def evaluate_population(
    trials: Sequence[Any], payload: dict[str, Any], reports: Sequence[Reports]
) -> list[Outcome]:
    """Train several Optuna trials together with the population engine; a pruned trial leaves
    the population at that epoch. Returns each trial's :class:`Outcome`."""
    settings = payload["settings"]
    built = [_build(t, payload) for t in trials]
    members = [
        member_for(
            data, model, recipe, payload["seed"], **board_for(settings, *_run_name(t, payload))
        )
        for t, (data, model, recipe) in zip(trials, built, strict=True)
    ]
    pruned: set[int] = set()

    def should_stop(k: int, record: dict[str, float]) -> bool:
        if reports[k].prune(record):
            pruned.add(k)
            return True
        return False

    data = built[0][0]
    histories = fit_population(
        members,
        should_stop=should_stop,
        checkpoint=_checkpoint(trials, payload),
        **fit_options(settings, data),
    )
    # a member pruned before an interruption comes back from the checkpoint as stopped by it
    return [
        PRUNED
        if k in pruned or history.message.startswith("should_stop")
        else _outcome(history, data)
        for k, history in enumerate(histories)
    ]


#: Trials a tune worker takes at once and trains as one population (engine 'population').
TUNE_POPULATION = 4


def _work(payload: dict[str, Any]) -> None:
    """A worker process: take waiting trials until none is left, ``payload['batch']`` at a
    time (trained as one population) or one at a time; first the trials handed over from dead
    workers (``payload['adopt']``), which beat from the start and resume from their
    checkpoints. A finished outcome is kept in the checkpoint folder until it is stored."""
    import optuna

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(
        payload["storage"], Path(payload["out"]), retry=payload["retry"], patient=True
    )
    study = optuna.load_study(
        study_name=payload["name"],
        storage=storage,
        sampler=optuna.samplers.TPESampler(),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=5),
    )
    beats = Heartbeats(storage)
    adopted = [[adopt(study, i) for i in group] for group in payload.get("adopt", [])]
    for group in adopted:  # never failed as stale while they wait their turn here
        beats.start(group)
    try:
        while not stop_requested():
            fail_stale(study)  # other workers' stale trials (this worker's all beat)
            if adopted:
                trials = adopted.pop(0)
            else:
                trials = []
                while len(trials) < payload["batch"] and (t := claim(study)) is not None:
                    trials.append(t)
                if len(trials) > 1:  # a rerun resumes them together, from their checkpoint
                    for t in trials:
                        t.set_user_attr(BATCH_ATTR, [u.number for u in trials])
                beats.start(trials)
            if not trials:
                return
            _run_and_store(study, trials, payload)
            beats.stop(trials)
    finally:
        beats.stop()


def _kept_name(payload: dict[str, Any], trial: Any) -> str:
    return f"tune-{payload['name']}-trial{trial.number}"


def _run_and_store(study: Any, trials: list[Any], payload: dict[str, Any]) -> None:
    """Train ``trials`` (or take the outcomes kept before an outage), keep the outcomes on
    disk, store them, and then remove the checkpoint and the kept outcomes."""
    from optuna.trial import TrialState

    folder = payload.get("checkpoints")
    kept = Checkpoints(folder) if folder is not None else None
    reports = [Reports(t, payload["pruning"]) for t in trials]
    found = [
        Outcome.from_json(kept.kept_result(_kept_name(payload, t))) if kept else None
        for t in trials
    ]
    if all(o is not None for o in found):  # trained before an outage stopped their worker
        outcomes = list(found)
        for trial, report in zip(trials, reports, strict=True):
            waiting = kept.kept_result(_kept_name(payload, trial)).get("waiting", [])
            report.waiting += [(int(s), float(v)) for s, v in waiting if int(s) not in report.sent]
    else:
        try:
            if len(trials) > 1:
                outcomes = evaluate_population(trials, payload, reports)
            else:
                outcomes = [evaluate_trial(trials[0], payload, reports[0])]
        except StorageUnavailable:
            raise
        except Exception as exc:  # fails these trials, not the worker (no endless retry)
            for trial in trials:
                store_outcome(study, trial, {"error": error_line(exc)}, None, TrialState.FAIL)
            _discard(_checkpoint(trials, payload))
            return
        if kept is not None:
            for trial, outcome, report in zip(trials, outcomes, reports, strict=True):
                kept.keep_result(
                    _kept_name(payload, trial), {**outcome.to_json(), "waiting": report.waiting}
                )
    stored = True
    for trial, outcome, report in zip(trials, outcomes, reports, strict=True):
        report.flush()
        stored &= store_outcome(study, trial, outcome.attrs, outcome.value)
    if stored:
        _discard(_checkpoint(trials, payload))
        for trial in trials:
            if kept is not None:
                kept.forget_result(_kept_name(payload, trial))


@dataclass
class TuneRun:
    """What :func:`run_tune` did: the study name, the storage as shown (password masked), the
    finished trials of the whole study, the best one, and the trials of this run that failed
    with an error (its text in the ``error`` user attribute)."""

    name: str
    storage: str
    trials: list[Any]
    best: Any
    added: int
    requeued: int
    config: TuneConfig
    importances: dict[str, float] = field(default_factory=dict)
    sequential: str | None = None
    failed: list[Any] = field(default_factory=list)


def run_tune(
    config: TuneConfig,
    out: str | Path,
    workers: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> TuneRun:
    """Add ``config.trials`` trials to the study (created on first use) and run them in
    ``workers`` processes; a dead worker's trials are taken over, still running, by the next
    workers and resume from their checkpoints (``<out>/checkpoints/``). A run that was
    interrupted leaves a mark there, and its rerun finishes it instead of adding trials.
    ``notify`` hears, in one line, when the database becomes unreachable and when it is back.

    Raises:
        ConfigError: for bad settings or an unreachable storage, before any training.
        StorageUnavailable: the database stayed unreachable ``config.storage_retry`` seconds;
            every finished trial is kept (stored, or in the checkpoint folder) and rerunning
            resumes.
    """
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(out)
    study_config = dataclasses.replace(config.study, recipes={config.recipe: config.spec}, seeds=1)
    # checks data, model and the recipe before training; the reason it cannot be batched
    _, settings, _, _, _, sequential = plan(study_config, out)
    reason = sequential.get(config.recipe) if config.engine == "population" else None
    batched = config.engine == "population" and reason is None
    storage = open_storage(config.storage, out, retry=config.storage_retry, notify=notify)
    study = optuna.create_study(
        study_name=config.name, storage=storage, direction="minimize", load_if_exists=True
    )
    requeued = requeue_dead(study, adopting=True)
    first = len(study.get_trials(deepcopy=False))
    # an interrupted run leaves a mark: its rerun finishes it (adopting the trials that were
    # running, from their checkpoints) instead of adding trials
    mark = out / "checkpoints" / f"tune-{safe_name(config.name)}.json"
    before = _resume_mark(mark)
    resumed = before is not None
    added = 0 if resumed else config.trials
    for _ in range(added):
        study.enqueue_trial({}, skip_if_exists=False)
    if before is None:
        before = _finished(study)
        mark.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(mark, json.dumps({"study": config.name, "finished_before": before}))
    payload = {
        "settings": settings,
        "seed": config.seed,
        "spec": config.spec,
        "dims": config.dims,
        "pruning": config.pruning,
        "batch": TUNE_POPULATION if batched else 1,
        "storage": config.storage,
        "retry": config.storage_retry,
        "out": str(out),
        "name": config.name,
        "checkpoints": str(out / "checkpoints"),
        "every": config.study.checkpoint_every,
    }
    total = config.trials
    done_before = before

    def tick() -> None:
        if on_progress is not None:
            on_progress(min(total, _finished(study) - done_before), total)

    devices = worker_devices(settings)  # on GPUs, each worker its own (all took GPU 0)
    requeued += run_workers(_work, payload, workers, study, tick, adopt=True, devices=devices)
    mark.unlink(missing_ok=True)  # finished: the next run adds trials again
    Checkpoints(payload["checkpoints"]).clean()
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
    failed = [
        t
        for t in study.get_trials(states=(TrialState.FAIL,))
        if t.number >= first and "error" in t.user_attrs
    ]
    return TuneRun(
        config.name,
        masked(config.storage) if config.storage else str(out / "tune.journal"),
        finished,
        best,
        added,
        requeued,
        config,
        dict(importances),
        reason,
        failed,
    )


def _resume_mark(mark: Path) -> int | None:
    """The finished trials before an interrupted run began, from its mark; None if none."""
    try:
        return int(json.loads(mark.read_text())["finished_before"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def best_study_toml(run: TuneRun) -> str:
    """A study file for ``reglab compare --config``: the tuned recipe beside baseline."""
    config = run.config
    # recipes and baseline are the file's own; workers and engine are the machine's business
    skip = ("recipes", "baseline", "workers", "engine")
    study = {
        k: v for k, v in dataclasses.asdict(config.study).items() if v is not None and k not in skip
    }
    tuned = with_values(config.spec, config.dims, run.best.params)
    study["recipes"] = {"baseline": [], f"{config.recipe}_tuned": tuned}
    return tomli_w.dumps(study)


def trials_csv(run: TuneRun) -> str:
    """One row per finished trial and per trial of this run that failed: number, state,
    parameters, validation and test metrics, and the error of a failed one."""
    names = [d.name for d in run.config.dims]
    attrs = sorted({k for t in run.trials for k in t.user_attrs if k[:4] in ("val_", "test")})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", *names, "value", *attrs, "error"])
    for t in sorted([*run.trials, *run.failed], key=lambda t: t.number):
        row = [t.number, t.state.name.lower(), *(t.params.get(n, "") for n in names)]
        row += [t.value if t.value is not None else "", *(t.user_attrs.get(a, "") for a in attrs)]
        writer.writerow([*row, t.user_attrs.get("error", "")])
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
        "failed": {t.number: t.user_attrs["error"] for t in run.failed},
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
