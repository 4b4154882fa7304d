"""The batched model behind :func:`reglab.lab.engine.population.fit_population`: stacked parameters,
one optimizer, a shadow model per member, dropout slots, per-member hooks and kernels."""

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
    Interrupted,
    generator_states,
    set_generator_states,
    stop_requested,
)
from ...core import ConfigError
from ...devices import autocast
from ...dropout import _DropLayer
from ...train import _OPTIMIZERS, History, _stop_message
from .kernels import Kernels, split_kernels

if TYPE_CHECKING:
    from .population import Member

__all__ = ["Population", "noise_layers"]


def noise_layers(model: nn.Module) -> dict[str, _DropLayer]:
    """The dropout-family layers of ``model`` whose output is ``x`` times a random factor."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, _DropLayer) and m.multiplicative
    }


class _MaskSlot(nn.Module):
    """Stands for a dropout-family layer in the batched model: multiplies by the factor passed
    in as the ``factor`` buffer in training, the identity in eval."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("factor", torch.ones(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor if self.training else x


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
        self.rows = list(self.alive)  # the members the batched model computes
        self._build_base()
        self._stack()
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

    # ----------------------------------------------------------------- setup
    def _build_base(self) -> None:
        """The batched model's structure: the member with the most dropout slots, its slots
        replaced by :class:`_MaskSlot`; every member's slots must be among them."""
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
            setattr(base.get_submodule(parent) if parent else base, leaf, _MaskSlot())
        self.base = base.to(self.device)

    def _row(self, name: str, k: int) -> torch.Tensor:
        row = self.P[name].data[k]
        return row.t() if self.transposed[name] else row

    def _stack(self) -> None:
        self.names = [n for n, _ in self.members[0].model.named_parameters()]
        self.P: dict[str, nn.Parameter] = {}
        self.transposed: dict[str, bool] = {}
        for n in self.names:
            rows = torch.stack([m.model.get_parameter(n).detach() for m in self.members])
            self.transposed[n] = rows.ndim == 3  # Linear weights: (K, in, out) for the matmul
            if self.transposed[n]:
                rows = rows.transpose(1, 2).contiguous()
            self.P[n] = nn.Parameter(rows.to(self.device))
        for k, m in enumerate(self.members):
            for n in self.names:
                m.model.get_parameter(n).data = self._row(n, k)
        self.opt = _OPTIMIZERS[self.optimizer_name](self.P.values(), lr=self.lr, fused=True)

    def _data(self) -> None:
        """Unique data sets (the same tensor objects) and seeds; each member points at one."""
        sets: dict[tuple[int, ...], int] = {}
        xs, ys, vxs, vys = [], [], [], []
        self.data_pos, self.seed_pos, self.order_gens = [], [], {}
        for m in self.members:
            key = tuple(id(t) for t in (*m.train, *(m.val or ())))
            if key not in sets:
                sets[key] = len(xs)
                xs.append(m.train[0])
                ys.append(m.train[1])
                if m.val is not None:
                    vxs.append(m.val[0])
                    vys.append(m.val[1])
            self.data_pos.append(sets[key])
            if m.seed not in self.order_gens:
                self.order_gens[m.seed] = torch.Generator().manual_seed(m.seed)
            self.seed_pos.append(m.seed)
        dev = self.device
        self.X, self.Y = torch.stack(xs).to(dev), torch.stack(ys).to(dev)
        self.VX = torch.stack(vxs).to(dev) if vxs else None
        self.VY = torch.stack(vys).to(dev) if vys else None
        self.n = self.X.shape[1]
        self.slot_shapes = self._probe_slot_shapes()
        self.ones: dict[tuple, torch.Tensor] = {}

    def _probe_slot_shapes(self) -> list[tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        hooks = [
            self.base.get_submodule(n).register_forward_pre_hook(
                lambda mod, args, n=n: shapes.__setitem__(n, tuple(args[0].shape[1:]))
            )
            for n in self.slot_names
        ]
        try:
            with torch.no_grad():
                self.base.eval()(self.X[0, :1])
        finally:
            for h in hooks:
                h.remove()
        return [shapes[n] for n in self.slot_names]

    # ----------------------------------------------------------------- one step
    def _update_rows(self) -> None:
        """Finished members' rows stay in the stacked tensors (their shadows have their own
        memory by then, and the others' views must stay valid). While they are few, computing
        them costs less than gathering the rest on every step (their losses are left out, so
        they get no gradient); once a quarter have finished, only the alive rows are gathered
        (measured at 15 members: gathering 13 is slower than computing 15, 10 is faster)."""
        if 4 * len(self.alive) <= 3 * len(self.members):
            self.rows = list(self.alive)
        # what the steps of the coming epoch look up, computed once
        dev = self.device
        self.alive_list = [self.rows.index(k) for k in self.alive]
        self.alive_pos = torch.tensor(self.alive_list, device=dev)
        self.alive_set = set(self.alive)
        partial = len(self.rows) < len(self.members)
        self.rows_index = torch.tensor(self.rows, device=dev) if partial else None
        self.data_rows = torch.tensor([self.data_pos[k] for k in self.rows], device=dev)
        recipes = [self.members[k].recipe for k in self.alive]
        self.batch_hooks = any(r._active["on_batch"] for r in recipes)
        self.loss_hooks = any(r._active["on_loss"] for r in recipes)

    def _forward(self, x: torch.Tensor, masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """The outputs of the members in ``self.rows``."""
        index = self.rows_index
        params = {}
        for n in self.names:
            p = self.P[n] if index is None else self.P[n].index_select(0, index)
            params[n] = p.transpose(1, 2) if self.transposed[n] else p

        def one(p: dict, m: dict, xi: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, m), (xi,))

        return vmap(one)(params, masks, x)

    def _masks(self, b: int) -> dict[str, torch.Tensor]:
        masks = {}
        for j, name in enumerate(self.slot_names):
            shape = (b, *self.slot_shapes[j])
            if shape not in self.ones:
                self.ones[shape] = torch.ones(shape, dtype=self.X.dtype, device=self.device)
            ones = self.ones[shape]
            alive = self.alive_set
            masks[f"{name}.factor"] = torch.stack(
                [
                    ones
                    if (layer := self.slot_layers[k][j]) is None or k not in alive
                    else layer(ones)
                    for k in self.rows
                ]
            )
        return masks

    def _on_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.batch_hooks:
            return x, y
        alive = self.alive_set
        pairs = [
            self.members[k].recipe.on_batch(x[i], y[i]) if k in alive else (x[i], y[i])
            for i, k in enumerate(self.rows)
        ]
        ys = [p[1] for p in pairs]
        if self.task == "classification" and any(t.ndim == 2 for t in ys):
            classes = next(t.shape[1] for t in ys if t.ndim == 2)
            ys = [t if t.ndim == 2 else F.one_hot(t, classes).to(x.dtype) for t in ys]
        return torch.stack([p[0] for p in pairs]), torch.stack(ys)

    def _losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k, b = out.shape[:2]
        if self.task == "classification":
            target = y.flatten(0, 1)
            losses = F.cross_entropy(out.flatten(0, 1), target, reduction="none").view(k, b)
            return losses.mean(1)
        return F.mse_loss(out, y, reduction="none").reshape(k, -1).mean(1)

    def _step(self, idx: torch.Tensor) -> torch.Tensor:
        """One batch; ``idx`` holds each computed row's sample indices. Returns the alive
        members' losses."""
        alive = self.alive
        data = self.data_rows.unsqueeze(1)
        x, y = self._on_batch(self.X[data, idx], self.Y[data, idx])
        with self.amp:
            out = self._forward(x, self._masks(idx.shape[1]))
            losses = self._losses(out, y)[self.alive_pos]
            if self.loss_hooks:
                losses = torch.stack(
                    [
                        self.members[k].recipe.on_loss(losses[i], out[pos])
                        for i, (k, pos) in enumerate(zip(alive, self.alive_list, strict=True))
                    ]
                )
        losses = losses.float()
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.kernels.after_backward()
        for k in alive:
            regs = self.hooks[k]["on_after_backward"]
            if regs:
                for n in self.names:
                    g = self.P[n].grad[k]
                    self.members[k].model.get_parameter(n).grad = g.t() if self.transposed[n] else g
                for reg in regs:
                    reg.on_after_backward()
        self.opt.step()
        self.kernels.after_step()
        for k in alive:
            for reg in self.hooks[k]["on_after_step"]:
                reg.on_after_step()
        return losses.detach()

    # ----------------------------------------------------------------- epochs
    @torch.no_grad()
    def _evaluate(self, X: torch.Tensor, Y: torch.Tensor) -> list[dict[str, float]]:
        rows = self.data_rows
        self.base.eval()
        outs = [self._forward(X[rows, i : i + 1024], {}) for i in range(0, X.shape[1], 1024)]
        self.base.train()
        out, y = torch.cat(outs, 1)[self.alive_pos], Y[rows][self.alive_pos]
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
        return [
            {"loss": float(m), "r2": float(1 - m / v) if v > 0 else float("nan")}
            for m, v in zip(mse, var, strict=True)
        ]

    def run(
        self,
        epochs: int,
        on_epoch: Callable[[int, int], None] | None,
        on_done: Callable[[int, History], None],
        checkpoint: Checkpoint | None = None,
    ) -> None:
        for m in self.members:
            m.model.train()
        self.base.train()
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
            running = torch.zeros(len(self.alive), device=self.device)
            steps = 0
            for start in range(0, self.n, self.batch_size):
                running += self._step(order[:, start : start + self.batch_size])
                steps += 1
            objectives = (running / steps).tolist()
            finite = [i for i, v in enumerate(objectives) if math.isfinite(v)]
            train = self._evaluate(self.X, self.Y)
            val = self._evaluate(self.VX, self.VY) if self.VX is not None else None
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
        """Everything the coming epochs depend on, after ``epoch``: the stacked parameters, the
        optimizer, which members are alive and computed, the data-order generators, and per
        member its recipe's state, its generator, its history and (once it has left) its own
        final parameters."""
        histories = getattr(self, "histories", {})
        members = []
        for k, m in enumerate(self.members):
            h = histories.get(k)
            entry = {
                "recipe": m.recipe.state_dict(),
                "generator": self.generators[k].get_state(),
                "history": [] if h is None else h.epochs,
                "status": "completed" if h is None else h.status,
                "message": "" if h is None else h.message,
                "seconds": 0.0 if h is None else h.seconds,
            }
            if k not in self.alive:
                entry["params"] = m.model.state_dict()
            members.append(entry)
        return {
            "epoch": epoch,
            "names": list(self.names),
            "P": {n: p.detach() for n, p in self.P.items()},
            "optimizer": self.opt.state_dict(),
            "alive": list(self.alive),
            "rows": list(self.rows),
            "order": generator_states(list(self.order_gens.values())),
            "members": members,
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        if saved["names"] != self.names or len(saved["members"]) != len(self.members):
            raise ValueError("another population (members or parameter names differ)")
        with torch.no_grad():
            for n in self.names:
                self.P[n].copy_(saved["P"][n])
        self.opt.load_state_dict(saved["optimizer"])
        set_generator_states(list(self.order_gens.values()), saved["order"])
        alive = [int(k) for k in saved["alive"]]
        for k, entry in enumerate(saved["members"]):
            m, history = self.members[k], self._history(k)
            self.generators[k].set_state(entry["generator"])
            history.epochs[:] = [dict(r) for r in entry["history"]]
            history.status, history.message = entry["status"], entry["message"]
            history.seconds = float(entry.get("seconds", 0.0))
            if k not in alive:  # it had left: its own memory, its final parameters
                for p in m.model.parameters():
                    p.data = p.data.clone(memory_format=torch.contiguous_format)
                    p.grad = None
                m.model.load_state_dict(entry["params"])
            m.recipe.load_state_dict(entry["recipe"])
        self.alive, self.rows = alive, [int(k) for k in saved["rows"]]

    def _resume(self, checkpoint: Checkpoint, on_done: Callable[[int, History], None]) -> int:
        """Restore ``checkpoint`` if it holds this population; the first epoch to run. Members
        that had left are handed to ``on_done`` at once."""
        if stop_requested():
            raise Interrupted("a stop was requested before training started")
        saved = checkpoint.load("population")
        if saved is None:
            return 1
        initial = copy.deepcopy(self.state(0))
        try:
            self._restore(saved)
        except Exception as exc:
            self._restore(initial)
            checkpoint.discard(f"it does not fit this run ({type(exc).__name__}: {exc})"[:300])
            return 1
        resumed = int(saved["epoch"])
        for k in range(len(self.members)):
            self._history(k).resumed_from = resumed
            if k not in self.alive:
                on_done(k, self._history(k))
        return resumed + 1

    def _end_epoch(self, k: int, record: dict[str, float], seconds: float) -> bool:
        """Record one member's epoch as fit does; True when the member has finished."""
        member, history = self.members[k], self._history(k)
        bad = [a for a, v in record.items() if not math.isfinite(v) and not a.endswith("r2")]
        if bad:
            history.status = "diverged"
            history.message = f"{bad[0]} became {record[bad[0]]} at epoch {record['epoch']}"
            return True
        if self.threshold is not None and record["objective"] > self.threshold:
            history.status = "diverged"
            history.message = (
                f"objective {record['objective']:.6g} exceeded divergence_threshold="
                f"{self.threshold} at epoch {record['epoch']}"
            )
            return True
        record["penalty"] = member.recipe.penalty()
        record["lr"] = self.lr
        record.update(member.recipe.logs())
        record["seconds"] = seconds
        history.epochs.append(record)
        if member.recipe.on_epoch_end(record):
            history.status = "stopped_early"
            history.message = (
                _stop_message(member.recipe) or f"a regularizer stopped at epoch {record['epoch']}"
            )
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
        for p in member.model.parameters():
            p.data = p.data.clone(memory_format=torch.contiguous_format)
            p.grad = None
        on_done(k, history)
