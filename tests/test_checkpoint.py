"""Checkpoints: a run interrupted at an epoch end and resumed ends bitwise where an
uninterrupted run does, for fit and for the population engine; bad checkpoints restart."""

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

import reglab
from reglab import checkpoint as ckpt_module
from reglab.lab.engine.population import Member, fit_population


class Kill(Exception):
    """Stands for a crash at an epoch end (after that epoch's checkpoint, or before)."""


def _model(seed=0, width=16):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 3))


def _images(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 3))


def _strip(history):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in history.epochs]


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _kill_at(epoch):
    def on_epoch(record):
        if record["epoch"] == epoch:
            raise Kill

    return on_epoch


RECIPES = {
    "mixup": lambda: reglab.chain(reglab.Mixup(0.4), reglab.L2(1e-3)),
    "relative_noise": lambda: reglab.chain(reglab.GaussianNoise(0.2, relative=True)),
    "clipping": lambda: reglab.chain(reglab.L1(1e-3), reglab.ClipGradNorm(0.05)),
    "adaptive_clip": lambda: reglab.chain(reglab.AdaptiveClip(0.01)),
    "ema": lambda: reglab.chain(reglab.EMA(0.9)),
    "swa": lambda: reglab.chain(reglab.SWA(start=3, lr=1e-3)),
    "early_stopping": lambda: reglab.chain(reglab.EarlyStopping(patience=100)),
    "dropout": lambda: reglab.chain(reglab.Dropout(0.3), reglab.DropConnect(0.2)),
    "label_smoothing": lambda: reglab.chain(reglab.LabelSmoothing(0.1), reglab.WeightDecay(0.1)),
    "proximal_l1": lambda: reglab.chain(reglab.L1(1e-2), reglab.MaxNorm(1.0)),
}


@pytest.mark.parametrize("name", sorted(RECIPES))
@pytest.mark.parametrize("every", [0, 0.0001])
def test_fit_resumed_after_a_crash_equals_the_uninterrupted_run(toy_data, tmp_path, name, every):
    train, val = toy_data
    kwargs = {"epochs": 6, "seed": 3, "batch_size": 16}
    ref = reglab.fit(_model(), train, val, recipe=RECIPES[name](), **kwargs)
    ck = reglab.Checkpoint(tmp_path / "run.pt", every=every)
    with pytest.raises(Kill):
        reglab.fit(
            _model(),
            train,
            val,
            recipe=RECIPES[name](),
            checkpoint=ck,
            on_epoch=_kill_at(4),
            **kwargs,
        )
    assert ck.path.is_file()
    resumed = reglab.fit(_model(), train, val, recipe=RECIPES[name](), checkpoint=ck, **kwargs)
    assert _strip(resumed) == _strip(ref)
    assert resumed.status == ref.status and resumed.message == ref.message
    assert _same_weights(resumed.model, ref.model)
    assert not ck.path.exists()  # removed when training ended


def test_fit_resumes_cutmix_on_images(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 3, 4, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    recipe = lambda: reglab.chain(reglab.CutMix(1.0), reglab.Cutout(2))
    ref = reglab.fit(_images(), (x, y), recipe=recipe(), epochs=5, seed=1)
    ck = reglab.Checkpoint(tmp_path / "c.pt", every=0)
    with pytest.raises(Kill):
        reglab.fit(_images(), (x, y), recipe=recipe(), epochs=5, seed=1, checkpoint=ck,
                   on_epoch=_kill_at(2))  # fmt: skip
    resumed = reglab.fit(_images(), (x, y), recipe=recipe(), epochs=5, seed=1, checkpoint=ck)
    assert _strip(resumed) == _strip(ref) and _same_weights(resumed.model, ref.model)


def test_fit_resumes_a_dataloader_with_its_shuffling_generator(toy_data, tmp_path):
    (x, y), val = toy_data

    def loader():
        ds = TensorDataset(x, y)
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(5))
        return DataLoader(ds, batch_size=16, sampler=sampler)

    ref = reglab.fit(_model(), loader(), val, epochs=5)
    ck = reglab.Checkpoint(tmp_path / "d.pt", every=0)
    with pytest.raises(Kill):
        reglab.fit(_model(), loader(), val, epochs=5, checkpoint=ck, on_epoch=_kill_at(3))
    resumed = reglab.fit(_model(), loader(), val, epochs=5, checkpoint=ck)
    assert _strip(resumed) == _strip(ref) and _same_weights(resumed.model, ref.model)


def test_fit_resumes_early_stopping_that_restores_an_early_best(toy_data, tmp_path):
    train, val = toy_data
    # lr so high the first epochs are the best: the best weights live only in the state
    kwargs = {"epochs": 12, "lr": 0.5, "seed": 0}
    recipe = lambda: reglab.chain(reglab.EarlyStopping(patience=4))
    ref = reglab.fit(_model(), train, val, recipe=recipe(), **kwargs)
    ck = reglab.Checkpoint(tmp_path / "e.pt", every=0)
    with pytest.raises(Kill):
        reglab.fit(
            _model(), train, val, recipe=recipe(), checkpoint=ck, on_epoch=_kill_at(3), **kwargs
        )
    resumed = reglab.fit(_model(), train, val, recipe=recipe(), checkpoint=ck, **kwargs)
    assert resumed.status == ref.status and resumed.message == ref.message
    assert _strip(resumed) == _strip(ref) and _same_weights(resumed.model, ref.model)


def _crashed_checkpoint(toy_data, path, tag=""):
    train, val = toy_data
    ck = reglab.Checkpoint(path, every=0, tag=tag)
    with pytest.raises(Kill):
        reglab.fit(_model(), train, val, epochs=6, checkpoint=ck, on_epoch=_kill_at(3))
    return ck


def test_truncated_checkpoint_warns_once_and_the_run_restarts_with_correct_numbers(
    toy_data, tmp_path
):
    train, val = toy_data
    ref = reglab.fit(_model(), train, val, epochs=6)
    ck = _crashed_checkpoint(toy_data, tmp_path / "t.pt")
    data = ck.path.read_bytes()
    ck.path.write_bytes(data[: len(data) // 2])
    with pytest.warns(reglab.CheckpointWarning, match=r"t\.pt ignored: it is unreadable") as w:
        resumed = reglab.fit(_model(), train, val, epochs=6, checkpoint=ck)
    assert len(w) == 1
    assert _strip(resumed) == _strip(ref) and _same_weights(resumed.model, ref.model)


def test_checkpoint_of_another_run_is_not_resumed_from(toy_data, tmp_path):
    train, val = toy_data
    ref = reglab.fit(_model(), train, val, epochs=6)
    _crashed_checkpoint(toy_data, tmp_path / "o.pt", tag="study-a")
    other = reglab.Checkpoint(tmp_path / "o.pt", every=0, tag="study-b")
    with pytest.warns(reglab.CheckpointWarning, match="belongs to another run"):
        resumed = reglab.fit(_model(), train, val, epochs=6, checkpoint=other)
    assert _strip(resumed) == _strip(ref) and _same_weights(resumed.model, ref.model)


def test_checkpoint_of_another_format_is_not_resumed_from(toy_data, tmp_path, monkeypatch):
    train, val = toy_data
    ref = reglab.fit(_model(), train, val, epochs=6)
    ck = _crashed_checkpoint(toy_data, tmp_path / "f.pt")
    monkeypatch.setattr(ckpt_module, "FORMAT", ckpt_module.FORMAT + 1)
    with pytest.warns(reglab.CheckpointWarning, match="has format 1, not 2"):
        resumed = reglab.fit(_model(), train, val, epochs=6, checkpoint=ck)
    assert _strip(resumed) == _strip(ref)


def test_checkpoint_that_does_not_fit_the_model_rolls_back_and_restarts(toy_data, tmp_path):
    train, val = toy_data
    ck = _crashed_checkpoint(toy_data, tmp_path / "m.pt")  # a 16-wide model's state
    ref = reglab.fit(_model(width=8), train, val, epochs=6)
    with pytest.warns(reglab.CheckpointWarning, match="does not fit this run"):
        resumed = reglab.fit(_model(width=8), train, val, epochs=6, checkpoint=ck)
    assert _strip(resumed) == _strip(ref) and _same_weights(resumed.model, ref.model)
    assert not ck.path.exists()


def test_checkpoint_write_failure_warns_once_and_training_goes_on(toy_data, tmp_path, monkeypatch):
    train, val = toy_data
    monkeypatch.setattr(ckpt_module, "_write_warned", False)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    ck = reglab.Checkpoint(blocker / "x.pt", every=0)  # its folder cannot be made
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        first = reglab.fit(_model(), train, val, epochs=4, checkpoint=ck)
        reglab.fit(_model(), train, val, epochs=4, checkpoint=ck)
    found = [x for x in w if issubclass(x.category, reglab.CheckpointWarning)]
    assert len(found) == 1 and "could not be written" in str(found[0].message)
    assert first.epochs_run == 4 and ck.saves == 0


def test_checkpoint_every_throttles_the_saves(toy_data, tmp_path):
    train, val = toy_data
    every_epoch = reglab.Checkpoint(tmp_path / "a.pt", every=0)
    reglab.fit(_model(), train, val, epochs=5, checkpoint=every_epoch)
    hourly = reglab.Checkpoint(tmp_path / "b.pt", every=3600)
    reglab.fit(_model(), train, val, epochs=5, checkpoint=hourly)
    assert every_epoch.saves == 4  # every epoch end but the last
    assert hourly.saves == 0


def test_request_stop_saves_at_the_epoch_end_and_raises_interrupted(toy_data, tmp_path):
    train, val = toy_data
    ref = reglab.fit(_model(), train, val, epochs=6)
    ck = reglab.Checkpoint(tmp_path / "s.pt", every=3600)  # only the stop saves

    def stop_at_3(record):
        if record["epoch"] == 3:
            ckpt_module.request_stop()

    try:
        with pytest.raises(reglab.Interrupted):
            reglab.fit(_model(), train, val, epochs=6, checkpoint=ck, on_epoch=stop_at_3)
        assert ck.saves == 1
        with pytest.raises(reglab.Interrupted):  # a run that has not started does not start
            reglab.fit(_model(), train, val, epochs=6, checkpoint=ck)
    finally:
        ckpt_module.clear_stop()
    resumed = reglab.fit(_model(), train, val, epochs=6, checkpoint=ck)
    assert _strip(resumed)[:3] == _strip(ref)[:3] and _strip(resumed) == _strip(ref)
    assert _same_weights(resumed.model, ref.model)


def test_checkpoint_rejects_a_negative_interval(tmp_path):
    with pytest.raises(reglab.ConfigError, match="The 'every' parameter of Checkpoint must be"):
        reglab.Checkpoint(tmp_path / "x.pt", every=-1)


def test_chain_state_dict_holds_every_member_and_checks_the_count(mlp):
    recipe = reglab.chain(reglab.L2(0.1), reglab.ClipGradNorm(1.0), reglab.EarlyStopping())
    recipe.attach(mlp, torch.optim.SGD(mlp.parameters(), lr=0.1), num_classes=3)
    state = recipe.state_dict()
    assert state["regularizers"][0] == {}  # stateless
    assert state["regularizers"][1]["steps"] == 0
    with pytest.raises(reglab.ConfigError, match="must hold one state per member. Got 1 for 3"):
        recipe.load_state_dict({"regularizers": [{}]})


# ----------------------------------------------------------------- the population engine

POP_RECIPES = [
    lambda: reglab.chain(),
    lambda: reglab.chain(reglab.L2(1e-2)),
    lambda: reglab.chain(reglab.Mixup(0.4), reglab.EMA(0.9)),
    lambda: reglab.chain(reglab.Dropout(0.3), reglab.EarlyStopping(patience=1, min_delta=1.0)),
    lambda: reglab.chain(reglab.GaussianNoise(0.1, relative=True), reglab.ClipGradNorm(0.5)),
]


def _members(toy_data):
    train, val = toy_data
    return [Member(_model(s), r(), train, val, s) for s in range(2) for r in POP_RECIPES]


@pytest.mark.parametrize("kill", [1, 4])
def test_population_resumed_after_a_crash_equals_the_uninterrupted_run(toy_data, tmp_path, kill):
    options = {"epochs": 7, "num_classes": 3, "batch_size": 16}
    ref = fit_population(_members(toy_data), **options)

    def crash(epoch, alive):
        if epoch == kill:
            raise Kill

    ck = reglab.Checkpoint(tmp_path / "p.pt", every=0)
    with pytest.raises(Kill):
        fit_population(_members(toy_data), checkpoint=ck, on_epoch=crash, **options)
    resumed = fit_population(_members(toy_data), checkpoint=ck, **options)
    # the early-stopping members left at epoch 2: after kill=4 they come from the checkpoint
    assert [h.status for h in ref].count("stopped_early") == 2
    for a, b in zip(resumed, ref, strict=True):
        assert (a.status, a.message) == (b.status, b.message)
        assert _strip(a) == _strip(b) and _same_weights(a.model, b.model)
    assert not ck.path.exists()


def test_population_checkpoint_of_other_members_restarts_with_a_warning(toy_data, tmp_path):
    options = {"epochs": 4, "num_classes": 3}
    ck = reglab.Checkpoint(tmp_path / "q.pt", every=0)

    def crash(epoch, alive):
        if epoch == 2:
            raise Kill

    with pytest.raises(Kill):
        fit_population(_members(toy_data), checkpoint=ck, on_epoch=crash, **options)
    fewer = _members(toy_data)[:3]
    ref = fit_population(_members(toy_data)[:3], **options)
    with pytest.warns(reglab.CheckpointWarning, match="does not fit this run"):
        resumed = fit_population(fewer, checkpoint=ck, **options)
    for a, b in zip(resumed, ref, strict=True):
        assert _strip(a) == _strip(b) and _same_weights(a.model, b.model)
