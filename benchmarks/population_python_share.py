"""The Python share of one population step at K = 15, 64 and 256 members (issue 29 §2.7).

A population's step runs per-member Python (each member's dropout draw, its own hooks) beside
the batched arithmetic; on a large GPU that Python could dominate. This measures, on one CPU
thread, the wall time of a step of the default study's MLP (64-256-256-10, batch 32) with
dropout and L2 (each member its own strengths and generator), and how much of a profiled run
of the same steps PyTorch's operators account for (torch.profiler, the self CPU time of every
operator); the rest is Python, dispatch and the profiler's own overhead (an upper bound).
Measured on two cores: 10% of the step at K = 15, 5% at 64, 3% at 256 (0.55-0.63 ms per
member). On a GPU the operators shrink and the per-member launches (a draw per member and
dropout slot) would be what to batch; that needs a GPU to measure.

Run by hand: `.venv/bin/python benchmarks/population_python_share.py` (about a minute).
"""

from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

import reglab
from reglab.lab.engine.batched import Population
from reglab.lab.engine.population import Member

STEPS = 20


def population(k: int) -> Population:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(320, 64, generator=g), torch.randint(0, 10, (320,), generator=g)
    members = []
    for i in range(k):
        torch.manual_seed(i)
        model = torch.nn.Sequential(
            torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
            torch.nn.ReLU(), torch.nn.Linear(256, 10),
        )  # fmt: skip
        recipe = reglab.chain(reglab.L2(1e-4 * (1 + i % 3)), reglab.Dropout(0.1 + 0.1 * (i % 3)))
        model = recipe.transform_model(model)
        members.append(Member(model, recipe, (x, y), (x[:64], y[:64]), i))
    pop = Population(
        members, optimizer="adam", lr=1e-3, batch_size=32, task="classification",
        num_classes=10, divergence_threshold=None, device="cpu",
    )  # fmt: skip
    pop._update_rows()
    return pop


def batches(pop: Population) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    data = pop.data_rows.unsqueeze(1)
    out = []
    for _ in range(STEPS):
        idx = torch.stack([torch.randperm(pop.n, generator=g)[:32] for _ in pop.rows])
        out.append((pop.X[data, idx], pop.Y[data, idx]))
    return out


def main() -> None:
    torch.set_num_threads(1)
    print(f"a population step: MLP 64-256-256-10, batch 32, dropout + L2, 1 thread, {STEPS} steps")
    print(f"{'K':>5} {'ms/step':>9} {'ms/member':>10} {'operators':>10} {'the rest':>9}")
    for k in (15, 64, 256):
        pop = population(k)
        work = batches(pop)
        for x, y in work[:3]:  # warm-up
            pop._step(x, y)
        started = time.perf_counter()
        for x, y in work:
            pop._step(x, y)
        wall = (time.perf_counter() - started) / STEPS
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            profiled = time.perf_counter()
            for x, y in work:
                pop._step(x, y)
            profiled = time.perf_counter() - profiled
        ops = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e6
        share = min(1.0, ops / profiled)  # of the profiled run's own wall time
        print(f"{k:>5} {wall * 1e3:>9.2f} {wall * 1e3 / k:>10.3f} {share:>10.0%} {1 - share:>9.0%}")


if __name__ == "__main__":
    main()
