"""Devices and precision in fit, evaluate and the population engine (issue 13). CUDA paths run
where a GPU is present and skip with the reason elsewhere."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import reglab
from reglab.devices import check_precision, model_device, resolve_device
from reglab.lab.engine.device import members_that_fit, worker_devices
from reglab.lab.engine.population import Member, fit_population

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def _recipe():
    return reglab.chain(
        reglab.L1(1e-3), reglab.Dropout(0.2), reglab.GaussianNoise(0.05), reglab.ClipGradNorm(1.0),
        reglab.EMA(0.9), reglab.EarlyStopping("val_loss", patience=3),
    )  # fmt: skip


def test_fit_on_cpu_by_name_equals_fit_where_the_model_is(toy_data):
    train, val = toy_data
    a = reglab.fit(_model(), train, val, recipe=_recipe(), epochs=4, seed=1)
    b = reglab.fit(_model(), train, val, recipe=_recipe(), epochs=4, seed=1, device="cpu")
    assert a.epochs == [{**e, "seconds": a.epochs[i]["seconds"]} for i, e in enumerate(b.epochs)]
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_fit_with_a_dataloader_moves_batches_and_matches_in_memory_metrics(toy_data):
    (x, y), (vx, vy) = toy_data
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    history = reglab.fit(_model(), loader, (vx, vy), epochs=2, device="cpu")
    assert history.epochs_run == 2
    assert reglab.evaluate(history.model, loader) == pytest.approx(
        reglab.evaluate(history.model, (x, y)), rel=1e-6
    )


def test_fit_bf16_autocast_trains_float32_parameters(toy_data):
    train, val = toy_data
    plain = reglab.fit(_model(), train, val, epochs=5, seed=0, lr=1e-2)
    half = reglab.fit(_model(), train, val, epochs=5, seed=0, lr=1e-2, precision="bf16")
    assert all(p.dtype == torch.float32 for p in half.model.parameters())
    assert half["train_loss"][-1] < half["train_loss"][0]  # it learns
    assert half["train_loss"][-1] == pytest.approx(plain["train_loss"][-1], abs=0.05)
    assert half["train_loss"] != plain["train_loss"]  # and bf16 really ran


def test_population_bf16_and_device_match_fit(toy_data):
    train, val = toy_data
    members = [Member(_model(s), reglab.chain(reglab.L2(1e-3)), train, val, s) for s in (0, 1)]
    histories = fit_population(members, epochs=3, device="cpu", precision="bf16")
    alone = reglab.fit(
        _model(1), train, val, recipe=reglab.chain(reglab.L2(1e-3)), epochs=3, seed=1,
        precision="bf16",
    )  # fmt: skip
    assert histories[1]["train_loss"] == pytest.approx(alone["train_loss"], abs=2e-3)


def test_resolve_device_names_and_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda", "mps")
    with pytest.raises(reglab.ConfigError, match="The 'device' parameter of fit must be one of"):
        resolve_device("gpu0")
    with pytest.raises(reglab.ConfigError, match="must be one of"):
        check_precision("16", torch.device("cpu"))
    assert check_precision("bf16", torch.device("cpu")) == "bf16"
    assert model_device(nn.ReLU()) == torch.device("cpu")


@NO_CUDA
def test_cuda_without_cuda_is_a_clear_error(toy_data):
    with pytest.raises(reglab.ConfigError, match="CUDA is not available here"):
        reglab.fit(_model(), *toy_data, device="cuda")


def test_gpu_population_size_and_workers_follow_memory_and_devices():
    assert members_that_fit(8 * 2**30, 100 * 2**20, 256) == 57
    assert members_that_fit(2**20, 2**30, 16) == 1  # at least one
    assert members_that_fit(2**40, 1, 16) == 16  # at most the cap
    assert worker_devices({"device": "cpu"}) is None
    assert worker_devices({"device": "cuda:3"}) == ["cuda:3"]


@CUDA
def test_fit_on_cuda_keeps_everything_on_the_device(toy_data):
    train, val = toy_data
    recipe = reglab.chain(
        reglab.L1(1e-3), reglab.Dropout(0.2), reglab.Mixup(0.2), reglab.ClipGradNorm(1.0),
        reglab.EMA(0.9), reglab.EarlyStopping("val_loss", patience=3),
    )  # fmt: skip
    history = reglab.fit(_model(), train, val, recipe=recipe, epochs=3, device="cuda")
    assert all(p.is_cuda for p in history.model.parameters())
    cpu = reglab.fit(_model(), train, val, recipe=None, epochs=3, device="cpu")
    gpu = reglab.fit(_model(), train, val, recipe=None, epochs=3, device="cuda")
    assert gpu["train_loss"] == pytest.approx(cpu["train_loss"], rel=1e-3)


@CUDA
def test_population_on_cuda_matches_fit_on_cuda(toy_data):
    train, val = toy_data
    members = [Member(_model(s), reglab.chain(reglab.Dropout(0.1)), train, val, s) for s in (0, 1)]
    histories = fit_population(members, epochs=3, device="cuda")
    alone = reglab.fit(_model(1), train, val, recipe=reglab.chain(reglab.Dropout(0.1)), epochs=3,
                       seed=1, device="cuda")  # fmt: skip
    assert histories[1]["train_loss"] == pytest.approx(alone["train_loss"], rel=1e-4)
