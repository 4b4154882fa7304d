"""CUDA defects found by reading (issue 29 §2), checked on a CPU-only machine by standing in for
the GPU where PyTorch lets a test do so."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import reglab
from reglab import distributed
from reglab.devices import check_precision, resolve_device
from reglab.lab.engine.population import Member, fit_population


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


_SYNCS = {"item", "tolist", "cpu", "__bool__", "__float__", "__int__", "numpy"}
_FACTORIES = {
    "zeros", "ones", "empty", "full", "rand", "randn", "randint", "randperm", "arange",
    "tensor", "as_tensor", "linspace", "eye",
}  # fmt: skip


class _Watch(torch.overrides.TorchFunctionMode):
    """Records host synchronisations and tensor factories called without ``device=``."""

    def __init__(self, events: list) -> None:
        super().__init__()
        self.events = events

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _SYNCS:
            self.events.append(("sync", name))
        elif name in _FACTORIES and not {"device", "out"} & set(kwargs):  # out= has one
            self.events.append(("factory", name))
        return func(*args, **kwargs)


class _Mark(reglab.Regularizer):
    """Marks each training step (its batch hook runs first in the step)."""

    def __init__(self, events: list) -> None:
        self.events = events

    def on_batch(self, x, y):
        self.events.append(("step", ""))
        return x, y


def _toy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    y = (x[:, 0] > 0).long()
    return (x, y), (x[:32], y[:32])


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def _steps(events: list) -> list[list]:
    """The events of each whole step (between two step marks)."""
    marks = [i for i, e in enumerate(events) if e[0] == "step"]
    return [events[a + 1 : b] for a, b in itertools.pairwise(marks)]


_RECIPES = {
    "penalties": lambda: [reglab.L1(1e-3), reglab.L2(1e-3), reglab.WeightDecay(0.1)],
    "dropout_noise": lambda: [reglab.Dropout(0.3), reglab.GaussianNoise(0.1)],
    "smoothing_clip_maxnorm": lambda: [
        reglab.LabelSmoothing(0.1),
        reglab.ClipGradNorm(1.0),
        reglab.MaxNorm(1.0),
    ],
    "ema_stopping": lambda: [reglab.EMA(0.9), reglab.EarlyStopping("val_loss", patience=50)],
    "mixup": lambda: [reglab.Mixup(0.2)],
}


@pytest.mark.parametrize("engine", ["fit", "population"])
@pytest.mark.parametrize("name", list(_RECIPES))
def test_a_training_step_never_waits_for_the_device_nor_makes_tensors_elsewhere(engine, name):
    """On CUDA a host sync per step stalls the GPU, and a factory without device= makes its
    tensor on the CPU. Each step of fit and of a population is recorded: no sync, and no
    factory without a device but Mixup's Beta draw (NumPy's, on the CPU by design: PyTorch's
    Beta sampler takes no generator), moved with non_blocking."""
    events: list = []
    train, val = _toy()
    with _Watch(events):
        if engine == "fit":
            recipe = reglab.chain(_Mark(events), *_RECIPES[name]())
            reglab.fit(_net(), train, val, recipe=recipe, epochs=1, batch_size=16, num_classes=2)
        else:
            members = [
                Member(_net(), reglab.chain(_Mark(events) if s == 0 else reglab.chain(),
                                            *_RECIPES[name]()), train, val, s)
                for s in range(3)
            ]  # fmt: skip
            fit_population(members, epochs=1, batch_size=16, num_classes=2)
    steps = _steps(events)
    assert len(steps) >= 4
    allowed = [("factory", "as_tensor")] if name == "mixup" else []
    for step in steps:
        assert [e for e in step if e not in allowed] == [], step


@pytest.mark.parametrize("members", [1, 4, 8])
def test_host_syncs_per_epoch_are_few_and_bounded(members):
    """Per epoch: the objective, the evaluation's metrics and each member's record are read
    once. fit: at most 6; a population: at most 6 + 3 per member (measured 5 + 2 per member)."""

    def syncs(epochs: int) -> int:
        events: list = []
        train, val = _toy()
        regs = lambda: [reglab.L1(1e-3), reglab.Dropout(0.3), reglab.EarlyStopping(patience=50)]
        with _Watch(events):
            if members == 1:
                reglab.fit(_net(), train, val, recipe=reglab.chain(*regs()), epochs=epochs,
                           batch_size=16, num_classes=2)  # fmt: skip
            else:
                group = [
                    Member(_net(), reglab.chain(*regs()), train, val, s) for s in range(members)
                ]
                fit_population(group, epochs=epochs, batch_size=16, num_classes=2)
        return sum(e[0] == "sync" for e in events)

    per_epoch = (syncs(3) - syncs(1)) / 2
    assert 0 < per_epoch <= (6 if members == 1 else 6 + 3 * members), per_epoch


def test_regression_metrics_of_a_population_are_read_once_per_epoch():
    """The regression metrics read three scalars per member and split (float() of each)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    y = (x[:, :1] * 2 + 0.1 * torch.randn(96, 1, generator=g)).float()

    def syncs(epochs: int, k: int) -> int:
        events: list = []
        torch.manual_seed(0)
        members = [
            Member(
                torch.nn.Sequential(torch.nn.Linear(6, 1)),
                reglab.chain(reglab.L2(1e-3)),
                (x, y),
                (x[:32], y[:32]),
                s,
            )
            for s in range(k)
        ]
        with _Watch(events):
            fit_population(members, epochs=epochs, batch_size=16, task="regression")
        return sum(e[0] == "sync" for e in events)

    grows = ((syncs(3, 8) - syncs(1, 8)) - (syncs(3, 2) - syncs(1, 2))) / 2 / 6  # per member
    assert grows <= 2, grows  # the record's penalty and lr (the metrics: one read per split)


def test_a_population_out_of_memory_retries_with_half_the_members(monkeypatch):
    """It fell back to one trial at a time, inside the except (whose traceback kept the failed
    population's GPU tensors alive)."""
    from reglab.lab.studies import trial as trial_module
    from reglab.lab.studies.config import StudyConfig
    from reglab.lab.studies.study import plan

    sizes = []
    real = trial_module.fit_population

    def small_gpu(members, **kwargs):
        sizes.append(len(members))
        if len(members) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(members, **kwargs)

    monkeypatch.setattr(trial_module, "fit_population", small_gpu)
    config = StudyConfig(data="wine", recipes=["baseline", "l2"], seeds=2, epochs=2, workers=1)
    results = trial_module.run_population(plan(config).trials)
    assert sizes == [4, 2, 2]
    assert [r["status"] for r in results] == ["completed"] * 4
    assert {r["engine"] for r in results} == {"population"}


def test_the_memory_estimate_counts_what_a_population_really_holds():
    """It counted 4 copies of the parameters and two batches of activations: not the
    compaction's and the resume's copies, EMA's and early stopping's weights, nor the
    evaluation pass and its logits."""
    from reglab.lab.engine.device import EVAL_CHUNK, PARAMETER_COPIES, member_bytes

    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    params = sum(p.numel() * 4 for p in model.parameters())
    outputs = (256 + 256 + 10) * 4  # per sample: each layer's output
    got = member_bytes(model, torch.zeros(1, 64), batch_size=32, eval_samples=659)
    assert PARAMETER_COPIES == 9
    assert got == 9 * params + 2 * 32 * outputs + min(EVAL_CHUNK, 659) * outputs + 659 * 10 * 4


@pytest.mark.skipif(
    not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc to reset VmHWM"
)
@pytest.mark.parametrize("recipe", ["l2", "ema_early_stopping"])
def test_the_memory_estimate_holds_a_measured_population(recipe):
    """Four members of 4.4 MB of parameters each, half of them leaving after one epoch (the
    population compacts), measured in a fresh process: the estimate a GPU study plans with
    is at least what the population held at its peak, and at most 2.5 times it. Measured
    here: 1.4x with EMA and early stopping (7.6 copies of the parameters held), 1.8x with L2
    (6.0)."""
    script = Path(__file__).with_name("population_memory.py")
    proc = subprocess.run(
        [sys.executable, str(script), recipe, "4", "1024"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["held"] <= got["estimate"] <= 2.5 * got["held"], got


class _Handed(Exception):
    """Stops a study once its workers were handed their devices."""


@pytest.mark.parametrize("command", ["compare", "tune", "path"])
def test_each_worker_of_a_study_on_two_gpus_gets_its_own(monkeypatch, tmp_path, command):
    """tune's and path's workers passed no device and all trained on GPU 0 ('cuda' resolves
    to the current device). Two GPUs are stood in for; the runners are stopped as they start."""
    from reglab.lab.studies import path as path_module
    from reglab.lab.studies import study as study_module
    from reglab.lab.studies import tune as tune_module
    from reglab.lab.studies.config import StudyConfig

    gpus = ["cuda:0", "cuda:1"]
    handed = {}

    def runner(*args, **kwargs):
        handed["devices"] = kwargs.get("devices", args[4] if len(args) > 4 else None)
        handed["count"] = args[1] if command != "tune" else args[2]
        raise _Handed

    study = StudyConfig(data="wine", recipes=["baseline", "l2"], seeds=2, epochs=1, workers=1)
    with pytest.raises(_Handed):
        if command == "compare":
            monkeypatch.setattr(study_module, "worker_devices", lambda settings: gpus)
            monkeypatch.setattr(study_module, "run_jobs", runner)
            study_module.run_study(study, tmp_path)
        elif command == "tune":
            monkeypatch.setattr(tune_module, "worker_devices", lambda settings: gpus)
            monkeypatch.setattr(tune_module, "run_workers", runner)
            config = tune_module.TuneConfig("l2", ["strength=1e-4:1e-1"], study, trials=2)
            tune_module.run_tune(config, tmp_path, workers=2)
        else:
            monkeypatch.setattr(path_module, "worker_devices", lambda settings: gpus)
            monkeypatch.setattr(path_module, "run_jobs", runner)
            config = path_module.PathConfig("l2", "strength=1e-3:1", study, points=2, seeds=2)
            path_module.run_path(config, workers=1, out=tmp_path)
    assert handed["devices"] == gpus and handed["count"] == 2
