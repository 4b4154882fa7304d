"""The Lightning callback against reglab.fit with a real Trainer on CPU (issue 17)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip(
    "lightning", reason="lightning is not installed (pip install reglab[lightning])"
)

import lightning.pytorch as L
from lightning_models import Net, Plain, network
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

import reglab
from reglab.integrations.lightning import Regularize

HERE = Path(__file__).parent


def _data(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + 64, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return (x[:n], y[:n]), (x[n:], y[n:])


def _trainer(callbacks, epochs, **kw):
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kw,
    )


def _loaders(train, val, batch_size=32, seed=0):
    """The order reglab.fit draws for tensors: one randperm per epoch from Generator(seed)."""
    dataset = TensorDataset(*train)
    sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return (
        DataLoader(dataset, batch_size=batch_size, sampler=sampler),
        DataLoader(TensorDataset(*val), batch_size=len(val[0])),
    )


def _both(recipe_fn, epochs=6, fit_batch=32, **trainer_kw):
    train, val = _data()
    alone = reglab.fit(
        network(), train, val, recipe=recipe_fn(), epochs=epochs, lr=1e-2, batch_size=fit_batch,
        seed=0, num_classes=3,
    )  # fmt: skip
    module = Net(network())
    callback = Regularize(recipe_fn(), num_classes=3, seed=0)
    _trainer([callback], epochs, **trainer_kw).fit(module, *_loaders(train, val))
    return alone, module, callback


def _same_weights(a, b, atol=1e-5):
    pa, pb = list(a.parameters()), list(b.parameters())
    assert len(pa) == len(pb)
    for p, q in zip(pa, pb, strict=True):
        torch.testing.assert_close(p, q, atol=atol, rtol=1e-4)


def test_penalty_recipe_gives_the_weights_of_reglab_fit():
    recipe = lambda: reglab.chain(
        reglab.L1(1e-3), reglab.L2(1e-3), reglab.ClipGradNorm(0.5), reglab.MaxNorm(0.6)
    )
    alone, module, callback = _both(recipe)
    _same_weights(alone.model, module.net)
    assert float(module.net[0].weight.norm(dim=1).max()) <= 0.6 + 1e-6  # after-step ran
    assert callback.recipe.logs()["clip_fraction"] > 0  # clipping ran, on the penalized grads


def test_dropout_and_noise_recipe_gives_the_weights_of_reglab_fit():
    recipe = lambda: reglab.chain(reglab.Dropout(0.3), reglab.GaussianNoise(0.1), reglab.EMA(0.9))
    alone, module, _ = _both(recipe)
    assert any(type(m).__name__ == "DropoutLayer" for m in module.net.modules())
    _same_weights(alone.model, module.net)


def test_early_stopping_stops_at_the_same_epoch_and_restores_the_best_weights():
    recipe = lambda: reglab.chain(reglab.EarlyStopping("val_loss", patience=2))
    alone, module, callback = _both(lambda: recipe(), epochs=60)
    assert alone.status == "stopped_early"
    assert callback.stopped_epoch == alone.epochs_run
    best = recipe_best = callback.recipe.regularizers[0].best_epoch
    assert (best == alone.model is not None and best) or recipe_best  # the same best epoch below
    assert callback.recipe.regularizers[0].best_epoch == (
        min(range(len(alone.epochs)), key=lambda i: alone.epochs[i]["val_loss"]) + 1
    )
    _same_weights(alone.model, module.net, atol=1e-4)


def test_gradient_accumulation_applies_penalties_once_per_optimizer_step():
    recipe = lambda: reglab.chain(reglab.L2(1e-2), reglab.L1(1e-3))
    alone, module, callback = _both(recipe, fit_batch=64, accumulate_grad_batches=2)
    assert callback._steps == 6 * 2  # 128 samples, 64 per step, 6 epochs
    _same_weights(alone.model, module.net, atol=1e-4)


def test_bf16_mixed_precision_keeps_float32_weights_and_applies_penalties():
    recipe = lambda: reglab.chain(reglab.L2(1e-1))
    alone, module, _ = _both(recipe, precision="bf16-mixed")
    assert all(p.dtype == torch.float32 for p in module.parameters())
    norm = lambda m: float(sum(p.pow(2).sum() for p in m.parameters()))
    assert norm(module.net) == pytest.approx(norm(alone.model), rel=0.05)


def test_clipping_sees_unscaled_gradients_under_a_grad_scaler():
    """With 16-bit AMP the scaler multiplies the loss by 65536; clipping at a norm no real
    gradient reaches clips nothing only if it sees unscaled gradients."""
    train, val = _data()
    callback = Regularize(reglab.chain(reglab.ClipGradNorm(1e3)), seed=0)
    try:
        trainer = _trainer([callback], 2, precision="16-mixed")
    except Exception as exc:  # pragma: no cover - depends on the Lightning build
        pytest.skip(f"16-mixed precision is not available on this CPU build: {exc}")
    trainer.fit(Net(network()), *_loaders(train, val))
    assert callback.recipe.logs()["clip_fraction"] == 0.0


def test_both_clipping_is_refused_in_one_line():
    train, val = _data()
    callback = Regularize(reglab.chain(reglab.ClipGradNorm(1.0)))
    with pytest.raises(reglab.ConfigError, match="the Trainer clips too .gradient_clip_val=0.5"):
        _trainer([callback], 1, gradient_clip_val=0.5).fit(Net(network()), *_loaders(train, val))


def test_batch_changing_recipe_without_the_mixin_is_refused():
    train, val = _data()
    callback = Regularize(reglab.chain(reglab.Mixup(0.2)), num_classes=3)
    with pytest.raises(reglab.ConfigError, match="add reglab.integrations.lightning.Regularized"):
        _trainer([callback], 1).fit(Plain(network()), _loaders(train, val)[0])


def test_mixup_through_the_mixin_trains_on_soft_targets_only_in_training():
    seen = []
    train, val = _data()

    class Watch(Net):
        def training_step(self, batch, batch_idx):
            seen.append(("train", batch[1].ndim))
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch, batch_idx):
            seen.append(("val", batch[1].ndim))
            return super().validation_step(batch, batch_idx)

    callback = Regularize(reglab.chain(reglab.Mixup(0.4)), num_classes=3)
    _trainer([callback], 1).fit(Watch(network()), *_loaders(train, val))
    assert {s for s in seen if s[0] == "train"} == {("train", 2)}  # soft targets
    assert {s for s in seen if s[0] == "val"} == {("val", 1)}  # untouched


def test_output_penalty_without_regularized_loss_is_refused():
    train, val = _data()

    class Forgets(Net):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

    callback = Regularize(reglab.chain(reglab.ConfidencePenalty(0.1)))
    with pytest.raises(reglab.ConfigError, match=r"return self.regularized_loss\(loss, output\)"):
        _trainer([callback], 1).fit(Forgets(network()), *_loaders(train, val))


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(reglab.ConfigError, match="The 'recipe' parameter of Regularize must be"):
        Regularize("l2")
    with pytest.raises(reglab.ConfigError, match="The 'num_classes' parameter of Regularize"):
        Regularize(reglab.chain(), num_classes=1)


def test_state_dict_round_trips_early_stopping():
    callback = Regularize(reglab.chain(reglab.L2(1e-3), reglab.EarlyStopping(patience=3)))
    stopper = callback.recipe.regularizers[1]
    stopper.best, stopper.best_epoch, stopper.wait = 0.25, 4, 2
    other = Regularize(reglab.chain(reglab.L2(1e-3), reglab.EarlyStopping(patience=3)))
    other.load_state_dict(callback.state_dict())
    restored = other.recipe.regularizers[1]
    assert (restored.best, restored.best_epoch, restored.wait) == (0.25, 4, 2)


def test_ddp_two_processes_stop_on_the_same_epoch(tmp_path):
    """Two CPU ranks (gloo) see different validation losses; rank 1's stops improving. Both
    ranks stop together, at rank 1's epoch, as Lightning's own EarlyStopping would."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    done = subprocess.run(
        [sys.executable, str(HERE / "lightning_ddp_script.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    stops = sorted(tmp_path.glob("rank*.txt"))
    assert [p.name for p in stops] == ["rank0.txt", "rank1.txt"]
    epochs = {p.read_text().split()[0] for p in stops}
    assert epochs == {"4"}  # rank 1: best at epoch 2, patience 2
    assert {p.read_text().split()[1] for p in stops} == {"True"}  # best weights restored


def test_the_library_and_the_lab_never_import_lightning():
    code = "import sys, reglab, reglab.lab, reglab.cli; print('lightning' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


class _LogsAtEpochEnd(Net):
    """Logs ``sched`` in the module's own on_train_epoch_end: a scripted sequence by epoch."""

    SCHED = [5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 2.0, 2.5, 2.6, 2.7, 2.8, 2.9]

    def on_train_epoch_end(self):
        self.log("sched", self.SCHED[self.current_epoch])


def _stop_epoch(callbacks):
    train, val = _data()
    trainer = _trainer(callbacks, epochs=len(_LogsAtEpochEnd.SCHED))
    trainer.fit(_LogsAtEpochEnd(network()), *_loaders(train, val))
    return trainer.current_epoch


@pytest.mark.parametrize("on_train_epoch_end", [True, None])
def test_a_metric_the_module_logs_at_epoch_end_stops_on_lightnings_epoch(on_train_epoch_end):
    """Lightning calls callbacks before the module's on_train_epoch_end and its monitoring ones
    after it: Regularize raised 'Got sched' at epoch 1 and then saw every value one epoch late."""
    from lightning.pytorch.callbacks import EarlyStopping as Lightning

    theirs = _stop_epoch(
        [Lightning("sched", patience=2, check_on_train_epoch_end=on_train_epoch_end)]
    )
    callback = Regularize(reglab.chain(reglab.EarlyStopping("sched", patience=2)))
    ours = _stop_epoch([callback])
    assert theirs == ours == 5  # epochs 4 and 5 do not beat 3.0: 5 epochs ran
    stopper = callback.recipe.regularizers[0]
    assert (stopper.best, stopper.best_epoch, callback.stopped_epoch) == (3.0, 3, 5)


def test_several_stoppers_stop_where_lightnings_several_stop():
    from lightning.pytorch.callbacks import EarlyStopping as Lightning

    theirs = _stop_epoch(
        [
            Lightning("val_loss", patience=50, check_on_train_epoch_end=True),
            Lightning("sched", patience=10, stopping_threshold=2.5),
        ]
    )
    recipe = reglab.chain(
        reglab.EarlyStopping("val_loss", patience=50),
        reglab.EarlyStopping("sched", patience=10, stopping_threshold=2.5),
    )
    callback = Regularize(recipe)
    ours = _stop_epoch([callback])
    assert theirs == ours == 7  # sched 2.0 < 2.5 at epoch 7
    assert recipe.regularizers[1].stop_reason is reglab.StopReason.STOPPING_THRESHOLD


def test_the_epoch_end_helper_leaves_the_trainer_as_it_found_it():
    callback = Regularize(reglab.chain(reglab.EarlyStopping("sched", patience=2)))
    train, val = _data()
    trainer = _trainer([callback], epochs=3)
    before = list(trainer.callbacks)
    trainer.fit(_LogsAtEpochEnd(network()), *_loaders(train, val))
    assert trainer.callbacks == before
