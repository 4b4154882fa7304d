"""reglab.fit under DDP: two CPU processes (gloo) launched with torchrun."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import distributed as dist

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="this torch build has no gloo backend for CPU process groups",
)
def test_ranks_stop_together_with_identical_weights(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run"]  # what `torchrun` runs
    proc = subprocess.run(
        [*torchrun, "--standalone", "--nproc_per_node=2", str(WORKER), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # rank 0 asks to stop at epoch 4, rank 1 at epoch 9: the reduced decision stops both at 4
    assert ranks[0]["epochs_run"] == ranks[1]["epochs_run"] == 4
    assert ranks[0]["status"] == ranks[1]["status"] == "stopped_early"
    # metrics agree across ranks, so early stopping keeps (and restores) the same best epoch
    assert ranks[0]["val_loss"] == ranks[1]["val_loss"]
    assert ranks[0]["objective"] == ranks[1]["objective"]
    # the stop flag is reduced on the model's device (NCCL refuses a CPU tensor), every epoch
    for rank in ranks:
        assert rank["stop_flag_devices"] == [rank["model_device"]] * 4
        assert rank["reduced_on"] == [rank["model_device"]]
    # dropout masks come from a different generator on each rank
    assert ranks[0]["dropout_seed"] != ranks[1]["dropout_seed"]
    weights = [torch.load(tmp_path / f"weights{r}.pt", weights_only=True) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
