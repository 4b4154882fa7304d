"""Studies shared by several machines through an Optuna storage (``reglab compare --storage``).

The storage is used as a queue of fixed trials: the first command to arrive adds one waiting
Optuna trial per recipe x seed (its key, recipe and seed as user attributes); every command
running the same study takes waiting trials one at a time (atomically), runs them with
:func:`reglab.lab.studies.study.run_trial`, and stores each result (JSON) on its Optuna
trial. A worker that dies leaves its trial running: on an RDB storage the heartbeat fails it
and Optuna re-queues a copy; for the journal file the command that started the worker does.
Any machine can then write the table and report from the storage: each command ends by
collecting every finished result and writing the usual outputs.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ...checkpoint import stop_requested
from ..engine.device import worker_devices
from .checkpoints import Checkpoints
from .config import StudyConfig
from .holds import hold
from .keys import Trial
from .optuna_storage import (
    STORAGE_RETRY,
    Heartbeats,
    claim,
    fail_stale,
    masked,
    open_storage,
    requeue_dead,
    run_workers,
    store_outcome,
)
from .store import check_folder, write_atomic
from .study import StudyRun, plan
from .trial import run_trial

__all__ = ["run_shared"]

_RESULT = "reglab_result"


def _by_key(study: Any, states: tuple) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for t in study.get_trials(deepcopy=False, states=states):
        if "key" in t.user_attrs:
            found.setdefault(t.user_attrs["key"], []).append(t)
    return found


def enqueue_grid(study: Any, trials: list[Trial]) -> int:
    """Add a waiting Optuna trial for every planned trial not already waiting, running or
    complete; return how many were added."""
    from optuna.trial import TrialState

    present = _by_key(study, (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE))
    added = 0
    for trial in trials:
        if trial.key not in present:
            attrs = {"key": trial.key, "recipe": trial.recipe, "seed": trial.seed}
            study.enqueue_trial({}, user_attrs=attrs, skip_if_exists=False)
            added += 1
    return added


def duplicate(study: Any, number: int, key: str) -> bool:
    """Whether the trial ``number`` (running here) repeats one of the same ``key`` that is
    complete or running with a lower number: two machines that enqueued the grid at once add
    each trial twice, and a worker that takes the second copy while the first runs elsewhere
    must not run it again. Of two copies taken at once, the lower number runs."""
    from optuna.trial import TrialState

    states = (TrialState.RUNNING, TrialState.COMPLETE)
    return any(
        t.state == TrialState.COMPLETE or t.number < number
        for t in _by_key(study, states).get(key, [])
        if t.number != number
    )


def results(study: Any) -> dict[str, dict[str, Any]]:
    """The stored result of every completed trial, by key."""
    from optuna.trial import TrialState

    out = {}
    for key, found in _by_key(study, (TrialState.COMPLETE,)).items():
        out[key] = json.loads(found[0].user_attrs[_RESULT])
    return out


def _work(payload: dict[str, Any]) -> None:
    """A worker process: run waiting trials of the study until none is left. A result is kept
    in the checkpoint folder until it is stored, so a database outage never costs a training:
    a rerun (or this worker, taking the trial's re-queued copy) stores the kept result."""
    import optuna
    from optuna.trial import TrialState

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(
        payload["storage"], Path(payload["out"]), retry=payload["retry"], patient=True
    )
    study = optuna.load_study(study_name=payload["name"], storage=storage)
    plans: dict[str, Trial] = payload["trials"]
    checkpoints: Checkpoints = payload["checkpoints"]
    beats = Heartbeats(storage)
    try:
        while not stop_requested():
            fail_stale(study)  # a no-op on the journal file, which has no heartbeat
            trial = claim(study)
            if trial is None:
                return
            key = study._storage.get_trial(trial._trial_id).user_attrs.get("key")
            twice = duplicate(study, trial.number, key)
            if key not in plans or twice:  # another study's trial, or added twice by a race
                trial.set_user_attr("skipped", "duplicate" if twice else "not in this study")
                study.tell(trial, state=TrialState.PRUNED)
                continue
            beats.start([trial])
            result = checkpoints.kept_result(plans[key])
            if result is None:  # not finished before an outage stopped its worker
                # checkpointed on this machine: a re-queued trial it takes again resumes
                result = run_trial(plans[key], checkpoints)
                checkpoints.keep_result(plans[key], result)
            hold("before_store", payload["out"])
            if store_outcome(study, trial, {_RESULT: json.dumps(result)}, 0.0):
                checkpoints.forget_trial(plans[key])
            beats.stop([trial])
    finally:
        beats.stop()


def run_shared(
    config: StudyConfig,
    out: str | Path,
    storage: str,
    study_name: str,
    on_trial: Callable[[dict[str, Any], int, int], None] | None = None,
    overwrite: bool = False,
    storage_retry: float = STORAGE_RETRY,
    notify: Callable[[str], None] | None = None,
) -> StudyRun:
    """Run the trials of ``config`` from a shared storage with this machine's workers; return
    every result finished by any machine (the others are still running elsewhere).

    Trials run one by one with :func:`reglab.fit` (the sequential engine), so the numbers are
    those of a local ``--engine sequential`` run, not of the default population engine (whose
    float sums run in another order: a few metrics differ in their last digits, up to about
    2% after many epochs). ``overwrite`` moves a study of other settings in ``out`` aside, as
    :func:`~reglab.lab.studies.study.run_study` does.

    Every call to the database waits out an outage of up to ``storage_retry`` seconds
    (``notify`` hears when one starts and ends); training goes on meanwhile, and a finished
    result waits in ``<out>/checkpoints/`` until it is stored.

    Raises:
        ConfigError: for bad settings or an unreachable storage, before training.
        StorageUnavailable: the database stayed unreachable ``storage_retry`` seconds; every
            finished result is kept and rerunning resumes.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = dataclasses.replace(config, engine="sequential")
    task, settings, recipes, trials, n_train, _ = plan(config, out)
    out = Path(out)
    trial_dir = check_folder(out, settings, overwrite)
    opened = open_storage(storage, out, owner="compare", retry=storage_retry, notify=notify)
    study = optuna.create_study(study_name=study_name, storage=opened, load_if_exists=True)
    requeued = requeue_dead(study)
    enqueue_grid(study, trials)
    payload = {
        "storage": storage,
        "out": str(out),
        "name": study_name,
        "retry": storage_retry,
        "trials": {t.key: t for t in trials},
        "checkpoints": Checkpoints(str(out / "checkpoints"), config.checkpoint_every),
    }
    total, seen = len(trials), set()

    def report() -> None:
        for key, result in results(study).items():
            if key in payload["trials"] and key not in seen:
                seen.add(key)
                write_atomic(trial_dir / payload["trials"][key].filename, json.dumps(result))
                if on_trial is not None:
                    on_trial(result, len(seen), total)

    interrupted = False
    try:
        devices = worker_devices(settings)  # on GPUs, each worker its own
        requeued += run_workers(_work, payload, config.workers, study, report, devices=devices)
    except KeyboardInterrupt:
        interrupted = True
    report()
    done = results(study)
    finished = [done[t.key] for t in trials if t.key in done]
    if not interrupted:
        payload["checkpoints"].clean()  # the folder goes once nothing of this machine is left
    return StudyRun(
        config,
        task,
        settings,
        recipes,
        finished,
        0,
        out,
        n_train,
        interrupted,
        requeued=requeued,
        shared=masked(storage),
    )
