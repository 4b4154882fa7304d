"""The Hugging Face Trainer callback and mixin with a real ``transformers.Trainer`` on CPU and a
tiny BERT built from a config (no download), mirroring the Lightning tests (issue 28 §1)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

pytest.importorskip(
    "transformers", reason="transformers is not installed (pip install reglab[transformers])"
)
pytest.importorskip("accelerate", reason="the Trainer needs accelerate (reglab[transformers])")

import torch.nn.functional as F
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import reglab
from reglab.integrations.transformers import Regularize, RegularizedTrainer, epoch_metrics

VOCAB, LENGTH = 64, 12


def _model(seed=0):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=LENGTH, num_labels=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return BertForSequenceClassification(config)


class _Sequences(torch.utils.data.Dataset):
    """Generated token sequences labelled by whether token 7 occurs in them."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, VOCAB, (n, LENGTH), generator=g)
        self.labels = (self.ids == 7).any(1).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": self.labels[i]}


TRAIN, VAL = _Sequences(192, 0), _Sequences(64, 1)


def _args(tmp_path, **kw):
    options = {
        "per_device_train_batch_size": 16, "per_device_eval_batch_size": 64,
        "num_train_epochs": 2, "learning_rate": 1e-3, "max_grad_norm": 0.0,
        "use_cpu": True, "report_to": [], "save_strategy": "no", "logging_strategy": "no",
        "disable_tqdm": True, "seed": 0, "data_seed": 0, "dataloader_num_workers": 0,
    }  # fmt: skip
    options.update(kw)
    return TrainingArguments(str(tmp_path / "out"), **options)


def _train(tmp_path, recipe, *, trainer=Trainer, callbacks=(), model=None, **kw):
    regularize = Regularize(recipe, seed=0)
    model = model if model is not None else _model()
    model = regularize.prepare(model)
    built = trainer(
        model=model, args=_args(tmp_path, **kw), train_dataset=TRAIN, eval_dataset=VAL,
        callbacks=[*callbacks, regularize],  # a test's callbacks see each evaluation first
    )  # fmt: skip
    built.train()
    return built, regularize


def _weights(model):
    """The parameters a penalty selects by default (weights: no bias, no LayerNorm)."""
    return list(reglab.select_params(model).params)


def _zero_fraction(model):
    weights = _weights(model)
    return sum(int((p == 0).sum()) for p in weights) / sum(p.numel() for p in weights)


def test_l1_with_proximal_steps_gives_exact_zeros(tmp_path):
    trainer, _ = _train(tmp_path, reglab.chain(reglab.L1(1.0)))
    plain = _train(tmp_path / "plain", reglab.chain())[0].model
    assert _zero_fraction(trainer.model) > 0.2, _zero_fraction(trainer.model)
    # without the penalty only the padding token's embedding row (never used) is zero
    assert _zero_fraction(plain) < 0.01


class _HandWrittenL2(Trainer):
    """The same L2 update written by hand: ``strength / 2 * sum(w ** 2)`` over the weights
    added to each micro-batch's loss (the Trainer divides it by the accumulation steps, as it
    divides the loss)."""

    strength = 1e-2

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        penalty = sum(p.pow(2).sum() for p in _weights(model))
        if num_items_in_batch is not None and self.model_accepts_loss_kwargs:
            penalty = penalty / self.current_gradient_accumulation_steps  # not divided after
        return loss + self.strength / 2 * penalty


@pytest.mark.parametrize("accumulation", [1, 3])
def test_a_penalty_recipe_gives_the_weights_of_the_same_update_written_by_hand(
    tmp_path, accumulation
):
    recipe = reglab.chain(reglab.L2(_HandWrittenL2.strength))
    ours, regularize = _train(tmp_path / "a", recipe, gradient_accumulation_steps=accumulation)
    hand = _HandWrittenL2(
        model=_model(), args=_args(tmp_path / "b", gradient_accumulation_steps=accumulation),
        train_dataset=TRAIN, eval_dataset=VAL,
    )  # fmt: skip
    hand.train()
    # penalties once per optimizer step: 12 micro-batches an epoch, 4 steps with 3 of them
    assert regularize.optimizer_steps == ours.state.global_step == 2 * 12 // accumulation
    for p, q in zip(ours.model.parameters(), hand.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=2e-5, rtol=1e-4)
    plain = _train(tmp_path / "c", reglab.chain(), gradient_accumulation_steps=accumulation)[0]
    moved = max(
        float((p - q).detach().abs().max())
        for p, q in zip(ours.model.parameters(), plain.model.parameters(), strict=True)
    )
    assert moved > 1e-3  # the penalty changed the weights: the comparison above is not idle


class _Scripted(TrainerCallback):
    """A scripted validation score per evaluation, and a copy of the weights at each one."""

    SCORES = [0.50, 0.70, 0.60, 0.65, 0.40, 0.30, 0.20, 0.10]

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        metrics["eval_score"] = self.SCORES[len(self.weights)]
        self.weights.append({k: v.detach().clone() for k, v in model.state_dict().items()})


def test_early_stopping_stops_at_the_scripted_epoch_and_restores_the_best_weights(tmp_path):
    scripted = _Scripted()
    recipe = reglab.chain(reglab.EarlyStopping("val_score", mode="max", patience=2))
    trainer, regularize = _train(
        tmp_path, recipe, num_train_epochs=8, eval_strategy="epoch", callbacks=[scripted]
    )
    # best at the 2nd evaluation (0.70); 0.60 and 0.65 do not beat it: stop at the 4th
    assert regularize.stopped_epoch == 4 and len(scripted.weights) == 4
    assert trainer.state.epoch == pytest.approx(4.0)
    stopper = recipe.regularizers[0]
    assert stopper.best_epoch == 2 and stopper.best == pytest.approx(0.70)
    final = trainer.model.state_dict()
    for key, value in scripted.weights[1].items():
        assert torch.equal(final[key], value), key
    assert not torch.equal(final["classifier.weight"], scripted.weights[3]["classifier.weight"])


def test_bf16_mixed_precision_keeps_float32_weights_and_applies_penalties(tmp_path):
    model, seen = _model(), set()
    model.classifier.register_forward_hook(lambda m, args, out: seen.add(out.dtype))
    recipe = reglab.chain(reglab.L1(1.0), reglab.L2(1e-3))
    trainer, _ = _train(tmp_path, recipe, model=model, bf16=True)
    assert torch.bfloat16 in seen  # the forward pass ran under bf16 autocast
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert _zero_fraction(trainer.model) > 0.2


def test_label_smoothing_through_the_mixin_is_the_smoothed_cross_entropy(tmp_path):
    recipe = reglab.chain(reglab.LabelSmoothing(0.2))
    regularize = Regularize(recipe)
    trainer = RegularizedTrainer(
        model=_model(), args=_args(tmp_path), train_dataset=TRAIN, callbacks=[regularize]
    )
    recipe.attach(trainer.model, None, num_classes=2)
    batch = {k: torch.stack([TRAIN[i][k] for i in range(16)]) for k in TRAIN[0]}
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    expected = F.cross_entropy(logits.logits, batch["labels"], label_smoothing=0.2)
    torch.testing.assert_close(loss, expected)
    trainer.model.eval()  # evaluation keeps the Trainer's own (hard-label) loss
    hard = trainer.compute_loss(trainer.model, batch)
    torch.testing.assert_close(hard, F.cross_entropy(logits.logits, batch["labels"]))


def test_a_recipe_and_a_trainer_option_that_do_the_same_are_refused_in_one_line(tmp_path):
    cases = [
        (reglab.ClipGradNorm(1.0), {"max_grad_norm": 1.0}, "ClipGradNorm", "max_grad_norm=1.0"),
        (reglab.WeightDecay(0.1), {"weight_decay": 0.01}, "WeightDecay", "weight_decay=0.01"),
        (reglab.LabelSmoothing(0.1), {"label_smoothing_factor": 0.1}, "LabelSmoothing",
         "label_smoothing_factor=0.1"),
    ]  # fmt: skip
    for member, option, name, shown in cases:
        with pytest.raises(reglab.ConfigError) as caught:
            _train(tmp_path, reglab.chain(member), trainer=RegularizedTrainer, **option)
        message = str(caught.value)
        assert name in message and shown in message and "\n" not in message, message


def test_a_batch_changing_recipe_in_a_plain_trainer_is_refused(tmp_path):
    with pytest.raises(reglab.ConfigError, match="build the Trainer from .*RegularizedTrainer"):
        _train(tmp_path, reglab.chain(reglab.LabelSmoothing(0.1)))
    with pytest.raises(reglab.ConfigError, match="noise and mixup need an embedding"):
        _train(tmp_path, reglab.chain(reglab.GaussianNoise(0.1)), trainer=RegularizedTrainer)


def test_a_structure_recipe_needs_prepare_before_the_trainer(tmp_path):
    regularize = Regularize(reglab.chain(reglab.Dropout(0.1)))
    trainer = Trainer(model=_model(), args=_args(tmp_path), train_dataset=TRAIN,
                      callbacks=[regularize])  # fmt: skip
    with pytest.raises(reglab.ConfigError, match=r"call model = regularize.prepare\(model\)"):
        trainer.train()
    prepared = _train(tmp_path / "ok", reglab.chain(reglab.Dropout(0.1)))[0].model
    assert any(type(m).__name__ == "DropoutLayer" for m in prepared.modules())


def test_epoch_metrics_names_the_evaluation_metrics_as_validation_ones():
    got = epoch_metrics({"eval_loss": 0.4, "eval_runtime": 1.0, "epoch": 2.0, "x": "y"}, 3)
    assert got == {"epoch": 3, "eval_loss": 0.4, "val_loss": 0.4, "eval_runtime": 1.0,
                   "val_runtime": 1.0}  # fmt: skip


def test_the_library_and_the_lab_never_import_transformers():
    code = "import sys, reglab, reglab.lab, reglab.cli; print('transformers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr
