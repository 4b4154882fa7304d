"""The batched model behind :func:`reglab.lab.engine.population.fit_population`: stacked parameters,
one optimizer, a shadow model per member, dropout slots, per-member hooks and kernels.

The batched forward pass takes one of two routes through the same model code:

- *stacked*: when the model is built only of ``Linear`` layers, parameter-free elementwise
  activations and reglab's containers (``nn.Sequential``, :class:`reglab.structure.Inserted`,
  :class:`reglab.structure.Residual`) and each sample is a vector, a copy of the model whose
  ``Linear`` layers are :class:`_StackedLinear` runs directly on ``(K, B, features)`` inputs:
  one ``bmm`` and an in-place bias add per layer, with no ``vmap`` and no ``functional_call``
  per step (the model's own structure runs: no second copy of its code);
- *vmap*: any other model runs as ``vmap`` over ``functional_call``.

Both give each member its own model's arithmetic (a batched matmul of its rows).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from ...checkpoint import (
    Checkpoint,
)
from ...core import ConfigError
from ...devices import autocast
from ...drop import dropout_factors_
from ...loop import close_epoch, resume
from ...tensorboard import EpochWriter
from ...train import OPTIMIZERS, History
from .kernels import Kernels, _runs, split_kernels
from .member import noise_layers
from .saved import population_state, restore_population
from .stacked import MaskSlot, plain_dropout, slot_shapes, stacked_model, store_transposed

if TYPE_CHECKING:
    from .member import Member

__all__ = ["Population"]


class Population:
    """K members of one architecture as stacked parameters, one optimizer, shadow models."""

    def __init__(self, members: list[Member], **settings: Any) -> None:
        self.members = members
        self.lr, self.task = settings["lr"], settings["task"]
        self.batch_size = settings["batch_size"]
        self.threshold = settings["divergence_threshold"]
        self.optimizer_name = settings["optimizer"]
        self.should_stop = settings.get("should_stop")
        self.device = torch.device(settings.get("device") or "cpu")
        self.amp = autocast(self.device, settings.get("precision", "32"))  # entered every step
        self.alive = list(range(len(members)))
        # each member's TensorBoard scalars, when it has a log_dir (as fit writes them)
        self.boards = {k: EpochWriter(m.log_dir) for k, m in enumerate(members) if m.log_dir}
        self.rows = list(self.alive)  # the members whose parameters are rows of P, in order
        self._build_base()
        self._stack()
        self.masks: dict[str, torch.Tensor] = {}  # the stacked model's dropout factors
        self.generators = []
        for m in members:
            dummy = torch.optim.SGD(m.model.parameters(), lr=self.lr)  # only its lr is read
            # as fit, rank 0, on the training device
            generator = torch.Generator(self.device).manual_seed(m.seed * 1_000_003 + 1)
            self.generators.append(generator)
            m.recipe.attach(
                m.model, dummy, num_classes=settings["num_classes"], generator=generator
            )
        self.kernels = Kernels(self.P, self.lr)
        self.hooks = [split_kernels(m.recipe, self.kernels, k) for k, m in enumerate(members)]
        self.kernels.finish()
        self._data()
        # a sample that is not a vector (or a module outside the known ones): vmap
        stacked = self.X.ndim == 3
        self.stacked = (
            stacked_model(self.base, self.P, self.transposed, self.masks) if stacked else None
        )

    # ----------------------------------------------------------------- setup
    def _build_base(self) -> None:
        """The batched model's structure: the member with the most dropout slots, its slots
        replaced by :class:`MaskSlot`; every member's slots must be among them."""
        slots = [noise_layers(m.model) for m in self.members]
        widest = max(range(len(slots)), key=lambda k: len(slots[k]))
        self.slot_names = list(slots[widest])
        for s in slots:
            extra = set(s) - set(self.slot_names)
            if extra:
                raise ConfigError(
                    f"A member of fit_population cannot be batched: its dropout layers "
                    f"{sorted(extra)} sit where the population has none."
                )
        self.slot_layers = [[s.get(n) for n in self.slot_names] for s in slots]
        base = copy.deepcopy(self.members[widest].model)
        for name in self.slot_names:
            parent, _, leaf = name.rpartition(".")
            setattr(base.get_submodule(parent) if parent else base, leaf, MaskSlot())
        self.base = base.to(self.device)

    @property
    def model(self) -> nn.Module:
        """The module the forward pass runs: the stacked model, or the base under vmap."""
        return self.base if self.stacked is None else self.stacked

    def _row(self, name: str, k: int) -> torch.Tensor:
        """Member ``k``'s parameter ``name``: a view of its row of the stacked tensor."""
        row = self.P[name].data[self.rows.index(k)]
        return row.t() if self.transposed[name] else row

    def _stack(self) -> None:
        self.names = [n for n, _ in self.members[0].model.named_parameters()]
        self.P: dict[str, nn.Parameter] = {}
        self.transposed: dict[str, bool] = {}
        for n in self.names:
            rows = torch.stack([m.model.get_parameter(n).detach() for m in self.members])
            # a layout change always changes the shape (out != in), so an older checkpoint's
            # parameters cannot be read in the other layout: its shape check rejects them
            self.transposed[n] = store_transposed(rows)
            if self.transposed[n]:
                rows = rows.transpose(1, 2).contiguous()
            self.P[n] = nn.Parameter(rows.to(self.device))
        for k, m in enumerate(self.members):
            for n in self.names:
                m.model.get_parameter(n).data = self._row(n, k)
        self.opt = OPTIMIZERS[self.optimizer_name](self.P.values(), lr=self.lr, fused=True)

    def _data(self) -> None:
        """Unique data sets (the same tensor objects) and seeds; each member points at one."""
        sets: dict[tuple[int, ...], int] = {}
        xs, ys, vxs, vys, exs, eys = [], [], [], [], [], []
        self.data_pos, self.seed_pos, self.order_gens = [], [], {}
        for m in self.members:
            key = tuple(id(t) for t in (*m.train, *(m.val or ()), *(m.train_eval or ())))
            if key not in sets:
                sets[key] = len(xs)
                xs.append(m.train[0])
                ys.append(m.train[1])
                if m.val is not None:
                    vxs.append(m.val[0])
                    vys.append(m.val[1])
                if m.train_eval is not None:
                    exs.append(m.train_eval[0])
                    eys.append(m.train_eval[1])
            self.data_pos.append(sets[key])
            if m.seed not in self.order_gens:
                self.order_gens[m.seed] = torch.Generator().manual_seed(m.seed)
            self.seed_pos.append(m.seed)
        dev = self.device
        self.n = xs[0].shape[0]
        if exs and len(exs) != len(xs):
            raise ConfigError(
                "The 'members' parameter of fit_population must give train_eval to every "
                "member or to none. Got it for some."
            )
        # the rows each epoch's train metrics are measured on (all, or a sample), and the
        # validation inputs, side by side in one tensor evaluated in one pass; without a
        # sample X and VX are views of it
        curve = exs or xs
        self.n_eval = curve[0].shape[0]
        parts = [torch.stack(curve), *([torch.stack(vxs)] if vxs else [])]
        self.EX = (torch.cat(parts, 1) if len(parts) > 1 else parts[0]).to(dev)
        self.X = self.EX[:, : self.n] if not exs else torch.stack(xs).to(dev)
        self.VX = self.EX[:, self.n_eval :] if vxs else None
        self.Y = torch.stack(ys).to(dev)
        self.EY = self.Y if not exs else torch.stack(eys).to(dev)
        self.VY = torch.stack(vys).to(dev) if vys else None
        self.slot_shapes = slot_shapes(self.base, self.slot_names, self.X[0, :1])
        self.ones: dict[tuple, torch.Tensor] = {}

    # ----------------------------------------------------------------- one step
    def _compact(self, members: list[int] | None = None) -> None:
        """Keep only the alive members' rows in the stacked parameters and the optimizer's
        state, so members that have left cost no compute at all: called at the end of an epoch
        in which some left (their models already have their own memory). One copy of the
        parameters and optimizer state, then every later step runs on fewer rows (gathering
        the alive rows on each step instead cost as much as computing the finished ones).
        ``members``: the members to keep (default: the alive ones)."""
        members = self.alive if members is None else members
        keep = [self.rows.index(k) for k in members]
        if keep == list(range(len(self.rows))):
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)  # may be empty
        old = self.opt.state_dict()
        params = {}
        for n in self.names:
            params[n] = nn.Parameter(self.P[n].detach().index_select(0, index))
        rows = len(self.rows)
        for j, state in list(old["state"].items()):  # per parameter: exp_avg, momentum, ...
            old["state"][j] = {
                key: value.index_select(0, index.to(value.device))
                if torch.is_tensor(value) and value.ndim > 0 and len(value) == rows
                else value
                for key, value in state.items()
            }
        self.P.clear()
        self.P.update(params)
        self.rows = list(members)
        for k in self.rows:
            for n in self.names:
                self.members[k].model.get_parameter(n).data = self._row(n, k)
        self.opt = OPTIMIZERS[self.optimizer_name](self.P.values(), lr=self.lr, fused=True)
        self.opt.load_state_dict(old)
        self.kernels.finish(self.rows)

    def _update_rows(self) -> None:
        """What the steps of the coming epoch look up, computed once."""
        self._compact()
        dev = self.device
        self.data_rows = torch.tensor([self.data_pos[k] for k in self.rows], device=dev)
        self.batch_rows = [
            (i, k) for i, k in enumerate(self.rows) if self.members[k].recipe.implements("on_batch")
        ]
        self.batch_hooks = bool(self.batch_rows)
        self.loss_hooks = any(self.members[k].recipe.implements("on_loss") for k in self.rows)
        self._mask_plans()

    def _forward(self, x: torch.Tensor, masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """The outputs of the members in ``self.rows``."""
        if self.stacked is not None:
            self.masks.update(masks)
            return self.stacked(x)
        params = {n: p.transpose(1, 2) if self.transposed[n] else p for n, p in self.P.items()}

        def one(p: dict, m: dict, xi: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, m), (xi,))

        return vmap(one)(params, masks, x)

    def _mask_plans(self) -> None:
        """How each dropout slot's factors are drawn for the rows of the coming epoch: rows
        whose layer is a plain :class:`~reglab.drop.DropoutLayer` (training, a float ``p``,
        its generator on the training device) draw their uniforms each from its own generator
        straight into their rows of the factors, which then become factors in place, one
        comparison and one division per run of consecutive such rows (the same numbers as the
        layer's own :func:`~reglab.drop.dropout`, which a test checks bit for bit); any other
        layer is called on ones; rows without a layer keep factors of one."""
        self.mask_plans = []
        here = torch.empty(0, device=self.device).device  # with its index: "cuda" -> "cuda:0"
        for j in range(len(self.slot_names)):
            layers = [(i, self.slot_layers[k][j]) for i, k in enumerate(self.rows)]
            plain = [(i, layer) for i, layer in layers if plain_dropout(layer, here)]
            drawn = {i: layer for i, layer in plain}
            other = [(i, layer) for i, layer in layers if layer is not None and i not in drawn]
            runs = []  # (rows, keep probabilities) per run of consecutive plain rows
            for start, stop in _runs([i in drawn for i in range(len(self.rows))]):
                keep = torch.tensor(
                    [1 - drawn[i].p for i in range(start, stop)],
                    dtype=self.X.dtype,
                    device=self.device,
                )
                runs.append(
                    (slice(start, stop), keep.view(-1, *[1] * (len(self.slot_shapes[j]) + 1)))
                )
            self.mask_plans.append((plain, runs, other))
        self.mask_buffers: dict[tuple[int, int], torch.Tensor] = {}

    def _masks(self, b: int) -> dict[str, torch.Tensor]:
        """Each dropout slot's ``(rows, b, ...)`` factors for a batch of ``b`` samples, written
        into buffers kept from step to step (a step's backward pass is done with them before
        the next step overwrites them); see :meth:`_mask_plans`."""
        masks = {}
        for j, name in enumerate(self.slot_names):
            plain, runs, other = self.mask_plans[j]
            shape = (b, *self.slot_shapes[j])
            if (j, b) not in self.mask_buffers:
                self.mask_buffers[j, b] = torch.ones(
                    (len(self.rows), *shape), dtype=self.X.dtype, device=self.device
                )
            factors = self.mask_buffers[j, b]
            for i, layer in plain:
                torch.rand(shape, generator=layer.generator, out=factors[i])
            for rows, keep in runs:
                dropout_factors_(factors[rows], keep)
            if other:
                if shape not in self.ones:
                    self.ones[shape] = torch.ones(shape, dtype=self.X.dtype, device=self.device)
                for i, layer in other:
                    factors[i] = layer(self.ones[shape])
            masks[f"{name}.factor"] = factors
        return masks

    def _on_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The members' ``on_batch`` hooks on their rows of ``x`` and ``y`` (this step's own
        tensors: changed rows are written into them); only the members that have such hooks
        are called. When a hook returns soft targets, every row's targets become probabilities
        (one ``one_hot`` for all rows, after the hooks' hard labels are in)."""
        if not self.batch_hooks:
            return x, y
        soft = []
        for i, k in self.batch_rows:
            xi, yi = self.members[k].recipe.on_batch(x[i], y[i])
            if xi.shape != x.shape[1:]:
                raise ConfigError(
                    f"An on_batch hook of population member {k} changed the inputs' shape from "
                    f"{tuple(x.shape[1:])} to {tuple(xi.shape)}: members are stacked."
                )
            x[i] = xi
            if self.task == "classification" and yi.ndim == 2:
                soft.append((i, yi))
            else:
                y[i] = yi
        if soft:
            y = F.one_hot(y, soft[0][1].shape[1]).to(x.dtype)  # every row's targets, one call
            for i, yi in soft:
                y[i] = yi
        return x, y

    def _losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k, b = out.shape[:2]
        if self.task == "classification":
            target = y.flatten(0, 1)
            losses = F.cross_entropy(out.flatten(0, 1), target, reduction="none").view(k, b)
            return losses.mean(1)
        return F.mse_loss(out, y, reduction="none").reshape(k, -1).mean(1)

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One batch: each row's inputs ``x`` and targets ``y`` (the step's own tensors, which
        ``on_batch`` hooks may change). Returns the members' losses (the rows are the alive
        members: :meth:`_compact`)."""
        rows = self.rows
        x, y = self._on_batch(x, y)
        with self.amp:
            out = self._forward(x, self._masks(x.shape[1]))
            losses = self._losses(out, y)
            if self.loss_hooks:
                losses = torch.stack(
                    [self.members[k].recipe.on_loss(losses[i], out[i]) for i, k in enumerate(rows)]
                )
        losses = losses.float()
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.kernels.after_backward()
        for i, k in enumerate(rows):
            regs = self.hooks[k]["on_after_backward"]
            if regs:
                for n in self.names:
                    g = self.P[n].grad[i]
                    self.members[k].model.get_parameter(n).grad = g.t() if self.transposed[n] else g
                for reg in regs:
                    reg.on_after_backward()
        self.opt.step()
        self.kernels.after_step()
        for k in rows:
            for reg in self.hooks[k]["on_after_step"]:
                reg.on_after_step()
        return losses.detach()

    # ----------------------------------------------------------------- epochs
    @torch.inference_mode()
    def _evaluate(self) -> tuple[list[dict[str, float]], list[dict[str, float]] | None]:
        """Each alive member's metrics on its training set (or its ``train_eval`` sample) and
        validation set, in one batched pass without autograd over both (in chunks of 1024
        samples)."""
        rows = self.data_rows
        self.model.eval()
        X = self.EX
        outs = [self._forward(X[rows, i : i + 1024], {}) for i in range(0, X.shape[1], 1024)]
        self.model.train()
        out = torch.cat(outs, 1)
        train = self._metrics(out[:, : self.n_eval], self.EY[rows])
        if self.VY is None:
            return train, None
        return train, self._metrics(out[:, self.n_eval :], self.VY[rows])

    def _metrics(self, out: torch.Tensor, y: torch.Tensor) -> list[dict[str, float]]:
        n = out.shape[1]
        if self.task == "classification":
            ce = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(-1, n)
            loss = ce.double().sum(1) / n
            acc = (out.argmax(-1) == y).double().sum(1) / n
            pairs = zip(loss.tolist(), acc.tolist(), strict=True)
            return [{"loss": a, "accuracy": b} for a, b in pairs]
        width = y.shape[-1]
        mse = (out - y).pow(2).double().sum((1, 2)) / (n * width)
        y64 = y.double()
        var = y64.pow(2).sum((1, 2)) / (n * width) - (y64.sum((1, 2)) / (n * width)) ** 2
        # read once (two transfers for every member), not three scalars per member
        pairs = zip(mse.tolist(), var.tolist(), strict=True)
        return [{"loss": m, "r2": 1 - m / v if v > 0 else float("nan")} for m, v in pairs]

    def run(
        self,
        epochs: int,
        on_epoch: Callable[[int, int], None] | None,
        on_done: Callable[[int, History], None],
        checkpoint: Checkpoint | None = None,
    ) -> None:
        """Train every member up to ``epochs``, handing each to ``on_done`` as it finishes;
        with ``checkpoint``, resume from it and save to it at epoch ends."""
        try:
            self._run(epochs, on_epoch, on_done, checkpoint)
        finally:
            for board in self.boards.values():
                board.close()

    def _run(
        self,
        epochs: int,
        on_epoch: Callable[[int, int], None] | None,
        on_done: Callable[[int, History], None],
        checkpoint: Checkpoint | None,
    ) -> None:
        for m in self.members:
            m.model.train()
        self.model.train()
        first = 1
        if checkpoint is not None:
            first = self._resume(checkpoint, on_done)
            if first > 1 and on_epoch is not None:
                on_epoch(first - 1, len(self.alive))
            if not self.alive:
                return
        self._update_rows()
        epoch = first - 1
        for epoch in range(first, epochs + 1):
            started = time.perf_counter()
            perms = {s: torch.randperm(self.n, generator=g) for s, g in self.order_gens.items()}
            order = torch.stack([perms[self.seed_pos[k]] for k in self.rows]).to(self.device)
            data = self.data_rows.unsqueeze(1)
            running = torch.zeros(len(self.alive), device=self.device)
            steps = 0
            for start in range(0, self.n, self.batch_size):
                idx = order[:, start : start + self.batch_size]  # each row's sample indices
                running += self._step(self.X[data, idx], self.Y[data, idx])
                steps += 1
            objectives = (running / steps).tolist()
            finite = [i for i, v in enumerate(objectives) if math.isfinite(v)]
            train, val = self._evaluate()
            seconds = time.perf_counter() - started
            ended = []
            for k in self.alive:
                self._history(k).seconds += seconds / len(self.alive)
            for i, k in enumerate(self.alive):
                record = {"epoch": epoch, "objective": objectives[i]}
                if i in finite:
                    record.update({f"train_{a}": v for a, v in train[i].items()})
                    if val is not None:
                        record.update({f"val_{a}": v for a, v in val[i].items()})
                status = self._end_epoch(k, record, seconds)
                if status:
                    ended.append(k)
            for k in ended:
                self._finish(k, on_done)
            self.alive = [k for k in self.alive if k not in ended]
            if self.alive:
                self._update_rows()
            if on_epoch is not None:
                on_epoch(epoch, len(self.alive))
            if not self.alive:
                break
            if checkpoint is not None and epoch < epochs:
                checkpoint.update("population", lambda epoch=epoch: self.state(epoch))
        else:
            for k in list(self.alive):
                self._finish(k, on_done, f"ran all {epochs} epochs")
            self.alive = []
        if checkpoint is not None:
            if checkpoint.keep:  # its owner removes it: a rerun is instant
                checkpoint.save("population", self.state(epoch))
            checkpoint.done()

    # ----------------------------------------------------------------- checkpoints
    def state(self, epoch: int) -> dict[str, Any]:
        """What a checkpoint after ``epoch`` holds (see :func:`.saved.population_state`)."""
        return population_state(self, epoch)

    def _restore(self, saved: dict[str, Any]) -> None:
        restore_population(self, saved)

    def _resume(self, checkpoint: Checkpoint, on_done: Callable[[int, History], None]) -> int:
        """Restore ``checkpoint`` if it holds this population; the first epoch to run. Members
        that had left are handed to ``on_done`` at once."""
        saved = resume(checkpoint, "population", self.state, self._restore)
        if saved is None:
            return 1
        resumed = int(saved["epoch"])
        for k in range(len(self.members)):
            self._history(k).resumed_from = resumed
            if k not in self.alive:
                on_done(k, self._history(k))
        return resumed + 1

    def _end_epoch(self, k: int, record: dict[str, float], seconds: float) -> bool:
        """Close one member's epoch as fit does; True when the member has finished."""
        member, history = self.members[k], self._history(k)
        lr, threshold = self.lr, self.threshold
        board = self.boards.get(k)
        if close_epoch(history, record, member.recipe, lr=lr, seconds=seconds,
                       divergence_threshold=threshold,
                       on_record=None if board is None else board.write):  # fmt: skip
            return True
        if self.should_stop is not None and self.should_stop(k, record):
            history.status = "stopped_early"
            history.message = f"should_stop stopped it at epoch {record['epoch']}"
            return True
        return False

    def _history(self, k: int) -> History:
        if not hasattr(self, "histories"):
            self.histories: dict[int, History] = {}
        if k not in self.histories:
            m = self.members[k]
            acts_on = [r.acts_on() for r in m.recipe.regularizers if hasattr(r, "acts_on")]
            self.histories[k] = History(model=m.model, task=self.task, acts_on=acts_on)
        return self.histories[k]

    def _finish(self, k: int, on_done: Callable[[int, History], None], message: str = "") -> None:
        """Run member ``k``'s ``on_fit_end`` (restoring or averaging into its rows), then give
        its model its own memory and hand its History over."""
        member, history = self.members[k], self._history(k)
        if message and history.status == "completed":
            history.message = message
        member.recipe.on_fit_end()
        board = self.boards.pop(k, None)
        if board is not None:
            board.close()
        for p in member.model.parameters():
            p.data = p.data.clone(memory_format=torch.contiguous_format)
            p.grad = None
        on_done(k, history)
