"""Run a study's jobs (single trials, or populations of trials) in worker processes.

A job is ``(function, payload)``: ``run_trial(trial)`` returns one result,
``run_population(trials, report)`` a list. Workers are spawned processes with one thread each;
populations report finished epochs through a queue, so the progress display moves during a
long population. With one worker everything runs in this process.
"""

from __future__ import annotations

import queue as queue_module
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any

import torch

from .device import assign

__all__ = ["Job", "run_jobs"]

Job = tuple[Callable[..., Any], Any]
_progress: Any = None  # the worker's queue of (job number, epoch)


def _init_worker(progress: Any, devices: Any) -> None:
    global _progress
    _progress = progress
    torch.set_num_threads(1)
    if devices is not None:  # one GPU per worker: take the next one
        assign(devices.get())


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
) -> None:
    """Run every job; call ``finish`` with each trial's result as its job ends and
    ``on_epoch(job number, epoch)`` as populations progress. With ``devices`` (GPUs), worker
    ``i`` trains on ``devices[i]``. On Ctrl-C the jobs not started are cancelled and
    KeyboardInterrupt propagates; finished results have been handed over."""
    report = on_epoch or (lambda number, epoch: None)
    if workers <= 1:
        if devices:
            assign(devices[0])
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the same numbers as in a worker
        try:
            for number, (function, payload) in enumerate(jobs):
                if isinstance(payload, list):
                    result = function(payload, lambda epoch, n=number: report(n, epoch))
                else:
                    result = function(payload)
                for r in _as_list(result):
                    finish(r)
        finally:
            torch.set_num_threads(threads)
        return
    ctx = get_context("spawn")
    progress = ctx.Queue()
    queue = None
    if devices:
        queue = ctx.Queue()
        for device in devices[:workers]:
            queue.put(device)
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(progress, queue)
    ) as pool:
        futures: dict[Future, int] = {
            pool.submit(_call, number, function, payload): number
            for number, (function, payload) in enumerate(jobs)
        }
        try:
            while futures:
                finished, _ = wait(futures, timeout=0.25, return_when=FIRST_COMPLETED)
                _drain(progress, report)
                for future in finished:
                    futures.pop(future)
                    for r in _as_list(future.result()):
                        finish(r)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            _drain(progress, report)


def _drain(progress: Any, report: Callable[[int, int], None]) -> None:
    while True:
        try:
            number, epoch = progress.get_nowait()
        except (queue_module.Empty, OSError, ValueError):
            return
        report(number, epoch)
