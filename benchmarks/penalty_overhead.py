"""Cost of L1 + L2 penalties per training step, against plain PyTorch in the same run.

Run by hand: `.venv/bin/python benchmarks/penalty_overhead.py`. An MLP of about 5.3M parameters
(512-2048-2048-10), batch 128, fused Adam, the machine's default threads. Steps per second of

(a) a plain PyTorch step;
(b) plain PyTorch with the usual `loss + l1 * sum(|p|) + l2 * sum(p**2)` through autograd;
(c) reglab `chain(L1(l1), L2(l2))`: the L2 gradient added analytically, the L1 part as a
    proximal step (exact zeros).

Targets: (c) within 5% of (a) and faster than (b). Then the penalty pass alone (L2's gradient
update and L1's proximal step over all weights) as effective memory bandwidth, against a
same-size `torch.add(a, b, out=c)`, the memory limit, both with cold caches (as inside a step);
target: at least half of it.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

import reglab

L1, L2 = 1e-5, 1e-4
BATCH, STEPS, REPEATS = 128, 30, 9


def make() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10)
    )
    return model, torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)


def steps_per_second(kind: str, x: torch.Tensor, y: torch.Tensor) -> float:
    model, opt = make()
    recipe = reglab.chain(reglab.L1(L1), reglab.L2(L2)) if kind == "reglab" else None
    if recipe is not None:
        recipe.attach(model, opt)
    weights = reglab.select_params(model).params
    for warm in (True, False):
        start = time.perf_counter()
        for _ in range(3 if warm else STEPS):
            loss = nn.functional.cross_entropy(model(x), y)
            if kind == "autograd":
                loss = (
                    loss
                    + L1 * sum(w.abs().sum() for w in weights)
                    + L2 * sum((w**2).sum() for w in weights)
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe is not None:
                recipe.on_after_backward()
            opt.step()
            if recipe is not None:
                recipe.on_after_step()
    return STEPS / (time.perf_counter() - start)


def bandwidth() -> tuple[float, float, int]:
    """GB/s of the penalty pass and of torch.add over the same number of elements."""
    model, opt = make()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    recipe = reglab.chain(reglab.L1(L1), reglab.L2(L2))
    recipe.attach(model, opt)
    n = recipe.regularizers[0].selection.numel
    a, b, c = torch.randn(n), torch.randn(n), torch.empty(n)
    flush = torch.empty(64 * 2**20)  # 256 MB: evicts the caches, as a training step does
    best_pass = best_add = float("inf")
    for _ in range(20):
        flush.fill_(1.0)
        start = time.perf_counter()
        recipe.on_after_backward()
        recipe.on_after_step()
        best_pass = min(best_pass, time.perf_counter() - start)
        flush.fill_(1.0)
        start = time.perf_counter()
        torch.add(a, b, out=c)
        best_add = min(best_add, time.perf_counter() - start)
    # bytes moved: L2 reads w and g and writes g (3 passes); L1's in-place soft-thresholding
    # reads and writes w (2). torch.add reads two tensors and writes one (3).
    return 5 * 4 * n / best_pass / 1e9, 3 * 4 * n / best_add / 1e9, n


def peak_memory_mb(kind: str) -> float:
    """Peak resident memory of a fresh process that runs 10 steps of ``kind``."""
    here = str(Path(__file__).parent)
    code = (
        f"import resource, sys, torch; sys.path.insert(0, {here!r}); "
        "import penalty_overhead as b; g = torch.Generator().manual_seed(0); "
        "x, y = torch.randn(b.BATCH, 512, generator=g), torch.randint(0, 10, (b.BATCH,), "
        f"generator=g); b.STEPS = 10; b.steps_per_second({kind!r}, x, y); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(BATCH, 512, generator=g), torch.randint(0, 10, (BATCH,), generator=g)
    kinds = ("plain", "autograd", "reglab")
    runs: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(REPEATS):  # interleaved: each repeat measures all three back to back
        for kind in kinds:
            runs[kind].append(steps_per_second(kind, x, y))
    params = sum(p.numel() for p in make()[0].parameters())
    print(
        f"MLP with {params / 1e6:.2f}M parameters, batch {BATCH}, {torch.get_num_threads()} "
        f"threads; {REPEATS} interleaved repeats of {STEPS} steps"
    )
    labels = {
        "plain": "(a) plain PyTorch step",
        "autograd": "(b) autograd L1 + L2 penalty",
        "reglab": "(c) reglab L1 (proximal) + L2",
    }
    for kind in kinds:
        ratios = sorted(r / a for r, a in zip(runs[kind], runs["plain"], strict=True))
        print(
            f"{labels[kind]:32}{statistics.median(runs[kind]):8.2f} steps/s  "
            f"median {statistics.median(ratios):.3f}x (a) [{ratios[0]:.3f}, {ratios[-1]:.3f}]"
        )
    versus = [c / b for c, b in zip(runs["reglab"], runs["autograd"], strict=True)]
    overhead = [a / c - 1 for a, c in zip(runs["plain"], runs["reglab"], strict=True)]
    print(
        f"(c) is {statistics.median(versus):.2f}x the speed of (b); overhead of (c) over (a): "
        f"median {statistics.median(overhead) * 100:.1f}% "
        f"[{min(overhead) * 100:.1f}%, {max(overhead) * 100:.1f}%]"
    )
    memory = {kind: peak_memory_mb(kind) for kind in kinds}
    print(
        "peak resident memory, a fresh process each: "
        + ", ".join(f"{labels[k][:3]} {memory[k]:.0f} MB" for k in kinds)
        + f"; (c) - (a) = {memory['reglab'] - memory['plain']:+.0f} MB, "
        f"(b) - (a) = {memory['autograd'] - memory['plain']:+.0f} MB"
    )
    penalty_bw, add_bw, n = bandwidth()
    print(
        f"penalty pass over {n / 1e6:.2f}M weights, cold caches: {penalty_bw:.1f} GB/s; "
        f"torch.add of the same size: {add_bw:.1f} GB/s; ratio {penalty_bw / add_bw:.2f}"
    )


if __name__ == "__main__":
    main()
