"""``fit()``: the training loop of DESIGN.md, and its ``History``."""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import (
    Checkpoint,
    generator_states,
    set_generator_states,
)
from .core import Chain, Choice, ConfigError, Interval, Predicate, Regularizer, chain, check_param
from .data import Data, Inputs, _as_pair, _loader_generators, infer_task, prepare_targets
from .devices import autocast, check_precision, model_device, resolve_device
from .distributed import agree_to_stop, mean_across_ranks, rank_and_world, wrap
from .loop import close_epoch, resume
from .tensorboard import EpochWriter

__all__ = ["OPTIMIZERS", "History", "evaluate", "fit", "infer_task", "prepare_targets"]

OptimizerSpec = (
    str | torch.optim.Optimizer | Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None
)

#: The optimizers ``fit`` (and the lab's population engine) builds by name, each with
#: ``fused=True``: element-wise, so one optimizer over stacked parameters steps every member
#: as its own would.
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}

_CONSTRAINTS = {
    "epochs": Interval(int, 1, None),
    "batch_size": Interval(int, 1, None),
    "lr": Interval(float, 0, None, "neither"),
    "seed": Interval(int, 0, None),
    "task": Choice("classification", "regression", None),
    "num_classes": Interval(int, 2, None, allow_none=True),
    "divergence_threshold": Interval(float, 0, None, "neither", allow_none=True),
    "recipe": Predicate(
        lambda r: r is None or isinstance(r, Regularizer),
        "a Regularizer (e.g. reglab.chain(...)) or None",
    ),
}


@dataclass
class History:
    """What one ``fit()`` did.

    Attributes:
        epochs: one dict per epoch: ``epoch``, ``train_loss``, ``val_loss`` and
            ``train_accuracy``/``val_accuracy`` (classification) or ``train_r2``/``val_r2``
            (regression), ``objective`` (mean training-batch loss as optimized, with
            augmentation and output penalties), ``penalty`` (the recipe's penalty value),
            ``seconds``, and whatever the recipe logs (e.g. ``clip_fraction``).
        status: ``'completed'``, ``'stopped_early'`` or ``'diverged'``.
        message: why training ended, in words.
        model: the trained model (``transform_model`` may have returned a new object).
        task: ``'classification'`` or ``'regression'``.
        acts_on: what each parameter regularizer selected, e.g.
            ``'L1 acts on 3 tensors, 84,480 elements'``.
        resumed_from: the epochs restored from a checkpoint (0 for a run from scratch).
        seconds: the training's wall time (evaluation included, before any interruption too);
            in a population, this member's share: each epoch's time divided among the members
            that trained in it.
    """

    epochs: list[dict[str, float]] = field(default_factory=list)
    status: str = "completed"
    message: str = ""
    model: nn.Module | None = None
    task: str = "classification"
    acts_on: list[str] = field(default_factory=list)
    resumed_from: int = 0
    seconds: float = 0.0

    @property
    def epochs_run(self) -> int:
        """Number of epochs with recorded metrics."""
        return len(self.epochs)

    def __getitem__(self, key: str) -> list[float]:
        """``history['val_loss']``: that metric over the epochs."""
        if not self.epochs or key not in self.epochs[0]:
            keys = ", ".join(repr(k) for k in (self.epochs[0] if self.epochs else {}))
            raise KeyError(f"No metric {key!r} in this history; it has: {keys or 'no epochs'}.")
        return [e[key] for e in self.epochs]


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Data, task: str | None = None, *, batch_size: int = 1024
) -> dict[str, float]:
    """Loss and accuracy (classification) or loss (MSE) and R² (regression), in eval mode.

    Args:
        model: the model; its training mode is restored afterwards.
        data: ``(X, y)`` tensors or an iterable of batches (e.g. a ``DataLoader``); batches
            move to the model's device.
        task: ``'classification'``, ``'regression'`` or None to infer it from ``y``.
        batch_size: evaluation batch size for tensors.

    Returns:
        ``{'loss': ..., 'accuracy': ...}`` or ``{'loss': ..., 'r2': ...}``; cross-entropy is the
        mean negative log-likelihood.
    """
    pair = _as_pair(data, "data")
    batches = (
        [
            (pair[0][i : i + batch_size], pair[1][i : i + batch_size])
            for i in range(0, len(pair[0]), batch_size)
        ]
        if pair
        else data
    )
    was_training = model.training
    model.eval()
    device = model_device(model)
    # sums stay on the device in float64 and are read once at the end: no sync per batch
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    n, width = 0, 1
    try:
        for x, y in batches:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            task = task or infer_task(y)
            y = prepare_targets(y, task)
            out = model(x)
            if task == "classification":
                sums[0] += F.cross_entropy(out, y, reduction="sum").double()
                sums[1] += (out.argmax(1) == y).sum().double()
            else:
                sums[0] += F.mse_loss(out, y, reduction="sum").double()
                sums[2] += y.sum().double()
                sums[3] += (y * y).sum().double()
                width = y.shape[1] if y.ndim == 2 else 1
            n += len(y)
    finally:
        model.train(was_training)
    if n == 0:
        raise ConfigError("The 'data' parameter of evaluate must hold at least one sample. Got 0.")
    total, correct, y_sum, y_sq = sums.tolist()
    sq_sum = total
    if task == "classification":
        return {"loss": total / n, "accuracy": correct / n}
    mse = sq_sum / (n * width)
    variance = y_sq / (n * width) - (y_sum / (n * width)) ** 2
    return {"loss": mse, "r2": 1 - mse / variance if variance > 0 else float("nan")}


def _make_optimizer(spec: OptimizerSpec, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    if isinstance(spec, torch.optim.Optimizer):
        return spec
    params = [p for p in model.parameters() if p.requires_grad]
    if spec is None or isinstance(spec, str):
        name = spec or "adam"
        check_param("fit", "optimizer", name, Choice(*OPTIMIZERS))
        # Every built-in optimizer has a fused kernel on CPU: one pass over the parameters.
        return OPTIMIZERS[name](params, lr=lr, fused=True)
    if callable(spec):
        return spec(params)
    raise ConfigError(
        "The 'optimizer' parameter of fit must be 'adam', 'adamw', 'sgd', an "
        f"Optimizer, or a callable params -> Optimizer. Got {spec!r}."
    )


def fit(
    model: nn.Module,
    train: Data,
    val: Data | None = None,
    *,
    recipe: Regularizer | None = None,
    epochs: int = 10,
    optimizer: OptimizerSpec = None,
    lr: float = 1e-3,
    batch_size: int = 32,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    task: str | None = None,
    num_classes: int | None = None,
    divergence_threshold: float | None = None,
    on_epoch: Callable[[Mapping[str, float]], None] | None = None,
    device: str | torch.device | None = None,
    precision: str = "32",
    checkpoint: Checkpoint | None = None,
    train_eval: Data | None = None,
    log_dir: str | os.PathLike[str] | None = None,
) -> History:
    """Train ``model`` under ``recipe``, calling its hooks in the order of DESIGN.md.

    The loop: ``transform_model``, then the optimizer is built, ``attach``; per batch
    ``on_batch``, forward, ``on_loss``, backward, ``on_after_backward``, ``step``,
    ``on_after_step``; per epoch clean metrics on train and val in eval mode, then
    ``on_epoch_end``; finally ``on_fit_end``.

    Args:
        model: the model; regularizers may change it in place.
        train: ``(X, y)`` tensors (shuffled each epoch from ``seed``) or an iterable of batches
            such as a ``DataLoader``.
        val: the same for validation, or None.
        recipe: a regularizer, usually ``reglab.chain(...)``; None trains without one.
        epochs: the most epochs to run.
        optimizer: ``'adam'`` (default), ``'adamw'``, ``'sgd'`` (all fused, no weight decay of
            their own), an ``Optimizer`` over the model's parameters, or a callable
            ``params -> Optimizer`` (use it when a recipe adds parameters).
        lr: learning rate of the built-in optimizers.
        batch_size: batch size for tensor data.
        criterion: ``loss(output, target)``; default cross-entropy (it accepts the soft targets
            of label smoothing and mixup) or MSE for regression.
        seed: seeds data order and the generator passed to ``attach`` (dropout masks, noise).
            The model's initial weights are the caller's.
        task: ``'classification'`` or ``'regression'``; inferred from the targets' dtype.
        num_classes: passed to ``attach``; inferred from integer targets.
        divergence_threshold: stop as ``'diverged'`` when an epoch's mean training loss (the
            ``objective``) exceeds it; None checks only for non-finite values.
        on_epoch: called with each epoch's metrics (for progress display).
        device: where to train: ``'cpu'``, ``'cuda'``, ``'cuda:N'``, ``'mps'``, ``'auto'``
            (CUDA when available) or None (default: where the model's parameters are). The
            model moves there after ``transform_model``; tensor data moves there once, batches
            of an iterable as they come (``non_blocking``); the recipe's generator is created
            there, so dropout masks and noise are drawn on the device.
        precision: ``'32'`` (default) or ``'bf16'``: the forward pass and the loss run under
            ``torch.autocast`` with bfloat16; parameters, gradients, penalties and the
            optimizer stay float32. Evaluation is in float32.
        checkpoint: a :class:`reglab.Checkpoint`: the run resumes from it when it holds a
            checkpoint of this run, and saves to it at epoch ends (at most every
            ``checkpoint.every`` seconds): the model, the optimizer, every regularizer's
            :meth:`~reglab.Regularizer.state_dict`, every generator (data order, the recipe's,
            a ``DataLoader``'s) and the history. A resumed run ends with the same numbers as
            an uninterrupted one. The file is removed when training ends (unless ``keep``).
            Single-process only.
        train_eval: the data each epoch's ``train_*`` metrics are measured on, as ``train``
            is given (default: ``train`` itself). A fixed sample of a large training set keeps
            the learning curves cheap; evaluate the final model on every row yourself.
        log_dir: a folder to write each epoch's record to as TensorBoard scalars
            (:class:`reglab.tensorboard.EpochWriter`: ``train/loss``, ``val/accuracy``,
            ``fit/penalty``, ``fit/lr``, ``fit/clip_fraction``, ...; needs
            ``reglab[tensorboard]``). A resumed run continues the folder without repeating a
            step. Under torch.distributed only rank 0 writes.

    Returns:
        A :class:`History`. A non-finite training loss or metric, or a loss above
        ``divergence_threshold``, stops the run with status ``'diverged'`` and the reason in
        ``message``; that epoch's metrics are not recorded.

    Raises:
        ConfigError: for a bad argument.
        Interrupted: :func:`reglab.checkpoint.request_stop` was called: the run saved its
            checkpoint at the epoch end and stopped (a ``KeyboardInterrupt``).

    Examples:
        >>> history = reglab.fit(model, (X, y), (Xv, yv), epochs=20,
        ...                      recipe=reglab.chain(reglab.L2(1e-4), reglab.EarlyStopping()))
        >>> history.status, history["val_loss"][-1]
    """
    for name, value in {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "task": task,
        "num_classes": num_classes,
        "divergence_threshold": divergence_threshold,
        "recipe": recipe,
    }.items():
        check_param("fit", name, value, _CONSTRAINTS[name])
    device = model_device(model) if device is None else resolve_device(device, "fit")
    check_precision(precision, device, "fit")
    generator = torch.Generator().manual_seed(seed)  # data order: the same on every rank
    # dropout masks and noise: independent of the data order, and different on every rank
    reg_generator = torch.Generator(device).manual_seed(seed * 1_000_003 + 1 + rank_and_world()[0])
    data = Inputs.prepare(train, val, device, task, num_classes, batch_size, generator, criterion)
    curve = data.train_pair or data.train
    if train_eval is not None:
        pair = _as_pair(train_eval, "train_eval")
        curve = train_eval if pair is None else _on(pair, device, data.task)

    recipe = recipe if recipe is not None else chain()
    model = recipe.transform_model(model).to(device)
    opt = _make_optimizer(optimizer, model, lr)
    recipe.attach(model, opt, num_classes=data.num_classes, generator=reg_generator)
    members = recipe.regularizers if isinstance(recipe, Chain) else (recipe,)
    history = History(model=model, acts_on=[m.acts_on() for m in members if hasattr(m, "acts_on")])
    saving = _Saving(model, opt, recipe, history, data, [generator, reg_generator])
    first = 1 if checkpoint is None else saving.resume(checkpoint)
    step = _Step(wrap(model), opt, recipe, autocast(device, precision))  # one autocast context

    agree = functools.partial(agree_to_stop, device=device)  # the stop, reduced over ranks
    board = None
    if log_dir is not None and rank_and_world()[0] == 0:
        board = EpochWriter(log_dir)
        on_epoch = _then(board.write, on_epoch)  # written before a callback that may raise
    try:
        for epoch in range(first, epochs + 1):
            started = time.perf_counter()
            objective = step.epoch(model, data, device)
            record = _measure(model, data, curve, epoch, objective)
            seconds = time.perf_counter() - started
            lr_now = float(opt.param_groups[0]["lr"])
            ended = close_epoch(
                history, record, recipe, lr=lr_now, seconds=seconds,
                divergence_threshold=divergence_threshold, on_record=on_epoch, agree=agree,
            )  # fmt: skip
            if history.status != "diverged":
                history.seconds += seconds
            if ended:
                break
            if checkpoint is not None and epoch < epochs:
                checkpoint.update("fit", lambda epoch=epoch: saving.state(epoch))
    finally:
        if board is not None:
            board.close()
    if history.status == "completed":
        history.message = f"ran all {epochs} epochs"
    recipe.on_fit_end()
    history.task = data.task or "classification"
    if checkpoint is not None:
        checkpoint.finished()
    return history


def _then(
    first: Callable[[Mapping[str, float]], None],
    second: Callable[[Mapping[str, float]], None] | None,
) -> Callable[[Mapping[str, float]], None]:
    """A callback that calls ``first``, then ``second`` (when given)."""
    if second is None:
        return first

    def both(record: Mapping[str, float]) -> None:
        first(record)
        second(record)

    return both


@dataclass
class _Step:
    """One training step in DESIGN.md's hook order, and an epoch of them."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    opt: torch.optim.Optimizer
    recipe: Regularizer
    amp: Any

    def epoch(self, model: nn.Module, data: Inputs, device: torch.device) -> float:
        """Train one epoch; the mean training-batch loss (the ``objective``)."""
        recipe, opt = self.recipe, self.opt
        model.train()
        running, steps = torch.zeros((), device=device), 0
        for x, y in data:
            if data.train_pair is None:  # batches from an iterable: move and prepare each
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                data.task = data.task or infer_task(y)
                y = prepare_targets(y, data.task)
            if data.loss_fn is None:
                data.loss_fn = F.cross_entropy if data.task == "classification" else F.mse_loss
            x, y = recipe.on_batch(x, y)
            with self.amp:
                out = self.forward(x)
                loss = recipe.on_loss(data.loss_fn(out, y), out)
            loss = loss.float()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            recipe.on_after_backward()
            opt.step()
            recipe.on_after_step()
            running += loss.detach()
            steps += 1
        return float(mean_across_ranks(running / max(steps, 1)))


def _on(pair: tuple[torch.Tensor, torch.Tensor], device: torch.device, task: str | None) -> tuple:
    """A tensor pair on ``device`` with its targets as the loss takes them."""
    x, y = pair[0].to(device), pair[1].to(device)
    return x, prepare_targets(y, task or infer_task(y))


def _measure(
    model: nn.Module, data: Inputs, curve: Any, epoch: int, objective: float
) -> dict[str, float]:
    """The epoch's record: the objective and, unless it is not finite, clean metrics on the
    training data (``curve``: all of it, or the sample the caller chose) and the validation
    data, in eval mode."""
    record: dict[str, float] = {"epoch": epoch, "objective": objective}
    if math.isfinite(objective):
        tr = evaluate(model, curve, data.task)
        record.update({f"train_{k}": v for k, v in tr.items()})
        if data.val is not None:
            va = evaluate(model, data.val_pair or data.val, data.task)
            record.update({f"val_{k}": v for k, v in va.items()})
    return record


@dataclass
class _Saving:
    """What a checkpoint of ``fit`` holds (:meth:`state`) and how it is put back."""

    model: nn.Module
    opt: torch.optim.Optimizer
    recipe: Regularizer
    history: History
    data: Inputs
    generators: list[torch.Generator]

    def __post_init__(self) -> None:
        self.generators = [*self.generators, *_loader_generators(self.data.train, self.data.val)]

    def state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "task": self.data.task,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "recipe": self.recipe.state_dict(),
            "generators": generator_states(self.generators),
            "history": self.history.epochs,
            "seconds": self.history.seconds,
        }

    def restore(self, saved: Mapping[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["optimizer"])
        self.recipe.load_state_dict(saved["recipe"])
        set_generator_states(self.generators, saved["generators"])
        self.history.epochs[:] = [dict(r) for r in saved["history"]]
        self.history.seconds = float(saved.get("seconds", 0.0))
        self.data.task = saved["task"]

    def resume(self, checkpoint: Checkpoint) -> int:
        """The first epoch to run, after restoring ``checkpoint`` if it holds this run."""
        if rank_and_world()[1] > 1:
            raise ConfigError(
                "The 'checkpoint' parameter of fit is for single-process training. Got one "
                f"under torch.distributed with {rank_and_world()[1]} processes."
            )
        saved = resume(checkpoint, "fit", self.state, self.restore)
        first = 1 if saved is None else int(saved["epoch"]) + 1
        self.history.resumed_from = first - 1
        return first
