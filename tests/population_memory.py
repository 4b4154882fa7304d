"""Run by tests/test_cuda_hygiene.py in a fresh process: train a population on the CPU and
print, as JSON, the memory it really held at its peak (the rise of the process's resident set,
Linux's VmHWM after resetting it) beside the estimate a GPU study plans with (K times
``member_bytes``)."""

import gc
import json
import sys

import torch

import reglab
from reglab.lab.engine.device import member_bytes
from reglab.lab.engine.population import Member, fit_population

RECIPES = {
    "l2": lambda: reglab.chain(reglab.L2(1e-4)),
    # the most copies: an EMA average and early stopping's best weights
    "ema_early_stopping": lambda: reglab.chain(
        reglab.EMA(0.9), reglab.EarlyStopping("val_loss", patience=100)
    ),
}


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def _members(k: int, width: int, rows: int, recipe: str) -> list[Member]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 32, generator=g)
    y = torch.randint(0, 10, (rows,), generator=g)
    members = []
    for seed in range(k):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(
            torch.nn.Linear(32, width),
            torch.nn.ReLU(),
            torch.nn.Linear(width, width),
            torch.nn.ReLU(),
            torch.nn.Linear(width, 10),
        )
        members.append(Member(model, RECIPES[recipe](), (x, y), (x[:64], y[:64]), seed))
    return members


def main() -> None:
    recipe, k, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    fit_population(_members(2, 16, 64, recipe), epochs=1, batch_size=32)  # load every kernel
    members = _members(k, width, 256, recipe)
    x = members[0].train[0]
    estimate = k * member_bytes(members[0].model, x[:1], 32, eval_samples=256 + 64)
    gc.collect()
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    # every other member leaves after its first epoch: the population compacts its rows
    fit_population(
        members,
        epochs=3,
        batch_size=32,
        should_stop=lambda i, record: i % 2 == 1 and record["epoch"] >= 1,
    )
    held = _status("VmHWM") - before
    print(json.dumps({"held": held, "estimate": estimate}))


if __name__ == "__main__":
    main()
