"""What checkpoints cost the default study: the time spent writing them as a share of the wall
time, and the wall time with and without them, measured in one run.

Run by hand: `.venv/bin/python benchmarks/checkpoint_cost.py` (about 2 minutes on two cores).

The default study (`reglab compare` with no arguments: digits, 300 samples, MLP 256-256, 150
epochs, the default panel x 3 seeds) runs as two workers' populations of 15 trials; one such
population is what this benchmark trains, in this process with one thread (as a worker does):

- without checkpoints (the engine as it was before issue 14);
- with the default interval (`checkpoint_every = 5` seconds);
- with a checkpoint at every epoch end (`checkpoint_every = 0`), the worst case.

"in saves" is the time inside `Checkpoint.save` (building the state, `torch.save`, fsync and the
rename), summed over the run; its share of the wall time is the figure issue 14 bounds at 3%.
The with/without wall-time ratio is printed too; it carries the machine's run-to-run noise.
"""

from __future__ import annotations

import tempfile
import time

import torch

from reglab.checkpoint import Checkpoint
from reglab.lab.studies.checkpoints import Checkpoints
from reglab.lab.studies.config import StudyConfig
from reglab.lab.studies.study import plan
from reglab.lab.studies.trial import run_population


def one_population(every: float | None) -> tuple[float, float, int]:
    """Train the first half of the default study as one population; wall seconds, seconds in
    checkpoint saves, and the number of saves."""
    _, _, _, trials, _, sequential = plan(StudyConfig(workers=1))
    batch = [t for t in trials if t.recipe not in sequential][:15]
    spent = {"seconds": 0.0, "saves": 0}
    original = Checkpoint.save

    def timed_save(self: Checkpoint, kind: str, state: object) -> bool:
        started = time.perf_counter()
        try:
            return original(self, kind, state)
        finally:
            spent["seconds"] += time.perf_counter() - started
            spent["saves"] += 1

    Checkpoint.save = timed_save  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as folder:
            checkpoints = None if every is None else Checkpoints(folder, every)
            started = time.perf_counter()
            run_population(batch, None, checkpoints)
            wall = time.perf_counter() - started
    finally:
        Checkpoint.save = original  # type: ignore[method-assign]
    return wall, spent["seconds"], spent["saves"]


def main() -> None:
    torch.set_num_threads(1)
    one_population(None)  # warm-up: data, imports, allocator
    base, _, _ = one_population(None)
    print(
        f"population of 15 default trials, 150 epochs, 1 thread: {base:.1f} s without checkpoints"
    )
    for label, every in (("every 5 s (default)", 5.0), ("every epoch", 0.0)):
        wall, saving, saves = one_population(every)
        print(
            f"{label:>20}: {wall:6.1f} s wall, {saves:4d} saves, {saving:6.2f} s in saves "
            f"= {100 * saving / wall:5.2f}% of wall; wall {wall / base:.3f}x without"
        )


if __name__ == "__main__":
    main()
