"""reglab inside Lightning's ``Trainer``: a callback that calls a recipe's hooks at the matching
points of Lightning's loop, and a mixin for the two points a callback cannot reach.

Where each hook of DESIGN.md's step runs:

================================  ================================================================
reglab hook                       Lightning point
================================  ================================================================
``transform_model``               ``setup('fit')``, before the optimizers are configured (so
                                  inserted norm layers are optimized)
``attach``                        ``on_fit_start``, with the Trainer's first optimizer
``on_batch``                      :class:`RegularizedModule`'s ``on_after_batch_transfer``, for
                                  training batches only (a callback cannot replace a batch)
``on_loss``                       :meth:`RegularizedModule.regularized_loss`, called by your
                                  ``training_step``
``on_after_backward``             ``on_before_optimizer_step``: once per optimizer step, after
                                  gradient accumulation and after AMP unscaled the gradients;
                                  penalty gradients, then clipping, as the recipe orders them
``on_after_step``                 ``on_train_batch_end`` of a batch whose optimizer step ran
``on_epoch_end``                  ``on_train_epoch_end`` (after that epoch's validation), with
                                  ``trainer.callback_metrics``, after the module's own
                                  ``on_train_epoch_end`` as Lightning's ``EarlyStopping`` runs,
                                  so it sees what the module logs there; a stop is reduced
                                  across ranks (any rank stopping stops all, as Lightning's)
``on_fit_end``                    ``on_fit_end``: restore the best weights, swap in averages
================================  ================================================================
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping as _LightningEarlyStopping

from ..core import ConfigError, Regularizer
from .common import checked_recipe, epoch_end, recipe_generator, scalar_metrics

__all__ = ["Regularize", "RegularizedModule"]


class Regularize(pl.Callback):
    """Apply a reglab recipe inside ``lightning.pytorch.Trainer.fit``.

    Penalty gradients, clipping, proximal steps, averaging and early stopping (with the best
    weights restored, which Lightning's own ``EarlyStopping`` does not do) need nothing but the
    callback. A recipe that changes batches (noise, augmentation, mixup, label smoothing) needs
    :class:`RegularizedModule` among the module's bases; one with output penalties
    (``ConfidencePenalty``) also needs ``training_step`` to return
    ``self.regularized_loss(loss, logits)``. Early stopping monitors what the module logs
    (``self.log("val_loss", ...)``; use ``sync_dist=True`` under DDP so that every rank keeps
    the same best weights). The recipe's random draws come from a generator seeded as
    :func:`reglab.fit` seeds it (``seed``, and the rank), on the module's device.

    Args:
        recipe: the regularizer, usually ``reglab.chain(...)``.
        num_classes: passed to ``attach`` (label smoothing, mixup); None when not needed.
        seed: seeds the recipe's generator.

    Raises:
        ConfigError: for a bad argument; at ``setup``, a recipe that clips gradients while the
            Trainer's ``gradient_clip_val`` clips too, or a ``transform_model`` that would
            replace the module itself; at ``on_fit_start``, a recipe that changes batches
            without :class:`RegularizedModule`; at the first step, output penalties whose
            ``regularized_loss`` was never called.

    Examples:
        >>> recipe = reglab.chain(reglab.L2(1e-4), reglab.Dropout(0.2),
        ...                       reglab.EarlyStopping("val_loss", patience=5))
        >>> trainer = L.Trainer(max_epochs=100, callbacks=[Regularize(recipe)])
        >>> trainer.fit(module, train_loader, val_loader)
    """

    def __init__(
        self, recipe: Regularizer, *, num_classes: int | None = None, seed: int = 0
    ) -> None:
        self.recipe = checked_recipe(recipe, num_classes, seed)
        self.num_classes, self.seed = num_classes, seed
        self._transformed: set[int] = set()
        self._stepped = False
        self._loss_calls = 0
        self._steps = 0
        self.stopped_epoch: int | None = None

    # ----------------------------------------------------------------- setup
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """``transform_model`` on the module (once), and the clipping check."""
        if stage != "fit":
            return
        clippers = [
            type(r).__name__ for r in self.recipe.regularizers if r.gradient_role == "clips"
        ]
        if clippers and trainer.gradient_clip_val:
            raise ConfigError(
                f"The 'recipe' parameter of Regularize clips gradients ({', '.join(clippers)}) "
                f"and the Trainer clips too (gradient_clip_val={trainer.gradient_clip_val}); "
                "keep one of them. Got both."
            )
        if not any(isinstance(c, _AfterTheModule) and c.owner is self for c in trainer.callbacks):
            trainer.callbacks.append(_AfterTheModule(self))
        if id(pl_module) in self._transformed:
            return
        transformed = self.recipe.transform_model(pl_module)
        if transformed is not pl_module:
            raise ConfigError(
                "The 'recipe' parameter of Regularize must change the LightningModule in place; "
                f"its transform_model returned a new {type(transformed).__name__}. Apply it to "
                "the module's inner network in __init__ instead."
            )
        self._transformed.add(id(pl_module))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """``attach`` with the configured optimizer and a seeded generator on the device."""
        changes_batches = self.recipe.implements("on_batch")
        if changes_batches and not isinstance(pl_module, RegularizedModule):
            names = ", ".join(type(r).__name__ for r in self.recipe.members_with("on_batch"))
            raise ConfigError(
                f"The 'recipe' parameter of Regularize changes training batches ({names}), "
                "which a Lightning callback cannot do: add "
                "reglab.integrations.lightning.RegularizedModule to your LightningModule's "
                f"bases. Got a {type(pl_module).__name__} without it."
            )
        if not trainer.optimizers:
            raise ConfigError(
                "The 'recipe' parameter of Regularize needs an optimizer from "
                "configure_optimizers(). Got none."
            )
        generator = recipe_generator(pl_module.device, self.seed, trainer.global_rank)
        self.recipe.attach(
            pl_module, trainer.optimizers[0], num_classes=self.num_classes, generator=generator
        )
        self._stepped, self._loss_calls, self._steps = False, 0, 0
        self.stopped_epoch = None

    # ----------------------------------------------------------------- steps
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        """Penalty gradients, then clipping: once per optimizer step, on unscaled gradients."""
        if self._steps == 0 and self.recipe.implements("on_loss") and self._loss_calls == 0:
            names = ", ".join(type(r).__name__ for r in self.recipe.members_with("on_loss"))
            raise ConfigError(
                f"The 'recipe' parameter of Regularize has output penalties ({names}): return "
                "self.regularized_loss(loss, output) from training_step. Got a step without "
                "that call."
            )
        self.recipe.on_after_backward()
        self._stepped = True
        self._steps += 1

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Proximal steps, constraints and averaging, after a batch whose step ran."""
        if self._stepped:
            self.recipe.on_after_step()
            self._stepped = False

    # ----------------------------------------------------------------- epochs
    def _epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The recipe's epoch end with this epoch's logged metrics; stop every rank together.
        Run by :class:`_AfterTheModule`, after the module's own ``on_train_epoch_end``."""
        if trainer.sanity_checking:
            return
        record = {"epoch": trainer.current_epoch + 1, **scalar_metrics(trainer.callback_metrics)}
        stop = epoch_end(self.recipe, record)
        stop = bool(trainer.strategy.reduce_boolean_decision(stop, all=False))
        if stop:
            trainer.should_stop = True
            self.stopped_epoch = trainer.current_epoch + 1

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Take the epoch-end helper added at ``setup`` out of the Trainer's callbacks."""
        trainer.callbacks[:] = [
            c for c in trainer.callbacks if not (isinstance(c, _AfterTheModule) and c.owner is self)
        ]

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Restore the best weights, swap in averaged weights."""
        self.recipe.on_fit_end()

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The state of every stateful regularizer of the recipe (early stopping, EMA, SWA),
        saved in Lightning's checkpoints."""
        return {
            str(i): r.state_dict()
            for i, r in enumerate(self.recipe.regularizers)
            if hasattr(r, "state_dict")
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        for i, r in enumerate(self.recipe.regularizers):
            if str(i) in state_dict and hasattr(r, "load_state_dict"):
                r.load_state_dict(state_dict[str(i)])


class _AfterTheModule(_LightningEarlyStopping):
    """Runs :meth:`Regularize._epoch_end` where Lightning runs its monitoring callbacks.

    Lightning calls every callback's ``on_train_epoch_end`` before the module's own, except the
    callbacks it counts as monitoring ones, which run after it so that they see what the module
    logs there. That list is hard-coded to subclasses of its ``EarlyStopping`` and
    ``Checkpoint``; this helper is the former (a ``Checkpoint`` would be taken for the Trainer's
    checkpoint callback), monitors nothing of its own and keeps no state. :class:`Regularize`
    adds it at ``setup`` and takes it out at ``teardown``.
    """

    def __init__(self, owner: Regularize) -> None:
        super().__init__(monitor="reglab", strict=False, check_finite=False, verbose=False)
        self.owner = owner

    @property
    def state_key(self) -> str:
        return f"reglab-epoch-end-{self.owner.state_key}"

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.owner._epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        return None


def _callback(trainer: Any) -> Regularize | None:
    if trainer is None:
        return None
    found = [c for c in trainer.callbacks if isinstance(c, Regularize)]
    return found[0] if found else None


class RegularizedModule:
    """A mixin for a ``LightningModule`` (list it first among the bases) that lets
    :class:`Regularize` change training batches, which Lightning offers callbacks no way to do,
    and apply output penalties.

    Training batches, after they moved to the device, go through the recipe's ``on_batch``
    (validation and test batches never do): ``(x, y)`` may come back with soft targets (label
    smoothing, mixup), which ``torch.nn.functional.cross_entropy`` accepts. Further items of a
    batch tuple are passed through unchanged.

    Examples:
        >>> class Net(RegularizedModule, L.LightningModule):
        ...     def training_step(self, batch, batch_idx):
        ...         x, y = batch
        ...         out = self.net(x)
        ...         return self.regularized_loss(F.cross_entropy(out, y), out)
    """

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """The recipe's ``on_batch`` on training batches."""
        batch = super().on_after_batch_transfer(batch, dataloader_idx)  # type: ignore[misc]
        trainer = getattr(self, "_trainer", None)
        callback = _callback(trainer)
        if callback is None or not trainer.training:
            return batch
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ConfigError(
                "The batches of a RegularizedModule must be (x, y, ...) tuples or lists when "
                f"the recipe changes them. Got a {type(batch).__name__}."
            )
        x, y = callback.recipe.on_batch(batch[0], batch[1])
        return type(batch)((x, y, *batch[2:])) if isinstance(batch, tuple) else [x, y, *batch[2:]]

    def regularized_loss(self, loss: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """``loss`` with the recipe's output penalties (``on_loss``); ``loss`` itself when the
        module trains without :class:`Regularize`."""
        callback = _callback(getattr(self, "_trainer", None))
        if callback is None:
            return loss
        callback._loss_calls += 1
        return callback.recipe.on_loss(loss, output)
