"""The Optuna storage that ``reglab tune`` and shared ``reglab compare`` studies work on, and
the worker processes that take its trials (the search itself is :mod:`reglab.lab.studies.tune`).

Storage: by default Optuna's journal file ``<out>/tune.journal`` (several processes of one
machine may share it); or an RDB URL such as ``postgresql://user:pass@host/db``, so that several
machines work on one study. ``--trials N`` adds N waiting trials to the study; the workers of
every command working on it take waiting trials one at a time (taking one is atomic in both
storages), so nothing runs twice, and two machines each adding 5 finish 10. Rerunning continues
the study (TPE learns from every earlier trial; waiting trials of an interrupted run are taken
too). A worker that dies leaves its trial running: on an RDB storage the heartbeat marks it
failed and Optuna re-queues it; with the journal file the command that started the worker does
the same when it sees the worker gone.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import random
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...checkpoint import process_alive
from ...core import ConfigError

__all__ = ["adopt", "claim", "masked", "open_storage", "requeue_dead", "run_workers"]

JOURNAL = "tune.journal"
_WORKER_ATTR = "reglab_worker"


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy can parse: show no part after the scheme
        return url.split("://", 1)[0] + "://***" if "://" in url else url


#: How many times opening an RDB storage is tried while other processes create its tables.
SCHEMA_ATTEMPTS = 12


def open_storage(url: str | None, out: Path, owner: str = "tune") -> Any:
    """The Optuna storage: the journal file in ``out`` when ``url`` is None, else an RDB
    storage with a heartbeat (a dead worker's trial is failed and re-queued).

    Machines started together on an empty database all create Optuna's tables at once; all
    but one then fail on a table or row another created. Such an attempt is retried (up to
    ``SCHEMA_ATTEMPTS`` times, after a short random pause) and finds the tables in place.

    Raises:
        ConfigError: for a URL that cannot be reached, in one line with the password masked.
    """
    import optuna

    if url is None:
        out.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(out / JOURNAL))
        return optuna.storages.JournalStorage(backend)
    pause = random.Random(os.getpid())
    attempts = 0
    while True:
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs={"pool_pre_ping": True},
                    heartbeat_interval=5,
                    grace_period=20,
                    heartbeat_stale_trial_callback=(
                        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
                    ),
                )
        except Exception as exc:  # sqlalchemy's errors for bad URLs, drivers, hosts, passwords
            attempts += 1
            if _created_by_another(exc) and attempts < SCHEMA_ATTEMPTS:
                time.sleep(pause.uniform(0.05, 0.25) * attempts)
                continue
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            reason = reason.replace(url, masked(url))
            raise ConfigError(
                f"The 'storage' parameter of {owner} must be a database URL that can be "
                f"reached. Got {masked(url)!r} ({reason[:200]})."
            ) from None


def _created_by_another(exc: Exception) -> bool:
    """Whether ``exc`` is a table, type or row of Optuna's schema that another process created
    while this one created it too (PostgreSQL, MySQL and SQLite word it differently)."""
    import sqlalchemy

    if isinstance(exc, sqlalchemy.exc.IntegrityError):
        return True
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and "already exists" in str(exc)


def worker_id() -> str:
    """``host:pid`` of this process, stored on the trials it takes."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(study: Any) -> Any:
    """Take one waiting trial of ``study`` (atomic: the storage changes its state only if it is
    still waiting), or None when none is left."""
    import optuna
    from optuna.trial import TrialState

    storage = study._storage  # Optuna's own ask() takes waiting trials the same way
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
            trial = optuna.Trial(study, frozen._trial_id)
            trial.set_user_attr(_WORKER_ATTR, worker_id())
            return trial
    return None


def adopt(study: Any, trial_id: int) -> Any:
    """Take over a running trial of a dead worker of this host (see :func:`adoptable`): it keeps
    its number, parameters and reported values, and resumes from its checkpoint."""
    import optuna

    trial = optuna.Trial(study, trial_id)
    trial.set_user_attr(_WORKER_ATTR, worker_id())
    return trial


#: A running trial with no owner this long after it started was taken by a worker that died
#: between taking it and writing its name (the two are separate writes): it is re-queued too.
ORPHAN_SECONDS = 10.0


def _dead_owner(frozen: Any, host: str, now: datetime.datetime) -> bool:
    owner = frozen.user_attrs.get(_WORKER_ATTR, "")
    where, _, pid = owner.rpartition(":")
    if owner:
        return where == host and pid.isdigit() and not process_alive(int(pid))
    started = frozen.datetime_start or now
    return (now - started).total_seconds() > ORPHAN_SECONDS


def requeue_dead(study: Any, adopting: bool = False) -> int:
    """Fail and re-queue the running trials of workers of this host that are gone (the journal
    file has no heartbeat), and orphans (see :data:`ORPHAN_SECONDS`). Returns how many. With
    ``adopting``, a dead worker's trials that it had named stay running, for :func:`adoptable`.
    """
    from optuna.trial import TrialState

    host = socket.gethostname()
    now = datetime.datetime.now()
    count = 0
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if adopting and frozen.user_attrs.get(_WORKER_ATTR):
            continue
        dead = _dead_owner(frozen, host, now)
        if dead and study._storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL):
            attrs = {k: v for k, v in frozen.user_attrs.items() if k != _WORKER_ATTR}
            study.enqueue_trial(frozen.params, user_attrs={**attrs, "retry_of": frozen.number})
            count += 1
    return count


#: The user attribute that lists the trial numbers a worker took together (one population).
BATCH_ATTR = "reglab_batch"


def adoptable(study: Any) -> list[list[int]]:
    """The running trials of this host's dead workers, grouped as they were taken (each group
    trained as one population, and resumes from its checkpoint as one): trial ids per group."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    now = datetime.datetime.now()
    groups: dict[tuple, list[int]] = {}
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if frozen.user_attrs.get(_WORKER_ATTR) and _dead_owner(frozen, host, now):
            batch = tuple(frozen.user_attrs.get(BATCH_ATTR, [frozen.number]))
            groups.setdefault(batch, []).append(frozen._trial_id)
    return list(groups.values())


def orphans(study: Any) -> int:
    """Running trials that no worker has claimed by name (yet)."""
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return sum(1 for t in running if not t.user_attrs.get(_WORKER_ATTR))


def run_workers(
    target: Callable[[dict[str, Any]], None],
    payload: dict[str, Any],
    count: int,
    study: Any,
    tick: Callable[[], None] | None = None,
    adopt: bool = False,
    devices: Sequence[str] | None = None,
) -> int:
    """Run ``count`` worker processes of ``target(payload)`` until the study has no waiting
    trial; call ``tick`` about once a second. A dead worker's trials are failed and re-queued
    (:func:`requeue_dead`), and fresh workers take them if the others have already finished;
    with ``adopt`` they are instead handed, still running, to the next workers
    (``payload['adopt']``: groups of trial ids, see :func:`adoptable`), which resume them from
    their checkpoints. With ``devices`` (GPUs), worker ``i`` trains on ``devices[i % len]``.
    Ctrl-C: the workers are asked to stop (each running trial checkpoints at
    its next epoch end), a second Ctrl-C kills them; KeyboardInterrupt propagates.

    Returns:
        How many trials of dead workers were re-queued or adopted.
    """
    from optuna.trial import TrialState

    from ..engine.runner import stop_on_interrupt
    from ..engine.workers import context

    ctx = context()
    requeued = 0
    stop = ctx.Event()
    for _round in range(5):  # another round only for trials that dead workers left behind
        groups = adoptable(study) if adopt else []
        requeued += sum(len(g) for g in groups)
        n = max(1, count)
        procs = [
            ctx.Process(
                target=_worker,
                args=(
                    target,
                    {**payload, "adopt": groups[i::n]},
                    stop,
                    os.getpid(),
                    None if not devices else devices[i % len(devices)],
                ),
            )
            for i in range(n)
        ]
        for p in procs:
            p.start()
        try:
            with stop_on_interrupt(stop):
                while any(p.is_alive() for p in procs):
                    time.sleep(0.2)
                    if any(p.exitcode not in (None, 0) for p in procs):
                        requeued += requeue_dead(study, adopt)
                    if tick is not None:
                        tick()
                if stop.is_set():
                    raise KeyboardInterrupt
        except BaseException:
            for p in procs:
                p.kill()
            raise
        for p in procs:
            p.join()
        requeued += requeue_dead(study, adopt)
        for _wait in range(int(ORPHAN_SECONDS) + 2):  # a worker killed mid-claim
            if not orphans(study):
                break
            time.sleep(1.0)
            requeued += requeue_dead(study, adopt)
        if tick is not None:
            tick()
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting and not (adopt and adoptable(study)):
            break
    return requeued


def _worker(
    target: Callable[[dict[str, Any]], None],
    payload: dict[str, Any],
    stop: Any,
    study: int,
    device: str | None = None,
) -> None:
    """A worker process: Ctrl-C is the parent's to handle (it sets ``stop``, shared here); a
    requested stop, or the death of the parent process ``study``, ends the worker quietly once
    its running trials have checkpointed."""
    import signal

    from ...checkpoint import Interrupted, one_line_warnings, use_stop_event, watch_process
    from ..engine.device import take_device

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    take_device(device)  # its own GPU, before any CUDA work
    use_stop_event(stop)
    watch_process(study)
    one_line_warnings()
    with contextlib.suppress(Interrupted):
        target(payload)


def finite_or_inf(value: float) -> float:
    return value if math.isfinite(value) else float("inf")
