"""CUDA defects found by reading (issue 29 §2), checked on a CPU-only machine by standing in for
the GPU where PyTorch lets a test do so."""

from __future__ import annotations

import os

import pytest
import torch

import reglab
from reglab import distributed
from reglab.devices import check_precision, resolve_device


def test_penalty_hyperparameters_move_to_the_parameters_device_at_attach():
    """They stayed on the CPU beside CUDA parameters: the subgradient addcmul_ and the tensor
    learning-rate proximal step then mixed devices. A meta-device model stands for the GPU."""
    model = torch.nn.Linear(3, 2, device="meta")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    regs = [reglab.L1(0.1, method="subgradient"), reglab.ElasticNet(0.1, 0.5),
            reglab.WeightDecay(0.1), reglab.GroupLasso(0.1)]  # fmt: skip
    for reg in regs:
        reg.attach(model, opt)
    held = [t for reg in regs for a in reg._hyperparameters if (t := getattr(reg, a)) is not None]
    assert held and all(t.device.type == "meta" and t.dtype == torch.float32 for t in held)


def test_beta_sample_draws_its_seed_on_the_generator_device(monkeypatch):
    """torch.randint(..., generator=g) without device= raises with a CUDA generator."""
    seen = {}
    real = torch.randint

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **{**kwargs, "device": "cpu"})

    monkeypatch.setattr(torch, "randint", spy)
    generator = torch.Generator().manual_seed(0)
    reglab.mixing.beta_sample(0.4, 3, generator)
    assert seen["device"] == generator.device


@pytest.mark.parametrize(("capability", "allowed"), [((7, 5), False), ((8, 0), True)])
def test_bf16_is_refused_on_a_gpu_older_than_ampere(monkeypatch, capability, allowed):
    """torch.cuda.is_bf16_supported() says True on older GPUs (emulated) and asks the current
    device; the capability of the device that trains decides now."""
    asked = []
    monkeypatch.setattr(
        torch.cuda, "get_device_capability", lambda d=None: asked.append(d) or capability
    )
    monkeypatch.setattr(torch.amp.autocast_mode, "is_autocast_available", lambda kind: True)
    device = torch.device("cuda", 1)
    if allowed:
        assert check_precision("bf16", device, "fit") == "bf16"
    else:
        with pytest.raises(reglab.ConfigError, match="must be '32' on cuda:1"):
            check_precision("bf16", device, "fit")
    assert asked == [device]


def test_cuda_means_local_ranks_gpu_under_torchrun(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert resolve_device("cuda") == resolve_device("auto") == torch.device("cuda", 2)
    assert resolve_device("cuda:3") == torch.device("cuda", 3)
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device("cuda") == torch.device("cuda", 0)


def test_the_stop_flag_is_reduced_on_the_model_device(monkeypatch):
    """A CPU flag raises in an NCCL-only group."""
    reduced = []
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda t, op=None: reduced.append(t))
    assert distributed.agree_to_stop(True, torch.device("cpu")) is True
    assert reduced[-1].device == torch.device("cpu")
    monkeypatch.setattr(distributed.dist, "get_backend", lambda: "nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    made = []
    real = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda v, device=None: made.append(device) or real(v))
    distributed.agree_to_stop(False)
    assert made == [torch.device("cuda", 1)]


@pytest.mark.parametrize("engine", ["population", "sequential"])
def test_a_deterministic_study_computes_its_figures_outside_deterministic_mode(monkeypatch, engine):
    """On CUDA, deterministic mode refuses the calibration's weighted bincount and the weight
    histograms' histc: every deterministic trial failed, and in a population the error
    aborted the whole study."""
    from reglab.lab.studies import trial as trial_module
    from reglab.lab.studies.config import StudyConfig
    from reglab.lab.studies.study import plan

    modes = []
    real = trial_module.trial_result

    def spy(*args, **kwargs):
        modes.append(torch.are_deterministic_algorithms_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(trial_module, "trial_result", spy)
    config = StudyConfig(
        data="wine", recipes=["baseline", "l2"], seeds=1, epochs=2, workers=1,
        engine=engine, deterministic=True,
    )  # fmt: skip
    trials = plan(config).trials
    if engine == "population":
        results = trial_module.run_population(trials)
    else:
        results = [trial_module.run_trial(t) for t in trials]
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert modes == [False, False] and not torch.are_deterministic_algorithms_enabled()


def test_a_worker_of_a_deterministic_study_sets_cublas_before_any_cuda_work(monkeypatch):
    """ATen reads CUBLAS_WORKSPACE_CONFIG once, at the first cuBLAS call: set later (inside the
    trial), every deterministic matmul raised."""
    from reglab.lab.studies.seams import start_worker

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    start_worker({"deterministic": False, "datasets": {}})
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    start_worker({"deterministic": True, "datasets": {}})
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_a_worker_takes_its_own_gpu_as_the_current_device(monkeypatch):
    """compare's workers never called torch.cuda.set_device (pin-memory threads opened
    contexts on GPU 0), and tune's and path's workers were given no device at all."""
    from reglab.lab.engine import device as engine_device

    made_current = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: made_current.append(d))
    monkeypatch.setattr(engine_device, "_assigned", None)
    engine_device.take_device("cuda:1")
    assert made_current == [torch.device("cuda", 1)]
    assert engine_device.device_for({"device": "cuda"}) == torch.device("cuda", 1)
    engine_device.take_device(None)
    assert made_current == [torch.device("cuda", 1)]  # a CPU worker leaves CUDA alone
