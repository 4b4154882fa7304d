"""reglab inside Hugging Face's ``transformers.Trainer``: a callback for the gradient, parameter
and evaluation hooks, and a Trainer mixin for the batch and loss hooks a callback cannot reach.

Where each hook of DESIGN.md's step runs:

================================  ================================================================
reglab hook                       Trainer point
================================  ================================================================
``transform_model``               :meth:`Regularize.prepare`, called on the model before the
                                  ``Trainer`` is built (so inserted norm layers are optimized)
``attach``                        ``on_train_begin``, with the Trainer's optimizer
``on_batch``                      :class:`RegularizedTrainer`'s ``compute_loss``, for training
                                  batches only
``on_loss``                       :class:`RegularizedTrainer`'s ``compute_loss``
``on_after_backward``             ``on_pre_optimizer_step``: once per optimizer step, after
                                  gradient accumulation; penalty gradients, then clipping, as
                                  the recipe orders them
``on_after_step``                 ``on_optimizer_step``, before the scheduler changes the
                                  learning rate
``on_epoch_end``                  ``on_evaluate``: each evaluation is one of the recipe's
                                  epochs, with the Trainer's ``eval_*`` metrics also named
                                  ``val_*`` (``EarlyStopping('val_loss')`` reads
                                  ``eval_loss``)
``on_fit_end``                    ``on_train_end``: restore the best weights, swap in averages
================================  ================================================================

The Trainer's own options that do the same as a member of the recipe are refused in one line
naming both: ``max_grad_norm`` (the Trainer clips by 1.0 unless told ``max_grad_norm=0``) with
a clipping regularizer, ``weight_decay`` with :class:`~reglab.WeightDecay`,
``label_smoothing_factor`` with :class:`~reglab.LabelSmoothing`, and
``load_best_model_at_end`` with an :class:`~reglab.EarlyStopping` that restores the best
weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainerCallback

from ..core import ConfigError, Regularizer
from .common import checked_recipe, epoch_end, recipe_generator, scalar_metrics

__all__ = ["INPUT_KEYS", "Regularize", "RegularizedTrainer", "epoch_metrics"]


#: The inputs a model's forward pass takes its main tensor from, in the order they are looked
#: for: the tensor a batch hook (noise, mixup, augmentation) changes.
INPUT_KEYS = ("pixel_values", "inputs_embeds", "input_values", "input_features", "input_ids")


class Regularize(TrainerCallback):
    """Apply a reglab recipe inside ``transformers.Trainer.train``.

    Penalty gradients, clipping, proximal steps, constraints, averaging and early stopping
    (with the best weights restored) need nothing but the callback. A recipe that changes
    batches (noise, mixup, label smoothing) or adds output penalties (``ConfidencePenalty``)
    also needs the Trainer to be a :class:`RegularizedTrainer`. A recipe that changes the
    model's structure (dropout insertion, norms) is applied by :meth:`prepare` before the
    Trainer is built. The recipe's random draws come from a generator seeded as
    :func:`reglab.fit` seeds it (``seed``, and the process index), on the model's device.

    Args:
        recipe: the regularizer, usually ``reglab.chain(...)``.
        num_classes: passed to ``attach`` (label smoothing, mixup); None reads the model's
            ``config.num_labels``.
        seed: seeds the recipe's generator.

    Raises:
        ConfigError: for a bad argument; at ``on_train_begin``, a Trainer option that does
            what a member of the recipe does (see the module's docstring), a recipe that
            changes batches or adds output penalties in a Trainer that is not a
            :class:`RegularizedTrainer`, a recipe that changes the model's structure without
            :meth:`prepare`, or fp16 (its gradient scaler scales the gradients the penalties
            add to).

    Examples:
        >>> regularize = Regularize(reglab.chain(reglab.L1(1e-4), reglab.EarlyStopping()))
        >>> trainer = Trainer(model=model, args=TrainingArguments("out", eval_strategy="epoch"),
        ...                   train_dataset=train, eval_dataset=val, callbacks=[regularize])
        >>> trainer.train()
    """

    def __init__(
        self, recipe: Regularizer, *, num_classes: int | None = None, seed: int = 0
    ) -> None:
        self.recipe = checked_recipe(recipe, num_classes, seed)
        self.num_classes, self.seed = num_classes, seed
        self._prepared: set[int] = set()
        self.trainer_checked = False  # set by RegularizedTrainer when it holds this callback
        self.evaluations = 0
        self.optimizer_steps = 0
        self.stopped_epoch: int | None = None

    def __repr__(self) -> str:
        return f"Regularize({self.recipe!r})"

    def prepare(self, model: nn.Module) -> nn.Module:
        """The recipe's ``transform_model`` on ``model`` (once; in place where the recipe
        changes modules in place); call it before building the Trainer.

        Returns:
            The model to hand the Trainer.
        """
        if id(model) in self._prepared:
            return model
        transformed = self.recipe.transform_model(model)
        self._prepared.add(id(transformed))
        return transformed

    # ----------------------------------------------------------------- setup
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Refuse doubled options, then ``attach`` with the Trainer's optimizer."""
        model, optimizer = kwargs["model"], kwargs["optimizer"]
        self._check_options(args)
        if self.recipe.implements("transform_model") and id(model) not in self._prepared:
            names = ", ".join(type(r).__name__ for r in self.recipe.members_with("transform_model"))
            raise ConfigError(
                f"The 'recipe' parameter of Regularize changes the model's structure ({names}): "
                "call model = regularize.prepare(model) before building the Trainer. Got a "
                "model it was not applied to."
            )
        needs = [
            type(r).__name__
            for r in self.recipe.regularizers
            if r.implements("on_batch") or r.implements("on_loss")
        ]
        if needs and not self.trainer_checked:
            raise ConfigError(
                f"The 'recipe' parameter of Regularize changes batches or the loss "
                f"({', '.join(needs)}), which a Trainer callback cannot do: build the Trainer "
                "from reglab.integrations.transformers.RegularizedTrainer. Got a plain Trainer."
            )
        device = next(model.parameters()).device
        rank = int(getattr(args, "process_index", 0))
        generator = recipe_generator(device, self.seed, rank)
        num_classes = self.num_classes
        if num_classes is None:
            labels = getattr(getattr(model, "config", None), "num_labels", None)
            num_classes = labels if isinstance(labels, int) and labels >= 2 else None
        self.recipe.attach(model, optimizer, num_classes=num_classes, generator=generator)
        self.evaluations, self.optimizer_steps, self.stopped_epoch = 0, 0, None

    def _check_options(self, args: Any) -> None:
        """One ConfigError naming the Trainer option and the recipe member that do the same."""
        members = {type(r).__name__: r for r in self.recipe.regularizers}
        clippers = [n for n, r in members.items() if r.gradient_role == "clips"]
        doubled = []
        if clippers and float(getattr(args, "max_grad_norm", 0) or 0) > 0:
            doubled.append((f"max_grad_norm={args.max_grad_norm}", clippers[0], "max_grad_norm=0"))
        if "WeightDecay" in members and float(getattr(args, "weight_decay", 0) or 0) > 0:
            doubled.append((f"weight_decay={args.weight_decay}", "WeightDecay", "weight_decay=0"))
        if "LabelSmoothing" in members and float(args.label_smoothing_factor or 0) > 0:
            option = f"label_smoothing_factor={args.label_smoothing_factor}"
            doubled.append((option, "LabelSmoothing", "label_smoothing_factor=0"))
        stopper = members.get("EarlyStopping")
        if stopper is not None and stopper.restore_best and args.load_best_model_at_end:
            option = "load_best_model_at_end=True"
            doubled.append((option, "EarlyStopping", "load_best_model_at_end=False"))
        if doubled:
            option, member, fix = doubled[0]
            raise ConfigError(
                f"The 'recipe' parameter of Regularize has {member} and the Trainer's "
                f"TrainingArguments has {option}: both would apply it. Keep one (e.g. {fix}). "
                "Got both."
            )
        if getattr(args, "fp16", False):
            raise ConfigError(
                "The 'recipe' parameter of Regularize adds to unscaled gradients, which fp16's "
                "gradient scaler would scale: train with bf16=True or in float32. Got fp16=True."
            )

    # ----------------------------------------------------------------- steps
    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Penalty gradients, then clipping: once per optimizer step, after accumulation."""
        self.recipe.on_after_backward()
        self.optimizer_steps += 1

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Proximal steps, constraints and averaging, with the learning rate just used."""
        self.recipe.on_after_step()

    # ----------------------------------------------------------------- evaluations
    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """The recipe's epoch end with the evaluation's metrics; a stop ends training."""
        if state.global_step == 0 or self.stopped_epoch is not None:
            return  # an evaluation before training, or after the stop
        self.evaluations += 1
        if epoch_end(self.recipe, epoch_metrics(kwargs.get("metrics") or {}, self.evaluations)):
            control.should_training_stop = True
            self.stopped_epoch = self.evaluations

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Restore the best weights, swap in averaged weights."""
        self.recipe.on_fit_end()


def epoch_metrics(metrics: Mapping[str, Any], epoch: int) -> dict[str, float]:
    """An evaluation's numeric metrics as the recipe's epoch record: ``epoch``, each metric
    under its own name and ``eval_x`` also as ``val_x``.

    Examples:
        >>> epoch_metrics({"eval_loss": 0.4, "epoch": 2.0}, 2)
        {'epoch': 2, 'eval_loss': 0.4, 'val_loss': 0.4}
    """
    record: dict[str, float] = {"epoch": epoch}
    for key, value in scalar_metrics(metrics).items():
        record[key] = value
        if key.startswith("eval_"):
            record.setdefault(f"val_{key[5:]}", value)
    return record


class RegularizedTrainer(Trainer):
    """A ``transformers.Trainer`` whose training loss goes through a :class:`Regularize`
    callback's batch and loss hooks: the model's main input (the first of :data:`INPUT_KEYS`
    in the batch) and ``labels`` through ``on_batch`` (noise, mixup, label smoothing), then
    cross-entropy against the targets that come back (soft ones included) or the mean squared
    error for float labels, then ``on_loss`` (output penalties). Evaluation and a recipe
    without such hooks use the Trainer's own loss.

    It is the Trainer's ``compute_loss`` overridden, and works as a mixin: list it first among
    the bases of a Trainer subclass of your own (``class Mine(RegularizedTrainer, SFTTrainer)``)
    and the other's ``compute_loss`` serves evaluation and recipes without such hooks. The
    loss it computes is a mean over the batch, which the Trainer divides by the gradient
    accumulation steps.

    Raises:
        ConfigError: at ``__init__``, no :class:`Regularize` among the callbacks; at a
            training step, a batch hook that would change token ids (integer inputs: noise
            and mixup need an embedding or image input), or outputs that are not ``(N, C)``
            logits.

    Examples:
        >>> regularize = Regularize(reglab.chain(reglab.LabelSmoothing(0.1), reglab.L2(1e-4)))
        >>> trainer = RegularizedTrainer(model=model, args=args, train_dataset=train,
        ...                              callbacks=[regularize])
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        found = [c for c in self.callback_handler.callbacks if isinstance(c, Regularize)]
        if not found:
            raise ConfigError(
                "The 'callbacks' parameter of RegularizedTrainer must hold a "
                "reglab.integrations.transformers.Regularize. Got none."
            )
        self.regularize = found[0]
        self.regularize.trainer_checked = True

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """The recipe's batch and loss hooks around the model's forward pass (training only)."""
        recipe = self.regularize.recipe
        hooks = recipe.implements("on_batch") or recipe.implements("on_loss")
        if not model.training or not hooks or "labels" not in inputs:
            self.loss_is_scaled_for_ga = None  # the Trainer's own rule
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        key = next((k for k in INPUT_KEYS if isinstance(inputs.get(k), torch.Tensor)), None)
        if key is None:
            x = torch.empty(labels.shape[0], 0, device=labels.device)
            _, y = recipe.on_batch(x, labels)
        else:
            given = inputs[key]
            seen = given if given.is_floating_point() else given.float()
            x, y = recipe.on_batch(seen, labels)
            if x is not seen and not given.is_floating_point():
                raise ConfigError(
                    f"The 'recipe' parameter of Regularize changes the model's inputs, which "
                    f"are integer {key} here: noise and mixup need an embedding or image input "
                    "(inputs_embeds, pixel_values). Got token ids."
                )
            inputs[key] = x if given.is_floating_point() else given
        outputs = model(**inputs)
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
        loss = recipe.on_loss(_loss(logits, y), logits)
        self.loss_is_scaled_for_ga = False  # a mean over this batch: the Trainer divides
        return (loss, outputs) if return_outputs else loss


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for class indices or soft targets over ``(N, C)`` logits; mean squared
    error for float labels of a regression head."""
    if logits.ndim != 2:
        raise ConfigError(
            "The model of RegularizedTrainer must return (N, C) logits for a recipe with batch "
            f"or loss hooks. Got logits of shape {tuple(logits.shape)}."
        )
    if y.is_floating_point() and y.shape == logits.shape and logits.shape[1] > 1:
        return F.cross_entropy(logits.float(), y)  # soft targets
    if y.is_floating_point():
        return F.mse_loss(logits.float().view(-1), y.float().view(-1))
    return F.cross_entropy(logits.float(), y)
