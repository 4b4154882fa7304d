"""An Optuna storage that waits out a database outage (``--storage-retry SECONDS``).

A shared study talks to its database all the time: the command polls it for finished trials,
each worker takes trials from it, beats its heartbeat and stores results. A restart of the
database, a failover or a dropped connection used to crash every one of those calls (with
Optuna's misleading "exceeding max length" error). :class:`RetryingStorage` wraps the storage
and retries every call that fails for a *transient* reason (see :func:`transient`) with
exponential backoff, for up to ``retry`` seconds of outage, then raises
:class:`~reglab.errors.StorageUnavailable` (one line, the password masked). Any other error
(a bad value, a trial already finished) is raised at once, unchanged.

Two calls do not wait:

- a heartbeat that fails is skipped (the next one comes ``heartbeat_interval`` seconds later),
  so the training it accompanies never stops for the database;
- inside :meth:`RetryingStorage.no_wait` a transient failure raises :class:`Unreachable` at
  once: a tune trial's per-epoch report keeps its values in memory and trains on.

Retrying a write is safe when the failed attempt changed nothing, which is how PostgreSQL ends
the transactions of a connection it drops. The one exception, a write that committed but whose
reply was lost, ends in states the lab already handles: a trial taken twice is skipped as a
duplicate, a claim that reads "taken" becomes an orphan that is re-queued, and a result told
twice is recognised as stored (``tell(..., skip_if_finished=True)``).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat

from ...errors import StorageUnavailable

__all__ = ["RetryingStorage", "Unreachable", "transient"]

#: Lower-case phrases of the errors that mean "the database cannot be reached right now"
#: (PostgreSQL and psycopg, MySQL, SQLite, the network), as opposed to a bad query or value.
TRANSIENT = (
    "connection refused",
    "could not connect",
    "server closed the connection",
    "terminating connection",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "connection reset",
    "connection timed out",
    "timeout expired",
    "no connection to the server",
    "connection is closed",
    "connection already closed",
    "the connection is lost",
    "broken pipe",
    "consuming input failed",
    "could not receive data",
    "could not send data",
    "ssl connection has been closed",
    "network is unreachable",
    "no route to host",
    "temporary failure in name resolution",
    "lost connection",
    "server has gone away",
    "can't connect",
    "database is locked",
)

#: The first pause after a failed call, and the longest (seconds); each pause doubles.
FIRST_PAUSE, LONGEST_PAUSE = 0.2, 5.0


class Unreachable(Exception):
    """Raised inside :meth:`RetryingStorage.no_wait` when the database cannot be reached."""


def transient(exc: BaseException) -> str | None:
    """Why ``exc`` (or an exception it was raised from) is a transient failure to reach the
    database, as one short line; None when it is not one (a bad query, a finished trial).

    Examples:
        >>> transient(ConnectionRefusedError("[Errno 111] Connection refused"))
        'Connection refused'
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        lower = text.lower()
        for phrase in TRANSIENT:
            at = lower.find(phrase)
            if at >= 0:
                return text[at : at + len(phrase)]
        if getattr(current, "connection_invalidated", False):  # sqlalchemy: a dropped link
            return "connection lost"
        current = current.__cause__ or current.__context__
    return None


def _forward(name: str) -> Callable[..., Any]:
    def method(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, args, kwargs)

    method.__name__ = name
    return method


class _QuietOutage(logging.Filter):
    """Drops Optuna's own log lines about a database it cannot reach (e.g. "Caught an error
    from sqlalchemy: ... terminating connection ... Falling back to a slower alternative",
    which misreads a dropped connection as a query too long): the retrying storage says what
    happens, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return transient(Exception(record.getMessage())) is None


_QUIET = _QuietOutage()


class RetryingStorage(BaseStorage, BaseHeartbeat):
    """An Optuna storage (and heartbeat) that retries the transient failures of ``inner``.

    Every method of Optuna's ``BaseStorage`` and ``BaseHeartbeat`` is forwarded to ``inner``;
    a transient failure (:func:`transient`) is retried with exponential backoff (0.2 s, 0.4 s,
    ... at most 5 s between attempts) while the outage has lasted less than ``retry`` seconds.
    An outage starts at the first failure of any call and ends at the first success.

    Args:
        inner: the storage to wrap (Optuna's cached RDB storage).
        where: the database as shown to the user (password masked).
        retry: seconds of outage to wait out before :class:`~reglab.errors.StorageUnavailable`.
        notify: called with one line when the database becomes unreachable and when it is
            back (None: silent, as in worker processes).

    Examples:
        >>> storage = RetryingStorage(cached, "postgresql://ann:***@db/lab", retry=60)
        >>> study = optuna.load_study(study_name="grid", storage=storage)
    """

    def __init__(
        self,
        inner: Any,
        where: str,
        retry: float,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self._inner, self.where, self.retry, self._notify = inner, where, float(retry), notify
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._reason = ""
        self._local = threading.local()
        rdb_log = logging.getLogger("optuna.storages._rdb.storage")
        if _QUIET not in rdb_log.filters:
            rdb_log.addFilter(_QUIET)

    def _call(self, name: str, args: tuple, kwargs: dict) -> Any:
        pause = FIRST_PAUSE
        while True:
            try:
                result = getattr(self._inner, name)(*args, **kwargs)
            except Exception as exc:
                reason = transient(exc)
                if reason is None:
                    raise
                if getattr(self._local, "no_wait", False):
                    raise Unreachable(reason) from exc
                waited = self._failed(reason)
                if waited >= self.retry:
                    raise self.unavailable() from None
                time.sleep(min(pause, self.retry - waited))
                pause = min(2 * pause, LONGEST_PAUSE)
                continue
            self._reached()
            return result

    def _failed(self, reason: str) -> float:
        """Record a failure; return how long the database has been unreachable."""
        now = time.monotonic()
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = now
            since, self._reason = self._down_since, reason
        if first and self._notify is not None:
            self._notify(
                f"the database {self.where} cannot be reached ({reason}); retrying for up to "
                f"{self.retry:g} s"
            )
        return now - since

    def _reached(self) -> None:
        if self._down_since is None:  # the common case, without the lock
            return
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None and self._notify is not None:
            back = time.monotonic() - since
            self._notify(f"the database {self.where} is back after {back:.0f} s")

    def unavailable(self) -> StorageUnavailable:
        """The error that ends a command after ``retry`` seconds of outage."""
        return StorageUnavailable(self.where, self.retry, self._reason or "unreachable")

    def record_heartbeat(self, trial_id: int) -> None:
        """Beat once; a transient failure skips this beat (the training goes on)."""
        try:
            self._inner.record_heartbeat(trial_id)
        except Exception as exc:
            if transient(exc) is None:
                raise

    @contextlib.contextmanager
    def no_wait(self) -> Iterator[None]:
        """Inside, in this thread, a transient failure raises :class:`Unreachable` at once."""
        before = getattr(self._local, "no_wait", False)
        self._local.no_wait = True
        try:
            yield
        finally:
            self._local.no_wait = before

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a RetryingStorage is not sent to other processes; send its URL")


def _add_forwarders() -> None:
    """A retrying method for every other method of Optuna's storage and heartbeat interfaces."""
    own = set(vars(RetryingStorage))
    for base in (BaseStorage, BaseHeartbeat):
        for name, value in vars(base).items():
            if callable(value) and not name.startswith("__") and name not in own:
                setattr(RetryingStorage, name, _forward(name))
    abc.update_abstractmethods(RetryingStorage)


_add_forwarders()
