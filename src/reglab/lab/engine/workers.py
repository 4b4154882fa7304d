"""How the lab starts its worker processes.

Where the platform has it (Linux), workers fork from a *forkserver*: one clean process that
imports the training code once (:data:`PRELOAD`), so a worker starts in milliseconds instead of
importing PyTorch and dynamo again (about 4 s each on two cores). :func:`warm_up` starts that
server early (the CLI calls it first), so its imports overlap the command's own start-up and
the study's pre-flight; scikit-learn is not among them (a study hands its workers their data
sets: :func:`reglab.lab.studies.seams.datasets_to_hand`). Elsewhere workers are spawned, as
before. Neither inherits the parent's threads or CUDA state.

:func:`tune_allocator` keeps the C allocator from handing freed memory back to the system after
every large tensor: PyTorch's CPU tensors come straight from ``malloc``, and with glibc's
defaults an evaluation pass's ~10 MB activations were mapped and faulted in afresh on every
call (measured on the default study: one evaluation 45 ms before, 34 ms after). The lab's own
processes call it (its workers, and the ``reglab`` command through :func:`warm_up`); a
library user's process is left as it is.
"""

from __future__ import annotations

import ast
import ctypes
import ctypes.util
import functools
import multiprocessing
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "PRELOAD",
    "context",
    "ready",
    "start_server",
    "tune_allocator",
    "unguarded_main",
    "warm_up",
]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters

#: What the forkserver imports before it forks a worker: everything a trial needs. PyTorch
#: imports ``torch._dynamo`` only when the first optimizer is built (its ``__init__`` is wrapped
#: to keep dynamo out), which cost every worker 2 s before its first epoch.
PRELOAD = ["reglab.lab.studies.trial", "torch._dynamo"]


def context() -> Any:
    """The multiprocessing context for the lab's workers: forkserver (with :data:`PRELOAD`)
    where available, else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


_started = False  # this process started the forkserver (start_server)


def _is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` (either way round)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    texts = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and texts == ["__main__"]


@functools.lru_cache(maxsize=8)
def _top_level(path: str) -> tuple[tuple[int, int, bool], ...]:
    """The top-level statements of a script: (first line, last line, is a main guard)."""
    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, SyntaxError, ValueError):
        return ()
    return tuple((n.lineno, n.end_lineno or n.lineno, _is_main_guard(n)) for n in tree.body)


def unguarded_main() -> str | None:
    """``'script.py, line 3'`` when this call comes from the top-level code of the
    ``__main__`` script outside an ``if __name__ == "__main__":`` block, else None.

    Worker processes import the main script again (spawn does; so does the forkserver, which
    loads it at its start): such a call would run the study again inside every worker, which
    then dies (``BrokenProcessPool``). The lab runs those trials in this process instead.
    Notebooks, ``python -c``, a package's ``__main__`` (``python -m package``, which
    multiprocessing does not run again) and guarded scripts return None.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path:
        return None
    name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if name == "__main__" or name.endswith(".__main__"):
        return None  # a package's __main__ (python -m reglab): multiprocessing never reruns it
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals is main.__dict__ and frame.f_code.co_name == "<module>":
            line = frame.f_lineno
            for first, last, guard in _top_level(str(path)):
                if first <= line <= last:
                    return None if guard else f"{Path(path).name}, line {line}"
            return None
        frame = frame.f_back
    return None


def warm_up() -> None:
    """Ready this process, one of the lab's own, for a study: :func:`tune_allocator`, and
    :func:`start_server` now. The ``reglab`` command calls it first."""
    tune_allocator()
    start_server()


def start_server() -> None:
    """Start the forkserver (with :data:`PRELOAD`) if it is not running; a no-op where
    workers are spawned. A study's pool calls it, and :func:`warm_up`.

    Examples:
        >>> start_server()  # returns at once; the server imports PRELOAD in the background
        >>> ready()
        True
    """
    global _started
    if context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()
        _started = True


def ready() -> bool:
    """Whether a worker process starts here in milliseconds: this process has started the
    forkserver (:func:`start_server`), so a new worker is a fork of a process that has already
    imported :data:`PRELOAD`. Where workers are spawned, or before, a worker would spend
    seconds importing PyTorch: False.

    Examples:
        >>> ready()  # False in a fresh process; True once warm_up() or a study has run
        False
    """
    return _started


def tune_allocator() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse (trim threshold 1 GiB, top pad
    64 MiB, mmap threshold 32 MiB, its largest): large tensors then stop paying for fresh
    pages on every allocation. Resident memory stays at its high-water mark instead of
    shrinking.

    Returns:
        Whether it applied (False on other platforms or C libraries, where it does nothing).

    Examples:
        >>> tune_allocator()  # first thing in a process of the lab's own
        True
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    settings = ((_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20), (_M_MMAP_THRESHOLD, 32 << 20))
    return all(mallopt(option, value) == 1 for option, value in settings)
