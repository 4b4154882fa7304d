"""Run by test_lightning.py: two CPU ranks under Lightning's DDP strategy (gloo). Rank 0's
scripted validation loss keeps falling, rank 1's stops improving after epoch 2; each rank writes
the epoch it stopped at and whether its weights were restored to the best epoch's."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as L
import torch
from lightning_models import Net, network
from torch.utils.data import DataLoader, TensorDataset

import reglab
from reglab.integrations.lightning import Regularize

SCRIPT = {0: [5, 4, 3, 2, 1, 0.5, 0.4, 0.3, 0.2, 0.1], 1: [5, 1, 2, 3, 4, 5, 6, 7, 8, 9]}


class Scripted(Net):
    def validation_step(self, batch, batch_idx):
        value = SCRIPT[self.global_rank][self.current_epoch]
        self.log("val_loss", torch.tensor(float(value)), on_epoch=True)


class Snapshot(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:  # epoch 2, rank 1's best
            self.best = [p.detach().clone() for p in pl_module.parameters()]


def main(out: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, 0] > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    snapshot = Snapshot()
    callback = Regularize(reglab.chain(reglab.EarlyStopping("val_loss", patience=2)))
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=10,
        callbacks=[snapshot, callback], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    module = Scripted(network())
    trainer.fit(module, loader, loader)
    rank = trainer.global_rank
    same = all(torch.equal(p, q) for p, q in zip(module.parameters(), snapshot.best, strict=True))
    restored = same if rank == 1 else True  # rank 0's own best is its last epoch
    (out / f"rank{rank}.txt").write_text(f"{callback.stopped_epoch} {restored}")
    # an orderly gloo shutdown: left to process exit, its threads can abort the process
    # ("terminate called without an active exception"), seen once in a full test run
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
