"""What :func:`reglab.fit` and the lab's population engine share of a training loop, written
once: closing an epoch (:func:`close_epoch`: its record, divergence, the recipe's decision to
stop) and resuming from a checkpoint (:func:`resume`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

from .checkpoint import Checkpoint, Interrupted, stop_requested
from .core import Regularizer
from .stopping import stop_message

__all__ = ["close_epoch", "resume"]


def close_epoch(
    history: Any,
    record: dict[str, float],
    recipe: Regularizer,
    *,
    lr: float,
    seconds: float,
    divergence_threshold: float | None = None,
    on_record: Callable[[Mapping[str, float]], None] | None = None,
    agree: Callable[[bool], bool] = bool,
) -> bool:
    """Close one epoch: check it for divergence, complete and keep its record, and ask the
    recipe whether to stop. True when training ends here.

    A non-finite value in ``record`` (R² excepted: it is NaN for a constant target) or an
    ``objective`` above ``divergence_threshold`` ends training with ``history.status``
    ``'diverged'`` and the reason in ``history.message``; that record is not kept. Otherwise
    ``record`` gains ``penalty``, ``lr``, the recipe's ``logs()`` and ``seconds``, in that
    order, is appended to ``history.epochs`` and handed to ``on_record``; then
    ``recipe.on_epoch_end(record)`` (through ``agree``, which reduces the decision across
    processes in distributed training) may end training with status ``'stopped_early'`` and
    the stopper's message.

    Args:
        history: the run's :class:`~reglab.History` (``epochs``, ``status``, ``message``),
            updated in place.
        record: ``epoch``, ``objective`` and the metrics measured after the epoch.
        recipe: the run's regularizer.
        lr: the learning rate to record.
        seconds: the epoch's wall time to record.
        divergence_threshold: the largest ``objective`` that does not count as diverged.
        on_record: called with the completed record (progress display).
        agree: the stop decision as every process agrees on it.

    Returns:
        True when training ends at this epoch.

    Examples:
        >>> if close_epoch(history, record, recipe, lr=1e-3, seconds=0.2):
        ...     break
    """
    epoch = record["epoch"]
    bad = [k for k, v in record.items() if not math.isfinite(v) and not k.endswith("r2")]
    if bad:
        history.status = "diverged"
        history.message = f"{bad[0]} became {record[bad[0]]} at epoch {epoch}"
        return True
    if divergence_threshold is not None and record["objective"] > divergence_threshold:
        history.status = "diverged"
        history.message = (
            f"objective {record['objective']:.6g} exceeded divergence_threshold="
            f"{divergence_threshold} at epoch {epoch}"
        )
        return True
    record["penalty"] = recipe.penalty()
    record["lr"] = lr
    record.update(recipe.logs())
    record["seconds"] = seconds
    history.epochs.append(record)
    if on_record is not None:
        on_record(record)
    if agree(recipe.on_epoch_end(record)):
        history.status = "stopped_early"
        history.message = stop_message(recipe) or f"a regularizer stopped at epoch {epoch}"
        return True
    return False


def resume(
    checkpoint: Checkpoint,
    kind: str,
    state: Callable[[int], dict[str, Any]],
    restore: Callable[[Mapping[str, Any]], Any],
) -> Mapping[str, Any] | None:
    """Restore the run saved in ``checkpoint`` under ``kind`` when it fits this run.

    A checkpoint that does not fit (another model, a changed recipe) is named in a warning and
    removed, and the run is put back in its initial state (``state(0)``, taken first): never
    left half-restored.

    Args:
        checkpoint: where the run saves.
        kind: what kind of run saved it (``'fit'``, ``'population'``).
        state: the run's state after an epoch, as it saves it.
        restore: loads such a state into the run; raises when it does not fit.

    Returns:
        The restored state (its ``'epoch'`` is the last epoch it holds), or None when the run
        starts from scratch.

    Raises:
        Interrupted: a stop was requested before training started.

    Examples:
        >>> saved = resume(checkpoint, "fit", state, restore)
        >>> first = 1 if saved is None else int(saved["epoch"]) + 1
    """
    if stop_requested():
        raise Interrupted("a stop was requested before training started")
    saved = checkpoint.load(kind)
    if saved is None:
        return None
    initial = copy.deepcopy(state(0))
    try:
        restore(saved)
    except Exception as exc:
        restore(initial)
        checkpoint.discard(f"it does not fit this run ({type(exc).__name__}: {exc})"[:300])
        return None
    return saved
