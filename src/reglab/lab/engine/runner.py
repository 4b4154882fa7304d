"""Run a study's jobs (single trials, or populations of trials) in worker processes.

A job is ``(function, payload)``: ``run_trial(trial)`` returns one result,
``run_population(trials, report)`` a list. Workers are processes with one thread each, started
from the forkserver of :mod:`reglab.lab.engine.workers` (or spawned where there is none);
populations report finished epochs through a queue, so the progress display moves during a
long population. With one worker everything runs in this process.

Ctrl-C: the first one asks every running trial to save its checkpoint at its next epoch end and
stop (:func:`reglab.checkpoint.request_stop`, shared with the workers through an event; workers
ignore SIGINT themselves), jobs not yet started are cancelled, and ``KeyboardInterrupt`` is
raised once the running ones have stopped. A second Ctrl-C kills the workers at once.
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_module
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import torch

from ...checkpoint import (
    Interrupted,
    clear_stop,
    one_line_warnings,
    request_stop,
    stop_requested,
    use_stop_event,
    watch_process,
)
from .device import assign, take_device
from .workers import context, start_server, tune_allocator, unguarded_main

__all__ = ["Job", "run_jobs"]

Job = tuple[Callable[..., Any], Any]
_progress: Any = None  # the worker's queue of (job number, epoch)


STOPPING = (
    "\nreglab: stopping: each running trial saves a checkpoint at its next epoch end "
    "(press Ctrl-C again to quit at once)\n"
)


@contextlib.contextmanager
def stop_on_interrupt(event: Any = None) -> Iterator[None]:
    """While inside: the first SIGINT requests a stop (shared through ``event`` with worker
    processes), the second raises ``KeyboardInterrupt`` at once. Outside the main thread it
    changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    use_stop_event(event)
    presses = 0

    def handler(signum: int, frame: Any) -> None:
        nonlocal presses
        presses += 1
        if presses > 1:
            raise KeyboardInterrupt
        request_stop()
        sys.stderr.write(STOPPING)
        sys.stderr.flush()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        clear_stop()
        use_stop_event(None)


def _init_worker(progress: Any, devices: Any, stop: Any, study: int, prepare: Job | None) -> None:
    global _progress
    _progress = progress
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; see stop_on_interrupt
    use_stop_event(stop)
    watch_process(study)  # the study's process killed: checkpoint and end
    one_line_warnings()
    tune_allocator()
    torch.set_num_threads(1)
    if devices is not None:  # one GPU per worker: take the next one, and make it current
        take_device(devices.get())
    if prepare is not None:
        function, payload = prepare
        function(payload)


def _call(number: int, function: Callable[..., Any], payload: Any) -> Any:
    if isinstance(payload, list):
        return function(payload, lambda epoch: _progress.put((number, epoch)))
    return function(payload)


def _as_list(result: Any) -> list[dict[str, Any]]:
    return result if isinstance(result, list) else [result]


def run_jobs(
    jobs: Sequence[Job],
    workers: int,
    finish: Callable[[dict[str, Any]], None],
    on_epoch: Callable[[int, int], None] | None = None,
    devices: Sequence[str] | None = None,
    prepare: Job | None = None,
) -> None:
    """Run every job; call ``finish`` with each trial's result as its job ends and
    ``on_epoch(job number, epoch)`` as populations progress. With ``devices`` (GPUs), worker
    ``i`` trains on ``devices[i]``. ``prepare`` is ``(function, payload)``, called as
    ``function(payload)`` once in each worker process before its first job (not in this
    process: it already holds what the payload carries). On Ctrl-C (see the module's note) the
    running trials checkpoint and stop, the jobs not started are cancelled, and
    KeyboardInterrupt propagates; finished results have been handed over."""
    report = on_epoch or (lambda number, epoch: None)
    if unguarded_main() is not None:  # workers would run the script's study again
        workers = 1
    if workers <= 1:
        if devices:
            assign(devices[0])
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same numbers as in a worker
        try:
            with stop_on_interrupt():
                _run_here(jobs, finish, report)
        finally:
            torch.set_num_threads(threads)
        return
    _run_pool(jobs, workers, finish, report, devices, prepare)


def _run_here(
    jobs: Sequence[Job],
    finish: Callable[[dict[str, Any]], None],
    report: Callable[[int, int], None],
) -> None:
    for number, (function, payload) in enumerate(jobs):
        if isinstance(payload, list):
            result = function(payload, lambda epoch, n=number: report(n, epoch))
        else:
            result = function(payload)
        for r in _as_list(result):
            finish(r)


def _run_pool(
    jobs: Sequence[Job],
    workers: int,
    finish: Callable[[dict[str, Any]], None],
    report: Callable[[int, int], None],
    devices: Sequence[str] | None,
    prepare: Job | None,
) -> None:
    start_server()
    ctx = context()
    progress = ctx.Queue()
    stop = ctx.Event()
    queue = None
    if devices:
        queue = ctx.Queue()
        for device in devices[:workers]:
            queue.put(device)
    interrupted = False
    with (
        ProcessPoolExecutor(
            workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(progress, queue, stop, os.getpid(), prepare),
        ) as pool,
        stop_on_interrupt(stop),
    ):
        futures: dict[Future, int] = {
            pool.submit(_call, number, function, payload): number
            for number, (function, payload) in enumerate(jobs)
        }
        try:
            while futures:
                finished, _ = wait(futures, timeout=0.25, return_when=FIRST_COMPLETED)
                _drain(progress, report)
                if stop_requested() and not interrupted:
                    interrupted = True
                    for future in futures:
                        future.cancel()  # the jobs not started; running ones checkpoint
                for future in finished:
                    futures.pop(future)
                    if future.cancelled():
                        continue
                    try:
                        results = future.result()
                    except Interrupted:
                        interrupted = True
                        continue
                    for r in _as_list(results):
                        finish(r)
        except BaseException:  # a second Ctrl-C, or an error: stop every worker now
            for future in futures:
                future.cancel()
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()
            raise
        finally:
            _drain(progress, report)
    if interrupted:
        raise KeyboardInterrupt


def _drain(progress: Any, report: Callable[[int, int], None]) -> None:
    while True:
        try:
            number, epoch = progress.get_nowait()
        except (queue_module.Empty, OSError, ValueError):
            return
        report(number, epoch)
