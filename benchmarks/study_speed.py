"""The default study trained by the population engine, by reglab's sequential engine, and as
the same trials in a plain sequential PyTorch loop, in one run; wall time and peak memory.

Run by hand: `.venv/bin/python benchmarks/study_speed.py` (about 5 minutes on two cores).
`--device cuda` runs the two engines on the GPU (one worker per device) and prints the
population-vs-sequential ratio there (it needs a CUDA machine).

The trials are those of `reglab compare` with no arguments: digits, 300 training samples, MLP
64-256-256-10, Adam lr 1e-3, batch 32, 150 epochs, the 10 recipes of the default panel x 3 seeds,
each epoch followed by an evaluation on the training and validation sets (as every engine
records). The plain loop trains each trial without regularization (plain PyTorch has no L1,
early stopping or the rest), so it stands for the arithmetic of the same trials with no
overhead of ours; it runs in one process with one thread, and again with PyTorch's default
threads. Each variant runs in a fresh process; "peak" is the largest resident set of any process
of the variant (the main process or one worker), from getrusage.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EPOCHS = 150


def plain_trial(model, train, val, epochs: int, seed: int) -> None:
    """One trial in plain PyTorch: Adam, batch 32, shuffled from ``seed``, then cross-entropy
    and accuracy of train and val each epoch (what every engine records)."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    gen = torch.Generator().manual_seed(seed)
    x, y = train
    for _epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 32):
            idx = order[start : start + 32]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for ex, ey in (train, val):
                out = model(ex)
                float(F.cross_entropy(out, ey)), float((out.argmax(1) == ey).float().mean())


def plain_loop(threads: int) -> None:
    """The default study's 30 trials, one after another, in plain PyTorch."""
    import torch

    from reglab.lab.inputs.recipes import DEFAULT_PANEL, IMAGE_PANEL
    from reglab.lab.studies.study import StudyConfig, dataset_for, model_for, trial_settings

    torch.set_num_threads(threads)
    settings = trial_settings(StudyConfig(), "classification")
    for seed in range(3):
        data = dataset_for(settings, seed)
        for _ in DEFAULT_PANEL + IMAGE_PANEL:
            model = model_for(settings, data, seed)
            train, val = (data.x_train, data.y_train), (data.x_val, data.y_val)
            plain_trial(model, train, val, EPOCHS, seed)


def engine(name: str, device: str = "cpu") -> None:
    from reglab.lab.studies.study import StudyConfig, run_study

    with tempfile.TemporaryDirectory() as out:
        run = run_study(StudyConfig(engine=name, device=device), out)
        assert len(run.results) == 30 and all(r["status"] != "failed" for r in run.results)


def measure(variant: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one variant run in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, variant], check=True, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    return wall, float(done.stdout.strip().splitlines()[-1])


def _peak_mb() -> float:
    """The largest resident set of this process and its (joined) workers."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, workers) / 1024


def compare_wall() -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "reglab", "compare", "--out", out],
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - start
        trials = [json.loads(p.read_text()) for p in Path(out, "trials").glob("*.json")]
        assert all(t["engine"] == "population" for t in trials)
        return wall


def on_device(device: str) -> None:
    """The two engines on ``device`` (e.g. cuda), and their ratio."""
    rows = {}
    for name in ("population", "sequential"):
        rows[name] = measure(f"{name}@{device}")
        print(f"{name:11s} on {device}: {rows[name][0]:7.1f} s  peak {rows[name][1]:6.0f} MB")
    ratio = rows["sequential"][0] / rows["population"][0]
    print(f"default study on {device}: population engine {ratio:.2f}x the sequential engine")


def main() -> None:
    rows = {}
    for variant in ("population", "sequential", "plain1", "plain2"):
        rows[variant] = measure(variant)
        wall, peak = rows[variant]
        print(f"{variant:11s} {wall:7.1f} s  peak {peak:6.0f} MB", flush=True)
    pop = rows["population"][0]
    print()
    print("default study, 30 trials x 150 epochs, two cores:")
    print(f"  population engine (2 workers)       {pop:6.1f} s")
    for variant, label in (
        ("sequential", "reglab sequential engine (2 workers)"),
        ("plain1", "plain PyTorch loop, 1 process, 1 thread"),
        ("plain2", "plain PyTorch loop, 1 process, 2 threads"),
    ):
        wall = rows[variant][0]
        print(f"  {label:36s} {wall:6.1f} s   population is {wall / pop:4.2f}x faster")
    print(f"  `reglab compare` with no arguments  {compare_wall():6.1f} s wall (target <= 60 s)")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--device":
        on_device(sys.argv[2])
    elif len(sys.argv) > 1:
        variant = sys.argv[1]
        if variant.startswith("plain"):
            plain_loop(int(variant[-1]))
        else:
            name, _, device = variant.partition("@")
            engine(name, device or "cpu")
        print(_peak_mb())
    else:
        main()
