"""What ``fit`` needs to run under PyTorch DDP (``torchrun``): rank, shards, and agreement.

Under an initialized process group, ``fit`` wraps the model in ``DistributedDataParallel`` (so
the gradients that penalties and clipping see are already averaged across ranks), gives each rank
its own shard of every epoch's shuffled tensor data and its own generator for dropout and noise,
averages the training loss across ranks, and reduces every stop decision so all ranks stop at the
same epoch (and restore the same best weights). Without a process group these are no-ops.
"""

from __future__ import annotations

import torch
from torch import distributed as dist
from torch import nn

__all__ = ["agree_to_stop", "is_distributed", "mean_across_ranks", "rank_and_world", "wrap"]


def is_distributed() -> bool:
    """True inside an initialized process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def wrap(model: nn.Module) -> nn.Module:
    """The module to call for the forward pass: ``DistributedDataParallel(model)`` under DDP
    (it broadcasts rank 0's weights, so all ranks start equal), else ``model`` itself."""
    if not is_distributed() or not any(p.requires_grad for p in model.parameters()):
        return model
    return nn.parallel.DistributedDataParallel(model)


def mean_across_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar tensor over ranks (the value itself outside DDP)."""
    if not is_distributed():
        return value
    total = value.detach().clone().double()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()


def agree_to_stop(stop: bool, device: torch.device | None = None) -> bool:
    """True on every rank if any rank wants to stop. The flag is reduced on ``device`` (the
    model's: an NCCL group reduces only CUDA tensors); without one, on the current CUDA
    device under NCCL, else on the CPU."""
    if not is_distributed():
        return stop
    if device is None and dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    flag = torch.tensor(int(stop), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag)
