"""reglab at real data sizes: `reglab compare` on a table of N training rows, read from .npz,
.csv and .parquet, against a plain PyTorch loop of the same trials; the wall time and peak
memory of each, all measured in one run.

The data: scikit-learn's `make_classification`, 50 features (10 informative), 5 classes, 2N
rows (the lab trains on 50% of them after 20% validation and 30% test), written once per size
as .npz, .csv and .parquet. The study: `reglab compare --recipes baseline,l2,dropout --seeds 2
--epochs 3 --workers 2` (6 trials; the population engine). The plain loop: the same 6 trials
in 2 processes of one thread each (3 trials each): the MLP 50-256-256-5, Adam lr 1e-3, batch
32, L2 added to the loss, dropout 0.5 after each hidden activation, a random split of the same
sizes, an evaluation of the training and validation sets after every epoch and of all three
splits at the end, as reglab records; none of the lab's figures. Every variant runs in a fresh
process; peak is the largest resident set of any of its processes (getrusage), and "read" is
the time `reglab.lab.inputs.data.load_dataset` takes for seed 0 in a fresh process, and how
much it raised that process's peak above what the imports took.

Run by hand: `.venv/bin/python benchmarks/scale.py` (sizes 1,000, 10,000 and 100,000; about
6 minutes on two cores), `--sizes 1000,10000,100000,1000000` for more. With
`PYTHONPATH=<checkout>/src` it measures another version of reglab (before/after); a version
that cannot read a format prints `-` for it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EPOCHS, SEEDS, RECIPES = 3, 2, ("baseline", "l2", "dropout")
FEATURES, CLASSES = 50, 5


def write_data(folder: Path, n_train: int) -> dict[str, Path]:
    """The table of ``2 n_train`` rows as .npz, .csv and .parquet."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=2 * n_train,
        n_features=FEATURES,
        n_informative=10,
        n_classes=CLASSES,
        random_state=0,
    )
    x = x.astype(np.float32)
    paths = {k: folder / f"table{n_train}.{k}" for k in ("npz", "csv", "parquet")}
    np.savez(paths["npz"], X=x, y=y)
    columns = {f"x{i}": x[:, i] for i in range(FEATURES)}
    table = pa.table({**columns, "y": y})
    pacsv.write_csv(table, paths["csv"])
    pq.write_table(table, paths["parquet"])
    return paths


def measured(command: list[str]) -> tuple[float, float, str]:
    """Run ``command`` in a fresh process: its wall seconds, the peak resident set (MB) of its
    largest process, and its last output line."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "wall = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ['']\n"
        "print(done.returncode, wall, peak, tail[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True)
    code, wall, peak, tail = out.stdout.strip().split(" ", 3)
    if code != "0":
        return float("nan"), float("nan"), tail
    return float(wall), float(peak), tail


def compare_command(data: Path, out: Path) -> list[str]:
    command = [sys.executable, "-m", "reglab", "compare", "--data", str(data), "--out", str(out)]
    if data.suffix != ".npz":
        command += ["--target", "y"]
    command += ["--recipes", ",".join(RECIPES), "--seeds", str(SEEDS), "--epochs", str(EPOCHS)]
    return [*command, "--workers", "2"]


READ = """
import json, resource, sys, time
from reglab.lab.inputs.data import load_dataset
import sklearn.model_selection, pyarrow.csv, pyarrow.parquet  # imports are not the reading
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
target = None if sys.argv[1].endswith('.npz') else 'y'
data = load_dataset(sys.argv[1], target=target)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps([time.perf_counter() - t, after - before]))
"""


def read_cost(data: Path) -> tuple[float, float]:
    """Seconds of loading seed 0's split in a fresh process (nan: unreadable), and how much it
    raised the process's peak resident set (MB) above where the imports had left it."""
    done = subprocess.run([sys.executable, "-c", READ, str(data)], capture_output=True, text=True)
    if done.returncode != 0:
        return float("nan"), float("nan")
    seconds, peak = json.loads(done.stdout.strip().splitlines()[-1])
    return seconds, peak


def plain_trials(path: str, jobs: list[tuple[str, int]]) -> None:
    """The plain loop: ``jobs`` (recipe, seed) one after another, one thread."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    with np.load(path) as archive:
        x_all, y_all = archive["X"].astype(np.float32), archive["y"].astype(np.int64)
    for recipe, seed in jobs:
        plain_trial(recipe, seed, x_all, y_all)


def _score(model, x, y) -> float:
    import torch
    from torch import nn

    model.eval()
    with torch.no_grad():
        loss = nn.functional.cross_entropy(model(x), y).item()
    model.train()
    return loss


def plain_trial(recipe: str, seed: int, x_all, y_all) -> None:
    """One trial of the plain loop: split, standardize, train, evaluate."""
    import numpy as np
    import torch
    from torch import nn

    n = len(y_all)
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_val = round(0.3 * n), round(0.2 * n)
    te, va, tr = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    mean, std = x_all[tr].mean(0), x_all[tr].std(0) + 1e-8
    split = {"train": tr, "val": va, "test": te}
    xs = {k: torch.from_numpy((x_all[i] - mean) / std) for k, i in split.items()}
    ys = {k: torch.from_numpy(y_all[i]) for k, i in split.items()}
    torch.manual_seed(seed)
    p = 0.5 if recipe == "dropout" else 0.0
    model = nn.Sequential(
        nn.Linear(FEATURES, 256), nn.ReLU(), nn.Dropout(p),
        nn.Linear(256, 256), nn.ReLU(), nn.Dropout(p),
        nn.Linear(256, CLASSES),
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    l2 = 0.03 if recipe == "l2" else 0.0
    for _epoch in range(EPOCHS):
        for batch in torch.randperm(len(tr)).split(32):
            loss = nn.functional.cross_entropy(model(xs["train"][batch]), ys["train"][batch])
            if l2:
                loss = loss + l2 / 2 * sum((w**2).sum() for w in model.parameters())
            opt.zero_grad()
            loss.backward()
            opt.step()
        for k in ("train", "val"):
            _score(model, xs[k], ys[k])
    for k in ("train", "val", "test"):
        _score(model, xs[k], ys[k])


def plain_command(data: Path) -> list[str]:
    jobs = [(r, s) for s in range(SEEDS) for r in RECIPES]
    halves = [jobs[0::2], jobs[1::2]]
    code = (
        "import multiprocessing as mp, sys; sys.path.insert(0, sys.argv[1]); import scale\n"
        "jobs = eval(sys.argv[3])\n"
        "ps = [mp.get_context('spawn').Process(target=scale.plain_trials, args=(sys.argv[2], j))"
        " for j in jobs]\n"
        "[p.start() for p in ps]; [p.join() for p in ps]\n"
        "print('plain loop done')\n"
    )
    here = str(Path(__file__).resolve().parent)
    return [sys.executable, "-c", code, here, str(data), repr(halves)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    import reglab

    print(
        f"reglab {reglab.__version__} from {Path(reglab.__file__).parent}; {os.cpu_count()} cores"
    )
    head = (
        f"{'train rows':>10} {'variant':<16} {'wall s':>7} {'x plain':>7} {'peak MB':>8}"
        f" {'read s':>7} {'+read MB':>8}"
    )
    print(head)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n in sizes:
            paths = write_data(folder, n)
            plain_wall, plain_peak, _ = measured(plain_command(paths["npz"]))
            print(f"{n:>10,} {'plain loop':<16} {plain_wall:7.1f} {1:7.2f} {plain_peak:8.0f}")
            for kind in ("npz", "csv", "parquet"):
                out = folder / f"out-{n}-{kind}"
                wall, peak, tail = measured(compare_command(paths[kind], out))
                seconds, read_peak = read_cost(paths[kind])
                ratio = wall / plain_wall
                line = f"{n:>10,} {'reglab .' + kind:<16} {wall:7.1f} {ratio:7.2f} {peak:8.0f}"
                line += f" {seconds:7.2f} {read_peak:8.0f}"
                if wall != wall:  # nan: this version cannot read it
                    line += f"  ({tail[:60]})"
                print(line, flush=True)
            size_mb = 2 * n * FEATURES * 4 / 2**20
            print(f"{'':>10} (the float32 features: {size_mb:.0f} MB)")
            time.sleep(0.1)


if __name__ == "__main__":
    main()
