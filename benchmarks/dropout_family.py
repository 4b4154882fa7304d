"""Cost of the dropout family, weight averaging and adaptive clipping per training step, against
plain PyTorch in the same run.

Run by hand: `.venv/bin/python benchmarks/dropout_family.py`. The model is the default study's
MLP (64-256-256-10, batch 32, fused Adam), one thread, random data; for DropBlock and
ChannelDropout the lab's CNN on 8x8 images. Each variant runs STEPS steps, REPEATS times
interleaved; the median steps/s is printed with its ratio to the plain model of the same kind.

Pairs compared: reglab `Dropout(0.5)` (generator-driven inverted dropout) vs `torch.nn.Dropout`
inserted at the same places; `EMA(0.99)` vs `torch.optim.swa_utils.AveragedModel` with an EMA
function; `AdaptiveClip` (and `ClipGradValue`) vs no clipping.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import reglab
from reglab.lab.inputs.models import build_model

STEPS, REPEATS = 300, 5


def mlp() -> nn.Module:
    return build_model("mlp", 64, 10, widths=(256, 256))


def cnn() -> nn.Module:
    return build_model("cnn", 64, 10, image_shape=(1, 8, 8))


def torch_dropout_mlp() -> nn.Module:
    layers = list(mlp())
    return nn.Sequential(*layers[:2], nn.Dropout(0.5), *layers[2:4], nn.Dropout(0.5), layers[4])


VARIANTS = {
    "plain mlp": (mlp, None, False),
    "torch nn.Dropout": (torch_dropout_mlp, None, False),
    "reglab Dropout": (mlp, lambda: reglab.Dropout(0.5), False),
    "reglab GaussianDropout": (mlp, lambda: reglab.GaussianDropout(0.5), False),
    "reglab DropConnect": (mlp, lambda: reglab.DropConnect(0.5), False),
    "torch AveragedModel EMA": (mlp, None, True),
    "reglab EMA": (mlp, lambda: reglab.EMA(0.99), False),
    "reglab AdaptiveClip": (mlp, lambda: reglab.AdaptiveClip(0.01), False),
    "reglab ClipGradValue": (mlp, lambda: reglab.ClipGradValue(0.01), False),
    "plain cnn": (cnn, None, False),
    "reglab ChannelDropout": (cnn, lambda: reglab.ChannelDropout(0.1), False),
    "reglab DropBlock": (cnn, lambda: reglab.DropBlock(0.1, 3), False),
}


def run(name: str, x: torch.Tensor, y: torch.Tensor) -> float:
    build, make_reg, torch_ema = VARIANTS[name]
    torch.manual_seed(0)
    model = build()
    recipe = reglab.chain(make_reg()) if make_reg else reglab.chain()
    model = recipe.transform_model(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    recipe.attach(model, opt, num_classes=10, generator=torch.Generator().manual_seed(0))
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.99)) if torch_ema else None
    start = time.perf_counter()
    for i in range(STEPS):
        xb, yb = recipe.on_batch(x[i], y[i])
        out = model(xb)
        loss = recipe.on_loss(nn.functional.cross_entropy(out, yb), out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        recipe.on_after_backward()
        opt.step()
        recipe.on_after_step()
        if averaged is not None:
            averaged.update_parameters(model)
    return STEPS / (time.perf_counter() - start)


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS, 32, 64, generator=g)
    y = torch.randint(0, 10, (STEPS, 32), generator=g)
    speeds: dict[str, list[float]] = {n: [] for n in VARIANTS}
    for _ in range(REPEATS):
        for name in VARIANTS:
            speeds[name].append(run(name, x, y))
    medians = {n: statistics.median(v) for n, v in speeds.items()}
    print(f"{STEPS} steps x {REPEATS} repeats, batch 32, 1 thread; median steps/s")
    for name, speed in medians.items():
        base = medians["plain cnn" if VARIANTS[name][0] is cnn else "plain mlp"]
        print(f"  {name:26s} {speed:8.0f} steps/s  {speed / base:5.2f}x of plain")
    ratio = medians["reglab Dropout"] / medians["torch nn.Dropout"]
    print(f"reglab Dropout vs torch nn.Dropout: {ratio:.2f}x the speed")
    ratio = medians["reglab EMA"] / medians["torch AveragedModel EMA"]
    print(f"reglab EMA vs torch AveragedModel EMA: {ratio:.2f}x the speed")


if __name__ == "__main__":
    main()
