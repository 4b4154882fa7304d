"""Checkpoints: a training run's whole state, saved atomically at epoch ends, so that a run
killed at any moment continues where it was and ends with the same numbers.

:class:`Checkpoint` is what :func:`reglab.fit` (and the lab's population engine) take. It decides
*when* to save (at an epoch end, once ``every`` seconds have passed since the last save), writes
a temp file, fsyncs it and renames it over the old one (a crash never leaves half a file), and
reads it back only with ``torch.load(weights_only=True)``. A checkpoint that is truncated,
corrupt, from another run (``tag``) or from another format is named in one
:class:`CheckpointWarning` and ignored: the run starts from scratch. A write that fails (disk
full, read-only folder) warns once per process and training goes on.

:func:`request_stop` asks every run with a checkpoint to save at its next epoch end and raise
:class:`Interrupted`; the lab calls it on the first Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .core import Interval, check_param
from .errors import CheckpointWarning, one_line_warnings

__all__ = [
    "FORMAT",
    "Checkpoint",
    "CheckpointWarning",
    "Interrupted",
    "clear_stop",
    "one_line_warnings",
    "process_alive",
    "request_stop",
    "stop_requested",
    "use_stop_event",
    "watch_process",
]

#: The layout of a checkpoint file; bumped when an older one cannot be resumed from.
FORMAT = 1

_stop: Any = None  # an object with is_set()/set(), e.g. a multiprocessing.Event
_stop_local = False
_active: set[int] = set()  # the checkpoints of runs in progress in this process
_write_warned = False


class Interrupted(KeyboardInterrupt):
    """A run stopped at an epoch end because a stop was requested (:func:`request_stop`); its
    checkpoint holds everything up to that epoch. A ``KeyboardInterrupt``, so code that catches
    ``Exception`` does not swallow it."""


def use_stop_event(event: Any) -> None:
    """Share the stop flag through ``event`` (anything with ``is_set()`` and ``set()``, e.g. a
    ``multiprocessing.Event`` handed to worker processes); None for a flag of this process."""
    global _stop, _stop_local
    _stop, _stop_local = event, False


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is gone too
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def watch_process(pid: int, grace: float = 30.0, every: float = 1.0) -> threading.Thread:
    """In a worker process: once process ``pid`` (the study's own process) is gone, request a
    stop, so a running trial saves its checkpoint at its next epoch end, and end this process
    at the latest ``grace`` seconds later (as soon as no run is in progress). A worker whose
    study was killed (SIGKILL, an out-of-memory kill) then neither trains on for nothing nor
    waits forever for work that cannot come."""

    def watch() -> None:
        while process_alive(pid):
            time.sleep(every)
        request_stop()
        deadline = time.monotonic() + grace
        while _active and time.monotonic() < deadline:  # a run saving at its epoch end
            time.sleep(0.1)
        os._exit(1)

    thread = threading.Thread(target=watch, name="reglab-watch", daemon=True)
    thread.start()
    return thread


def request_stop() -> None:
    """Ask every run with a checkpoint to save at its next epoch end and raise
    :class:`Interrupted` (runs not yet started raise it at once)."""
    global _stop_local
    if _stop is not None:
        _stop.set()
    _stop_local = True


def stop_requested() -> bool:
    """Whether :func:`request_stop` was called (here or, through a shared event, elsewhere)."""
    return _stop_local or (_stop is not None and _stop.is_set())


def clear_stop() -> None:
    """Forget a stop request (the lab calls it when a study ends)."""
    global _stop_local
    _stop_local = False
    if _stop is not None and hasattr(_stop, "clear"):
        _stop.clear()


class Checkpoint:
    """Where and how often a run saves its state.

    Args:
        path: the checkpoint file (its folder is created on the first save).
        every: save at an epoch end when at least this many seconds have passed since the last
            save (or since the run started); 0 saves at every epoch end.
        tag: names the run; a file written under another tag (another run's checkpoint) is not
            resumed from. The lab uses a hash of the trial's configuration.
        keep: keep the file when the run ends (the lab removes it itself once the run's result
            is written); by default :func:`reglab.fit` removes it when training ends.

    Raises:
        ConfigError: for a negative ``every``.

    Examples:
        >>> ckpt = reglab.Checkpoint("runs/a.pt", every=30)
        >>> history = reglab.fit(model, (X, y), epochs=500, checkpoint=ckpt)  # rerun to resume
    """

    def __init__(
        self, path: str | Path, *, every: float = 5.0, tag: str = "", keep: bool = False
    ) -> None:
        check_param("Checkpoint", "every", every, Interval(float, 0, None))
        self.path, self.every, self.tag, self.keep = Path(path), float(every), str(tag), keep
        self._last = time.monotonic()
        self.saves = 0
        self.seconds = 0.0  # time spent writing, for benchmarks

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, every={self.every:g}, tag={self.tag!r})"

    def part(self, name: str) -> Checkpoint:
        """A checkpoint beside this one for a part of the run (``<stem>.<name>.pt``)."""
        child = Checkpoint(
            self.path.with_name(f"{self.path.stem}.{name}{self.path.suffix}"),
            every=self.every,
            tag=f"{self.tag}/{name}",
            keep=self.keep,
        )
        return child

    # ----------------------------------------------------------------- reading
    def load(self, kind: str) -> dict[str, Any] | None:
        """The saved state of a run of ``kind`` (``'fit'``, ``'population'``) with this tag, or
        None: no file, or one that cannot be used (then one :class:`CheckpointWarning` names it
        and why, and the run starts from scratch)."""
        self._last = time.monotonic()
        _active.add(id(self))  # a run starts: see watch_process
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            meta = json.loads(saved["meta"])
            state = saved["state"]
        except Exception as exc:  # truncated, corrupt, not a checkpoint at all
            why = f"it is unreadable ({type(exc).__name__})"
            return self._ignore(why)
        if meta.get("format") != FORMAT:
            return self._ignore(f"it has format {meta.get('format')!r}, not {FORMAT}")
        if meta.get("tag") != self.tag or meta.get("kind") != kind:
            return self._ignore("it belongs to another run")
        return state

    def _ignore(self, why: str) -> None:
        warnings.warn(
            f"checkpoint {self.path} ignored: {why}; starting this run from scratch",
            CheckpointWarning,
            stacklevel=3,
        )
        return None

    def discard(self, why: str) -> None:
        """Warn that the checkpoint could not be resumed from (``why``) and remove it."""
        self._ignore(why)
        self.remove()

    # ----------------------------------------------------------------- writing
    def update(self, kind: str, state: Callable[[], Mapping[str, Any]]) -> None:
        """At an epoch end: save ``state()`` when ``every`` seconds have passed or a stop was
        requested; after a requested stop's save, raise :class:`Interrupted`."""
        stopping = stop_requested()
        if stopping or time.monotonic() - self._last >= self.every:
            self.save(kind, state())
        if stopping:
            _active.discard(id(self))
            raise Interrupted(f"stopped at an epoch end; the checkpoint is {self.path}")

    def save(self, kind: str, state: Mapping[str, Any]) -> bool:
        """Write ``state`` atomically (temp file, fsync, rename). A failure warns once per
        process and returns False; training goes on."""
        global _write_warned
        started = time.perf_counter()
        meta = {"format": FORMAT, "tag": self.tag, "kind": kind, "time": time.time()}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                torch.save({"meta": json.dumps(meta), "state": dict(state)}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if not _write_warned:
                _write_warned = True
                warnings.warn(
                    f"checkpoint {self.path} could not be written ({exc.strerror or exc}); "
                    "training goes on without checkpoints",
                    CheckpointWarning,
                    stacklevel=3,
                )
            return False
        finally:
            self._last = time.monotonic()
            self.seconds += time.perf_counter() - started
        self.saves += 1
        return True

    def remove(self) -> None:
        """Delete the file (and its parts), if any."""
        for path in [self.path, *self.path.parent.glob(f"{self.path.stem}.*{self.path.suffix}")]:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def done(self) -> None:
        """The run is no longer in progress in this process (its file stays)."""
        _active.discard(id(self))

    def finished(self) -> None:
        """The run ended: remove the file unless ``keep``."""
        self.done()
        if not self.keep:
            self.remove()


def generator_states(generators: list[torch.Generator]) -> list[torch.Tensor]:
    """Each generator's state (a CPU byte tensor, also for CUDA generators)."""
    return [g.get_state() for g in generators]


def set_generator_states(generators: list[torch.Generator], states: list[torch.Tensor]) -> None:
    """Restore :func:`generator_states` output; the lists must have the same length."""
    if len(generators) != len(states):
        raise ValueError(f"{len(states)} generator states for {len(generators)} generators")
    for g, s in zip(generators, states, strict=True):
        g.set_state(s)
