"""What the regularizer protocol costs per training step, against plain PyTorch in the same run.

Run by hand: `.venv/bin/python benchmarks/hook_overhead.py`. The model is the default study's
MLP (64-256-256-10, batch 32, fused Adam), one thread, on random data.

(a) a plain PyTorch step; (b) the same step calling every hook of an empty `reglab.chain()`;
(c) reglab `L2 + ClipGradNorm` (analytic gradient, no graph); (d) the plain-PyTorch way of (c):
`loss + s/2 * sum(p**2)` through autograd and `clip_grad_norm_`.
"""

from __future__ import annotations

import time

import torch
from torch import nn

import reglab

STEPS, REPEATS = 400, 5


def make():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )
    return model, torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)


def run(kind: str, x: torch.Tensor, y: torch.Tensor) -> float:
    model, opt = make()
    recipe = {
        "hooks": reglab.chain(),
        "reglab": reglab.chain(reglab.L2(1e-3), reglab.ClipGradNorm(1.0)),
    }.get(kind)
    if recipe is not None:
        model = recipe.transform_model(model)
        recipe.attach(model, opt, num_classes=10, generator=torch.Generator())
    weights = reglab.select_params(model).params
    start = time.perf_counter()
    for i in range(STEPS):
        xb, yb = x[i], y[i]
        if recipe is not None:
            xb, yb = recipe.on_batch(xb, yb)
        out = model(xb)
        loss = nn.functional.cross_entropy(out, yb)
        if recipe is not None:
            loss = recipe.on_loss(loss, out)
        if kind == "autograd":
            loss = loss + 1e-3 / 2 * sum((w**2).sum() for w in weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if recipe is not None:
            recipe.on_after_backward()
        if kind == "autograd":
            nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        if recipe is not None:
            recipe.on_after_step()
    return STEPS / (time.perf_counter() - start)


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS, 32, 64, generator=g)
    y = torch.randint(0, 10, (STEPS, 32), generator=g)
    kinds = ["plain", "hooks", "reglab", "autograd"]
    best = {k: 0.0 for k in kinds}
    for _ in range(REPEATS):  # interleaved, best of REPEATS: robust to a busy machine
        for k in kinds:
            best[k] = max(best[k], run(k, x, y))
    labels = {
        "plain": "(a) plain PyTorch step",
        "hooks": "(b) + empty chain's hooks",
        "reglab": "(c) reglab L2 + ClipGradNorm",
        "autograd": "(d) autograd L2 + clip",
    }
    print(f"{'':34}{'steps/s':>10}{'vs (a)':>10}")
    for k in kinds:
        print(f"{labels[k]:34}{best[k]:10.0f}{best[k] / best['plain']:10.3f}")
    print(f"(c) vs (d): {best['reglab'] / best['autograd']:.3f}x the steps per second")


if __name__ == "__main__":
    main()
