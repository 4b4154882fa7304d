"""How the lab starts its worker processes.

Where the platform has it (Linux), workers fork from a *forkserver*: one clean process that
imports the training code once (:data:`PRELOAD`), so a worker starts in milliseconds instead of
importing PyTorch and scikit-learn again (about 4 s each on two cores). :func:`warm_up` starts
that server early (the CLI calls it first), so its imports overlap the command's own start-up
and the study's pre-flight. Elsewhere workers are spawned, as before. Neither inherits the
parent's threads or CUDA state.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

__all__ = ["PRELOAD", "context", "warm_up"]

#: What the forkserver imports before it forks a worker: everything a trial needs.
PRELOAD = ["reglab.lab.studies.trial"]


def context() -> Any:
    """The multiprocessing context for the lab's workers: forkserver (with :data:`PRELOAD`)
    where available, else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def warm_up() -> None:
    """Start the forkserver now (a no-op where workers are spawned, or once it runs)."""
    ctx = context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()
