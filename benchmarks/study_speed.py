"""The default study trained by the population engine, by reglab's sequential engine, and as
the same trials in a plain sequential PyTorch loop, in one run; wall time and peak memory; and
the population engine measured against the machine's limit (the roofline part).

Run by hand: `.venv/bin/python benchmarks/study_speed.py` (about 5 minutes on two cores);
`--roofline` runs only the roofline part (about a minute). With `PYTHONPATH=<checkout>/src` it
measures another version of reglab (an older commit: before/after).
`--device cuda` runs the two engines on the GPU (one worker per device) and prints the
population-vs-sequential ratio there (it needs a CUDA machine).

The trials are those of `reglab compare` with no arguments: digits, 300 training samples, MLP
64-256-256-10, Adam lr 1e-3, batch 32, 150 epochs, the 10 recipes of the default panel x 3 seeds
(the default study runs 6 since 0.5; 3 keeps the figures comparable with earlier ones),
each epoch followed by an evaluation on the training and validation sets (as every engine
records). The plain loop trains each trial without regularization (plain PyTorch has no L1,
early stopping or the rest), so it stands for the arithmetic of the same trials with no
overhead of ours; it runs in one process with one thread, and again with PyTorch's default
threads. Each variant runs in a fresh process; "peak" is the largest resident set of any process
of the variant (the main process or one worker), from getrusage.

Roofline: one population of the default study (the 15 trials the study gives its first worker), on
one core in a fresh process with nothing else running. Its useful FLOPs are counted from the
shapes: the matmuls of each member's training steps (forward, the weight gradients, the input
gradients of every layer but the first) and of its evaluation of the training and validation
sets each epoch, for the epochs the member trained (members that stop early stop counting).
Bias adds, activations, losses and the optimizer are left out, so the fraction is a lower bound
of the engine's efficiency. The ceiling is what `torch.bmm` reaches, in the same process, on
the same stacked shapes (K=15; every forward, weight-gradient and input-gradient matmul of a
step at batch 32 and at the epoch's last batch, and the evaluation's), weighted as an epoch uses
them. It is measured before and after each of two runs, and each run is held against the faster
of the two measured around it (the machine's speed drifts by 15-30% within minutes); the better
run is reported.
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


def _linear_shapes(model) -> list[tuple[int, int]]:
    """(in, out) of each Linear layer of ``model``, in order."""
    from torch import nn

    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def _epoch_matmuls(layers, n_train: int, n_eval: int, batch: int) -> list[tuple[str, tuple]]:
    """The matmuls one member does in one epoch, as (kind, (rows, inner, cols)) per call."""
    calls = []
    sizes = [min(batch, n_train - s) for s in range(0, n_train, batch)]
    for b in sizes:
        for j, (i, o) in enumerate(layers):
            calls.append(("forward", (b, i, o)))
            calls.append(("weight grad", (i, b, o)))
            if j > 0:
                calls.append(("input grad", (b, o, i)))
    for i, o in layers:
        calls.append(("evaluation", (n_eval, i, o)))
    return calls


def _bmm_seconds(k: int, shape: tuple[int, int, int], repeat: int) -> float:
    """Seconds of one ``torch.bmm`` of ``k`` stacked (rows x inner) @ (inner x cols), into a
    kept output (no allocation): the best of five timings, as a ceiling should be."""
    import torch

    r, i, c = shape
    a, b, out = torch.randn(k, r, i), torch.randn(k, i, c), torch.empty(k, r, c)
    for _ in range(3):
        torch.bmm(a, b, out=out)
    best = float("inf")
    for _ in range(5):  # the machine's noise only slows things down
        start = time.perf_counter()
        for _ in range(repeat):
            torch.bmm(a, b, out=out)
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def _population(chunk, settings):
    """The members of ``chunk`` as a study's worker builds them, and fit_population's options."""
    from reglab.lab.inputs.recipes import build_recipe
    from reglab.lab.studies.seams import dataset_for, fit_options, member_for, model_for

    members = []
    for trial in chunk:
        data = dataset_for(settings, trial.seed)
        recipe = build_recipe(json.loads(trial.spec[0]), data.image_shape)
        members.append(member_for(data, model_for(settings, data, trial.seed), recipe, trial.seed))
    return members, fit_options(settings, data)


def _time_shares(chunk, settings, epochs: int) -> dict[str, float]:
    """Where a population's time goes, from PyTorch's profiler over ``epochs`` epochs: the
    matmuls (forward, backward and evaluation), the optimizer, and everything else."""
    from torch.profiler import profile

    from reglab.lab.engine.population import fit_population

    members, options = _population(chunk, settings)
    with profile() as prof:
        fit_population(members, **{**options, "epochs": epochs})
    shares = {"matmuls": 0.0, "optimizer": 0.0, "the rest": 0.0}
    for event in prof.key_averages():
        if event.key in ("aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm"):
            shares["matmuls"] += event.self_cpu_time_total
        elif event.key in ("aten::_fused_adam_", "Optimizer.step#Adam.step"):
            shares["optimizer"] += event.self_cpu_time_total
        else:
            shares["the rest"] += event.self_cpu_time_total
    total = sum(shares.values())
    return {k: v / total for k, v in shares.items()}


def _first_population(trials) -> list:
    """The trials of the study's first population: what one of the two workers trains."""
    from reglab.lab.studies.checkpoints import Checkpoints
    from reglab.lab.studies.study import StudyConfig, _jobs

    with tempfile.TemporaryDirectory() as folder:
        jobs = _jobs(StudyConfig(), trials, {}, 2, 16, Checkpoints(folder))
    return jobs[0][1]


def roofline() -> None:
    """One population of the default study against ``torch.bmm`` on its shapes (one core)."""
    import torch

    from reglab.lab.engine import workers
    from reglab.lab.engine.population import fit_population
    from reglab.lab.studies.study import StudyConfig, plan

    torch.set_num_threads(1)
    if hasattr(workers, "tune_allocator"):
        workers.tune_allocator()  # as in the lab's workers
    _task, settings, _recipes, trials, _n, _seq = plan(StudyConfig())
    chunk = _first_population(trials)
    members, options = _population(chunk, settings)
    layers = _linear_shapes(members[0].model)
    n_train, n_eval = len(members[0].train[0]), len(members[0].train[0]) + len(members[0].val[0])
    calls = _epoch_matmuls(layers, n_train, n_eval, settings["batch_size"])
    k = len(members)

    # the ceiling: bmm on the same stacked shapes, weighted as an epoch uses them; measured
    # before and after each run, so that a run is held against the bmm of its own minutes (the
    # machine's speed drifts by 15-30% within minutes)
    counts: dict[tuple, int] = {}
    for _kind, shape in calls:
        counts[shape] = counts.get(shape, 0) + 1
    epoch_flops = sum(2 * r * i * c for _kind, (r, i, c) in calls)

    def ceiling() -> float:
        """Seconds of bmm alone for one epoch of the population's matmuls."""
        return sum(n * _bmm_seconds(k, s, 20 if s[0] > 100 else 200) for s, n in counts.items())

    bmm_times, walls = [ceiling()], []
    for _ in range(2):  # the better of two runs: the machine's noise only slows things down
        members, options = _population(chunk, settings)
        start = time.perf_counter()
        histories = fit_population(members, **options)
        walls.append(time.perf_counter() - start)
        bmm_times.append(ceiling())
    member_epochs = sum(len(h.epochs) for h in histories)
    useful = member_epochs * epoch_flops
    # each run against the faster of the ceilings measured just before and just after it
    runs = [(wall, k * epoch_flops / min(bmm_times[i : i + 2])) for i, wall in enumerate(walls)]
    fractions = [useful / wall / bmm_rate for wall, bmm_rate in runs]
    best = max(range(len(runs)), key=fractions.__getitem__)
    wall, bmm_rate = runs[best]
    rate = useful / wall
    by_kind: dict[str, float] = {}
    for kind, (r, i, c) in calls:
        by_kind[kind] = by_kind.get(kind, 0.0) + 2 * r * i * c
    print(f"roofline: one population of {k} trials (MLP {layers}), one core")
    ceilings = ", ".join(f"{k * epoch_flops / t / 1e9:.1f}" for t in bmm_times)
    print(f"  torch.bmm on the same stacked shapes: {ceilings} GFLOP/s (before, between, after)")
    for i, ((w, r), f) in enumerate(zip(runs, fractions, strict=True)):
        print(f"  run {i + 1}: {w:5.1f} s, {100 * f:4.1f}% of its ceiling ({r / 1e9:.1f} GFLOP/s)")
    print(
        f"  population engine: {useful / 1e9:6.1f} GFLOP useful in {wall:5.1f} s "
        f"(run {best + 1}; {member_epochs} member-epochs) = {rate / 1e9:6.1f} GFLOP/s, "
        f"{100 * rate / bmm_rate:4.1f}% of bmm (target >= 50%)"
    )
    shares = ", ".join(f"{kind} {100 * f / epoch_flops:.0f}%" for kind, f in by_kind.items())
    print(f"  FLOPs by kind: {shares}")
    print(f"  bmm alone would take {useful / bmm_rate:5.1f} s for the same FLOPs")
    time_shares = _time_shares(chunk, settings, 10)
    print(
        "  the engine's time (profiler, 10 epochs): "
        + ", ".join(f"{name} {100 * v:.0f}%" for name, v in time_shares.items())
    )


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
    from reglab.lab.studies.config import StudyConfig
    from reglab.lab.studies.seams import dataset_for, model_for, trial_settings

    torch.set_num_threads(threads)
    settings = trial_settings(StudyConfig(), "classification")
    for seed in range(3):
        data = dataset_for(settings, seed)
        for _ in DEFAULT_PANEL + IMAGE_PANEL:
            model = model_for(settings, data, seed)
            train, val = (data.x_train, data.y_train), (data.x_val, data.y_val)
            plain_trial(model, train, val, EPOCHS, seed)


def engine(name: str, device: str = "cpu") -> None:
    """The default study with engine ``name``, started as the ``reglab`` command starts it."""
    from reglab.lab.engine.workers import warm_up

    warm_up()
    from reglab.lab.studies.study import StudyConfig, run_study

    with tempfile.TemporaryDirectory() as out:
        # 3 seeds (30 trials), as the plain loop and the earlier figures; the default study
        # runs 6 since 0.5
        run = run_study(StudyConfig(engine=name, device=device, seeds=3), out)
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
    print("default study, 30 trials x 150 epochs, two cores (wall, peak resident set):")
    label = "population engine (2 workers)"
    print(f"  {label:40s} {pop:6.1f} s {rows['population'][1]:5.0f} MB")
    for variant, label, target in (
        ("sequential", "reglab sequential engine (2 workers)", " (target >= 2x)"),
        ("plain1", "plain PyTorch loop, 1 process, 1 thread", " (target >= 3x)"),
        ("plain2", "plain PyTorch loop, 1 process, 2 threads", ""),
    ):
        wall, peak = rows[variant]
        print(
            f"  {label:40s} {wall:6.1f} s {peak:5.0f} MB   population is "
            f"{wall / pop:4.2f}x faster{target}"
        )
    label = "`reglab compare` with no arguments"
    print(f"  {label:40s} {compare_wall():6.1f} s wall (target <= 30 s)")
    print(flush=True)
    subprocess.run([sys.executable, __file__, "roofline"], check=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--device":
        on_device(sys.argv[2])
    elif sys.argv[1:] == ["--roofline"]:
        subprocess.run([sys.executable, __file__, "roofline"], check=True)
    elif sys.argv[1:] == ["roofline"]:
        roofline()
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
