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
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...checkpoint import process_alive
from ...core import ConfigError
from ...errors import StorageUnavailable
from .fields import STORAGE_SETTINGS

__all__ = [
    "adopt",
    "claim",
    "fail_stale",
    "masked",
    "open_storage",
    "requeue_dead",
    "run_workers",
]

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
#: Seconds a shared study waits out a database outage by default (``--storage-retry``).
STORAGE_RETRY: float = STORAGE_SETTINGS["storage_retry"].default
#: Seconds between two heartbeats of a running trial on an RDB storage.
HEARTBEAT_INTERVAL = 5
#: A running trial whose last heartbeat is older than this (plus the outage a worker waits out,
#: during which it cannot beat) belongs to a dead worker: it is failed and re-queued.
#: ``REGLAB_HEARTBEAT_GRACE`` (seconds) replaces the whole period, e.g. in tests.
HEARTBEAT_GRACE = 20
GRACE_VARIABLE = "REGLAB_HEARTBEAT_GRACE"


def heartbeat_timing(retry: float) -> tuple[int, int]:
    """The heartbeat interval and grace period (seconds) of a storage that waits ``retry``
    seconds through an outage: a worker cut off for that long is not taken for dead.

    Raises:
        ConfigError: ``REGLAB_HEARTBEAT_GRACE`` is not a whole number of seconds of at least 2.
    """
    given = os.environ.get(GRACE_VARIABLE)
    if given is None:
        return HEARTBEAT_INTERVAL, HEARTBEAT_GRACE + math.ceil(retry)
    if not given.isdigit() or int(given) < 2:
        raise ConfigError(
            f"The '{GRACE_VARIABLE}' environment variable must be a whole number of seconds, "
            f"at least 2. Got {given!r}."
        )
    grace = int(given)
    return max(1, min(HEARTBEAT_INTERVAL, grace // 3)), grace


def open_storage(
    url: str | None,
    out: Path,
    owner: str = "tune",
    retry: float = STORAGE_RETRY,
    patient: bool = False,
    notify: Callable[[str], None] | None = None,
) -> Any:
    """The Optuna storage: the journal file in ``out`` when ``url`` is None, else an RDB
    storage with a heartbeat (a dead worker's trial is failed and re-queued), wrapped in a
    :class:`~reglab.lab.studies.retrying.RetryingStorage` that waits out an outage of up to
    ``retry`` seconds in every later call.

    Machines started together on an empty database all create Optuna's tables at once; all
    but one then fail on a table or row another created. Such an attempt is retried (up to
    ``SCHEMA_ATTEMPTS`` times, after a short random pause) and finds the tables in place.

    Args:
        url: the database URL, or None for the journal file.
        out: the output folder (the journal file's).
        owner: the command named in an error.
        retry: seconds of outage each later call waits out.
        patient: the opening itself also waits out an outage (a worker process, whose command
            reached the database a moment ago); else a database that cannot be reached now is
            a bad URL.
        notify: called with one line when an outage starts and ends (None: silent).

    Raises:
        ConfigError: for a URL that cannot be reached, in one line with the password masked.
        StorageUnavailable: ``patient``, and the database stayed unreachable ``retry`` seconds.
    """
    import optuna

    from .retrying import RetryingStorage, transient

    if url is None:
        out.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(out / JOURNAL))
        return optuna.storages.JournalStorage(backend)
    interval, grace = heartbeat_timing(retry)
    pause = random.Random(os.getpid())
    attempts = 0
    started = time.monotonic()
    while True:
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = optuna.storages.RDBStorage(
                    url,
                    engine_kwargs={"pool_pre_ping": True},
                    heartbeat_interval=interval,
                    grace_period=grace,
                    heartbeat_stale_trial_callback=(
                        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
                    ),
                )
            cached = optuna.storages.get_storage(rdb)  # Optuna's cache of finished trials
            return RetryingStorage(cached, masked(url), retry, notify)
        except Exception as exc:  # sqlalchemy's errors for bad URLs, drivers, hosts, passwords
            attempts += 1
            if _created_by_another(exc) and attempts < SCHEMA_ATTEMPTS:
                time.sleep(pause.uniform(0.05, 0.25) * attempts)
                continue
            reason = transient(exc)
            if patient and reason is not None:
                if time.monotonic() - started >= retry:
                    raise StorageUnavailable(masked(url), retry, reason) from None
                time.sleep(min(1.0, 0.2 * attempts))
                continue
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            reason = reason.replace(url, masked(url))
            raise ConfigError(
                f"The 'storage' parameter of {owner} must be a database URL that can be "
                f"reached. Got {masked(url)!r} ({reason[:200]})."
            ) from None


def storage_note(line: str) -> None:
    """Print a line about a shared study's database (an outage began or ended) on stderr."""
    print(f"reglab: warning: {line}", file=sys.stderr, flush=True)


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


def fail_stale(study: Any) -> None:
    """Fail the running trials whose heartbeat stopped (a dead worker's, on any machine) and
    re-queue each: Optuna's ``fail_stale_trials``, which reglab calls on purpose, without its
    warning that the feature is experimental. A storage without heartbeats (the journal file)
    is left as it is."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def beat(storage: Any, trial_ids: Sequence[int]) -> None:
    """Record a heartbeat of each trial now (on a storage with heartbeats): trials handed over
    from a dead worker are then not failed as stale before their new worker beats for them."""
    if hasattr(storage, "record_heartbeat"):
        for trial_id in trial_ids:
            storage.record_heartbeat(trial_id)


class Heartbeats:
    """The heartbeat threads of the trials a worker holds, from when it takes them (a trial
    handed over and waiting its turn keeps beating) until their results are stored."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self.threads: dict[int, Any] = {}

    def start(self, trials: Sequence[Any]) -> None:
        from optuna.storages._heartbeat import get_heartbeat_thread  # as study.optimize does

        for trial in trials:
            if trial._trial_id not in self.threads:
                thread = get_heartbeat_thread(trial._trial_id, self.storage)
                thread.start()
                self.threads[trial._trial_id] = thread

    def stop(self, trials: Sequence[Any] | None = None) -> None:
        ids = list(self.threads) if trials is None else [t._trial_id for t in trials]
        for trial_id in ids:
            thread = self.threads.pop(trial_id, None)
            if thread is not None:
                thread.join()


def store_outcome(
    study: Any, trial: Any, attrs: dict[str, Any], value: float | None, state: Any = None
) -> bool:
    """Store a finished trial: its user attributes, then its value (None: pruned, or
    ``state``, e.g. failed). Returns whether the trial is now finished in that state; False
    when another process had failed it first (the caller's kept result then waits for the
    re-queued copy)."""
    from optuna.trial import TrialState

    for key, item in attrs.items():
        trial.set_user_attr(key, item)
    if state is None:
        state = TrialState.PRUNED if value is None else TrialState.COMPLETE
    # skip_if_finished: a retried tell whose first attempt was stored finds the trial finished
    study.tell(trial, value, state=state, skip_if_finished=True)
    return study._storage.get_trial(trial._trial_id).state == state


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
        beat(study._storage, [i for g in groups for i in g])  # not stale before a worker beats
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
                    if any(p.exitcode == STORAGE_EXIT for p in procs):
                        raise _unavailable(study)
                    if any(p.exitcode not in (None, 0) for p in procs):
                        requeued += requeue_dead(study, adopt)
                    if tick is not None:
                        tick()
                if stop.is_set():
                    raise KeyboardInterrupt
                if any(p.exitcode == STORAGE_EXIT for p in procs):
                    raise _unavailable(study)
        except StorageUnavailable:
            _wind_down(procs, stop, getattr(study._storage, "retry", STORAGE_RETRY))
            raise
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


#: The exit status of a worker process that gave up on an unreachable database.
STORAGE_EXIT = 75


def _unavailable(study: Any) -> StorageUnavailable:
    """The error of a study whose database a worker (or this process) gave up on."""
    storage = study._storage
    if hasattr(storage, "unavailable"):
        return storage.unavailable()
    return StorageUnavailable("of the study", STORAGE_RETRY, "unreachable")


def _wind_down(procs: Sequence[Any], stop: Any, retry: float) -> None:
    """Ask the workers to stop (each saves its running trials' checkpoints at the next epoch
    end, or keeps a finished result it could not store) and wait for them; kill those still
    running after a worker's own wait on the database could have ended."""
    stop.set()
    deadline = time.monotonic() + retry + 30.0
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()


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
    try:
        with contextlib.suppress(Interrupted):
            target(payload)
    except StorageUnavailable:
        sys.exit(STORAGE_EXIT)  # the command says so, in one line


def finite_or_inf(value: float) -> float:
    return value if math.isfinite(value) else float("inf")
