"""Population training: many members (recipes x seeds) of one architecture trained as one
batched model.

Every member keeps its own parameters, optimizer state, data order, regularizer objects and
random generators, exactly as :func:`reglab.fit` would give it, so a member's run is the same
computation as its own ``fit``; only the arithmetic is batched:

- The parameters of all members are stacked into one tensor per parameter name (a ``Linear``
  weight is kept as ``(K, in, out)``, so the batched matmul reads it without a copy), and one
  fused optimizer steps them all (Adam, AdamW and SGD are element-wise, so a member's update
  is its own). The forward pass of a model made of ``Linear`` layers, elementwise activations
  and reglab's containers runs the model's own structure on ``(K, B, features)`` inputs with
  one ``bmm`` per layer; any other model runs as ``torch.func.vmap`` over ``functional_call``.
  Training and validation sets are evaluated in one pass without autograd.
- Each member also has a *shadow* model: its own transformed model whose parameters are views
  of its row of the stacked tensors. Its regularizers are attached to the shadow, so early
  stopping, weight averaging, clipping and the data transforms run unchanged, per member, on
  the right numbers.
- The penalties whose strengths are plain numbers (L1, L2, elastic net, decoupled weight decay)
  run as *kernels*: one batched operation per parameter name with a per-member strength
  tensor (0 = off), instead of one call per member.
- Dropout-family layers whose output is ``x`` times a random factor are replaced in the batched
  model by slots; each member draws its factor from its own layer and generator
  (``layer(ones)``), members without one get ones.
- A member that stops early or diverges leaves the population at the end of that epoch: its
  model gets its own memory, and its rows are cut out of the stacked parameters and the
  optimizer's state, so it costs no more compute and cannot spoil the others.

:func:`population_reason` says why a member cannot be batched (then the lab trains it with
``fit``, one by one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ...checkpoint import Checkpoint
from ...core import Chain, ConfigError, chain
from ...devices import check_precision, resolve_device
from ...train import OPTIMIZERS, History, fit
from .batched import Population
from .member import Member, population_reason

__all__ = ["Member", "fit_population", "population_reason"]


def _signature(member: Member) -> tuple:
    params = tuple((n, tuple(p.shape), p.dtype) for n, p in member.model.named_parameters())
    val = None if member.val is None else len(member.val[0])
    curve = None if member.train_eval is None else len(member.train_eval[0])
    return params, len(member.train[0]), val, curve


def _check(name: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(
            f"The {name!r} parameter of fit_population must be {allowed}. Got {value!r}."
        )


def fit_population(
    members: Sequence[Member],
    *,
    epochs: int,
    optimizer: str = "adam",
    lr: float = 1e-3,
    batch_size: int = 32,
    task: str = "classification",
    num_classes: int | None = None,
    divergence_threshold: float | None = None,
    on_epoch: Callable[[int, int], None] | None = None,
    on_done: Callable[[int, History], None] | None = None,
    should_stop: Callable[[int, dict[str, float]], bool] | None = None,
    device: str | torch.device | None = None,
    precision: str = "32",
    checkpoint: Checkpoint | None = None,
) -> list[History]:
    """Train every member as :func:`reglab.fit` would, batched.

    Members whose parameters (names and shapes) and data sizes agree train together; different
    architectures train as separate populations, one after the other. A member that
    :func:`population_reason` rejects is trained by :func:`reglab.fit` on its own (ask
    ``population_reason`` first to know which).

    Args:
        members: the members; their models are transformed and trained in place.
        epochs: as :func:`reglab.fit`.
        optimizer: as :func:`reglab.fit`, a name only (``'adam'``, ``'adamw'``, ``'sgd'``).
        lr: as :func:`reglab.fit`.
        batch_size: as :func:`reglab.fit`.
        task: as :func:`reglab.fit`, given (``'classification'`` or ``'regression'``).
        num_classes: as :func:`reglab.fit`.
        divergence_threshold: as :func:`reglab.fit`.
        on_epoch: called with (epoch, members still training) after every epoch.
        on_done: called with (member index, its History) as soon as a member finishes.
        should_stop: called with (member index, that epoch's record) after each batched
            member's epoch; True stops the member (status ``'stopped_early'``), e.g. when
            Optuna prunes its trial.
        device: where the population trains (``'cpu'``, ``'cuda:N'``, ...; None: CPU); the
            stacked parameters, the data, every generator and each member's model live there.
        precision: ``'32'`` or ``'bf16'`` (autocast of the forward pass), as :func:`reglab.fit`.
        checkpoint: a :class:`reglab.Checkpoint`, as :func:`reglab.fit`: each population saves
            its whole state (stacked parameters, optimizer, every member's recipe state,
            generators and history, and the members that have left) at epoch ends, and a rerun
            with the same members resumes bitwise. Several populations (or members trained
            alone) use parts of it (:meth:`reglab.Checkpoint.part`).

    Returns:
        One :class:`reglab.History` per member, in order; ``history.model`` is the member's own
        trained model (its own memory, no longer tied to the population).

    Raises:
        ConfigError: for a bad argument.

    Examples:
        >>> histories = fit_population([Member(m, chain(L2(s)), (X, y), (Xv, yv), seed=0)
        ...                             for m, s in zip(models, (0.0, 1e-3, 1e-2))], epochs=20)
    """
    _check("optimizer", optimizer, optimizer in OPTIMIZERS, "one of 'adam', 'adamw', 'sgd'")
    _check("epochs", epochs, isinstance(epochs, int) and epochs >= 1, "an int >= 1")
    _check("batch_size", batch_size, isinstance(batch_size, int) and batch_size >= 1, "an int >= 1")
    _check("task", task, task in ("classification", "regression"), "classification or regression")
    _check("members", len(members), len(members) >= 1, "at least one Member")
    device = resolve_device("cpu" if device is None else device, "fit_population")
    check_precision(precision, device, "fit_population")
    common = {
        "optimizer": optimizer, "lr": lr, "batch_size": batch_size, "task": task,
        "num_classes": num_classes, "divergence_threshold": divergence_threshold,
        "device": device, "precision": precision,
    }  # fmt: skip
    histories: list[History | None] = [None] * len(members)
    batched = []
    for i, member in enumerate(members):
        if not isinstance(member.recipe, Chain):
            member.recipe = chain() if member.recipe is None else chain(member.recipe)
        if population_reason(member.model, member.recipe) is None:
            member.model = member.recipe.transform_model(member.model)
            batched.append(i)
            continue
        part = None if checkpoint is None else checkpoint.part(f"m{i}")
        histories[i] = _alone(member, epochs, common, part)
        if on_done is not None:
            on_done(i, histories[i])
    groups = _groups(members, batched)
    for number, indices in enumerate(groups):
        stop = None
        if should_stop is not None:
            stop = lambda k, record, indices=indices: should_stop(indices[k], record)  # noqa: E731
        population = Population([members[i] for i in indices], **common, should_stop=stop)

        def done(k: int, history: History, indices: list[int] = indices) -> None:
            histories[indices[k]] = history
            if on_done is not None:
                on_done(indices[k], history)

        part = None
        if checkpoint is not None:
            part = checkpoint if len(groups) == 1 else checkpoint.part(f"g{number}")
        population.run(epochs, on_epoch, done, part)
    if checkpoint is not None:
        checkpoint.finished()
    return histories  # type: ignore[return-value]


def _alone(
    member: Member, epochs: int, common: dict[str, Any], checkpoint: Checkpoint | None
) -> History:
    """A member the population cannot batch, trained by :func:`reglab.fit` on its own."""
    return fit(
        member.model,
        member.train,
        member.val,
        recipe=member.recipe,
        epochs=epochs,
        seed=member.seed,
        checkpoint=checkpoint,
        train_eval=member.train_eval,
        log_dir=member.log_dir,
        **common,
    )


def _groups(members: Sequence[Member], batched: list[int]) -> list[list[int]]:
    """The batched members in populations: one per architecture and data size, with the
    members of one recipe side by side (each penalty kernel then touches one run of rows)."""
    groups: dict[tuple, list[int]] = {}
    for i in batched:
        groups.setdefault(_signature(members[i]), []).append(i)
    for indices in groups.values():
        indices.sort(key=lambda i: repr(members[i].recipe))
    return list(groups.values())
