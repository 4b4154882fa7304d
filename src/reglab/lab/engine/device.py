"""Which device a worker trains on, how many workers a device gets, and how many members of a
population fit in a GPU's memory.

A study stores its device as a setting: ``'cpu'``, ``'mps'``, ``'cuda:N'`` (that GPU) or
``'cuda'`` (every GPU: one worker per device, each worker told its GPU when it starts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ...devices import model_device

__all__ = [
    "assign",
    "device_for",
    "members_that_fit",
    "population_size",
    "take_device",
    "worker_devices",
]

_assigned: str | None = None  # this worker's GPU, when the study runs on every GPU

#: The most trials one population holds on a CPU (a member's working set, ~1.4 MB for the
#: default MLP with its Adam state, should stay in cache: measured on 2 cores, 15 members per
#: population train 1.8x faster per member than one at a time, 30 are slower than 15).
CPU_POPULATION = 16
#: The most members of a GPU population, and the share of free memory it may plan to use.
GPU_POPULATION, GPU_MEMORY_SHARE = 256, 0.7


def assign(device: str | None) -> None:
    """Tell this process which device it trains on (the runner calls it in each worker)."""
    global _assigned
    _assigned = device


def take_device(device: str | None) -> None:
    """In a worker process: train on ``device`` (:func:`assign`) and make it the current CUDA
    device, so that whatever asks for "the current device" (``'cuda'`` without an index, a
    DataLoader's pin-memory thread) lands on this worker's GPU, not on GPU 0."""
    assign(device)
    if device is not None and device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))


def stored_device(spec: str, device: torch.device) -> str:
    """The device a study stores for ``spec`` resolved to ``device``: ``'cuda'`` (every GPU)
    for ``'auto'`` or ``'cuda'`` on a CUDA machine, else the device itself."""
    if device.type == "cuda" and spec in ("auto", "cuda"):
        return "cuda"
    return str(device)


def device_for(settings: Mapping[str, Any]) -> torch.device:
    """The device this process trains a study's trials on."""
    spec = settings.get("device") or "cpu"
    if spec == "cuda":
        return torch.device(_assigned or f"cuda:{torch.cuda.current_device()}")
    return torch.device(spec)


def worker_devices(settings: Mapping[str, Any]) -> list[str] | None:
    """One device per worker on GPUs (every GPU for ``'cuda'``, the one named for
    ``'cuda:N'``); None on a CPU or MPS, where the study's ``workers`` setting holds."""
    spec = settings.get("device") or "cpu"
    if spec == "cuda":
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if spec.startswith("cuda:"):
        return [spec]
    return None


def members_that_fit(free_bytes: int, per_member_bytes: int, most: int) -> int:
    """How many members of ``per_member_bytes`` fit in ``GPU_MEMORY_SHARE`` of
    ``free_bytes``, between 1 and ``most``.

    Examples:
        >>> members_that_fit(8 * 2**30, 100 * 2**20, 256)  # 8 GiB free, 100 MiB a member
        57
    """
    fits = math.floor(GPU_MEMORY_SHARE * free_bytes / max(per_member_bytes, 1))
    return max(1, min(most, fits))


#: Copies of a member's parameters a population holds at its peak: the parameters, their
#: gradients and Adam's two moments (4); while it drops finished members' rows, a second copy
#: of the parameters and of the moments (3), the same while it resumes (a copy of its initial
#: state is kept until the checkpoint is restored); an EMA average and early stopping's best
#: weights (2).
PARAMETER_COPIES = 9
#: The evaluation pass runs every member on chunks of this many samples.
EVAL_CHUNK = 1024


@torch.no_grad()
def member_bytes(
    model: nn.Module, sample: torch.Tensor, batch_size: int, eval_samples: int = 0
) -> int:
    """An estimate of one population member's memory at the population's peak:
    :data:`PARAMETER_COPIES` copies of its parameters, every layer's output for a batch of
    ``batch_size`` kept for the backward pass (twice, for the gradients flowing back), the
    layer outputs of one evaluation chunk (:data:`EVAL_CHUNK` samples) and its logits for the
    ``eval_samples`` training and validation samples evaluated each epoch."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    outputs: list[int] = []

    def hook(module: nn.Module, args: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            outputs.append(out.numel() * out.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        was = model.training
        model.eval()
        model(sample[:1].to(model_device(model)))
        model.train(was)
    finally:
        for h in handles:
            h.remove()
    logits = outputs[-1] if outputs else 0
    return (
        PARAMETER_COPIES * params
        + 2 * batch_size * sum(outputs)
        + min(EVAL_CHUNK, max(eval_samples, 1)) * sum(outputs)
        + eval_samples * logits
    )


def population_size(
    settings: Mapping[str, Any],
    model: nn.Module,
    sample: torch.Tensor,
    trials: int,
    eval_samples: int = 0,
) -> int:
    """How many trials one population holds: :data:`CPU_POPULATION` on a CPU; on a GPU as many
    as fit in its free memory (:func:`members_that_fit`), at most ``trials``."""
    device = device_for(settings)
    if device.type != "cuda":
        return CPU_POPULATION
    free, _ = torch.cuda.mem_get_info(device)
    per_member = member_bytes(model, sample, settings["batch_size"], eval_samples)
    return members_that_fit(free, per_member, min(GPU_POPULATION, max(trials, 1)))
