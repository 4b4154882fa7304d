"""Run by tests/test_distributed.py under `torchrun --nproc_per_node=2`: train with reglab.fit
under DDP and save what each rank ended with."""

import json
import sys
from pathlib import Path

import torch
from torch import distributed as dist
from torch import nn

import reglab


class StopAt(reglab.Regularizer):
    """Asks to stop at a rank-dependent epoch: only a reduced decision keeps ranks together."""

    constraints = {"epoch": reglab.core.Interval(int, 1, None)}

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, metrics):
        return metrics["epoch"] >= self.epoch


def _record_reductions(devices: list[str]) -> None:
    """Note the device of every tensor fit reduces across ranks (the stop flag, the metrics):
    under NCCL a CPU tensor raises, so each must be on the model's device."""
    real = dist.all_reduce

    def all_reduce(tensor, *args, **kwargs):
        devices.append(str(tensor.device))
        return real(tensor, *args, **kwargs)

    dist.all_reduce = all_reduce


def main() -> None:
    out = Path(sys.argv[1])
    reduced_on: list[str] = []
    _record_reductions(reduced_on)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    dropout = reglab.Dropout(0.2)
    recipe = reglab.chain(
        reglab.L1(1e-3),
        dropout,
        reglab.ClipGradNorm(1.0),
        reglab.EarlyStopping("val_loss", patience=50),
        StopAt(4 if rank == 0 else 9),
    )
    asked: list[str] = []
    real_agree = reglab.train.agree_to_stop
    reglab.train.agree_to_stop = lambda stop, device=None: (
        asked.append(str(device)) or real_agree(stop, device)
    )
    history = reglab.fit(
        model,
        (x[:120], y[:120]),
        (x[120:], y[120:]),
        recipe=recipe,
        epochs=20,
        batch_size=16,
        seed=3,
    )
    torch.save(history.model.state_dict(), out / f"weights{rank}.pt")
    (out / f"rank{rank}.json").write_text(
        json.dumps(
            {
                "epochs_run": history.epochs_run,
                "status": history.status,
                "val_loss": history["val_loss"],
                "objective": history["objective"],
                "dropout_seed": dropout.inserted[0].generator.initial_seed(),
                "model_device": str(next(history.model.parameters()).device),
                "stop_flag_devices": asked,
                "reduced_on": sorted(set(reduced_on)),
            }
        )
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
