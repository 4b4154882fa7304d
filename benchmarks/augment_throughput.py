"""Augmentation throughput, against a per-sample loop, kornia, and a tensor copy, in one run.

Run by hand: `.venv/bin/python benchmarks/augment_throughput.py`. Batches of 256 images of
3x32x32, crop with 4 pixels of padding + horizontal flip + mixup:

(a) reglab, vectorized (one gather for the crops, `torch.where` for the flips, one mixup);
(b) the same in a per-sample Python loop (slicing each image);
(c) kornia's RandomCrop + RandomHorizontalFlip, and reglab's mixup;
(d) a same-size tensor copy (`x.clone()`): the memory limit.

Then the share of step time that augmentation takes in the default image study (digits 1x8x8,
the MLP 256-256, batch 32, the `augment` recipe), measured in the training loop itself.
"""

from __future__ import annotations

import time

import kornia.augmentation as K
import torch
from torch import nn

from reglab.augment import random_crop, random_flip
from reglab.mixing import beta_sample, mixup
from reglab.targets import soft_targets

B, REPEATS = 256, 20


def best_rate(fn, x: torch.Tensor, y: torch.Tensor) -> float:
    fn(x, y)  # warm up
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn(x, y)
        best = min(best, time.perf_counter() - start)
    return len(x) / best


def vectorized(g: torch.Generator):
    def run(x, y):
        x = random_flip(random_crop(x, 4, g), 0.5, -1, g)
        return mixup(
            x,
            soft_targets(y, 10, x.dtype),
            beta_sample(0.2, 1, g),
            torch.randperm(len(x), generator=g),
        )

    return run


def loop(g: torch.Generator):
    def run(x, y):
        out = torch.empty_like(x)
        padded = nn.functional.pad(x, (4, 4, 4, 4))
        for i in range(len(x)):
            dy, dx = (int(v) for v in torch.randint(0, 9, (2,), generator=g))
            img = padded[i, :, dy : dy + 32, dx : dx + 32]
            out[i] = img.flip(-1) if float(torch.rand(1, generator=g)) < 0.5 else img
        lam = float(beta_sample(0.2, 1, g))
        perm = torch.randperm(len(x), generator=g)
        soft = soft_targets(y, 10, x.dtype)
        mixed = torch.empty_like(out)
        targets = torch.empty_like(soft)
        for i in range(len(x)):
            j = int(perm[i])
            mixed[i] = lam * out[i] + (1 - lam) * out[j]
            targets[i] = lam * soft[i] + (1 - lam) * soft[j]
        return mixed, targets

    return run


def with_kornia(g: torch.Generator):
    aug = K.AugmentationSequential(K.RandomCrop((32, 32), padding=4), K.RandomHorizontalFlip())

    def run(x, y):
        x = aug(x)
        return mixup(
            x,
            soft_targets(y, 10, x.dtype),
            beta_sample(0.2, 1, g),
            torch.randperm(len(x), generator=g),
        )

    return run


def share_in_default_study() -> tuple[float, float]:
    from reglab.lab.inputs.recipes import BUILTIN_RECIPES, build_recipe
    from reglab.lab.studies.config import StudyConfig
    from reglab.lab.studies.seams import dataset_for, model_for, trial_settings

    settings = trial_settings(StudyConfig(), "classification")
    data = dataset_for(settings, 0)
    model = model_for(settings, data, 0)
    recipe = build_recipe(BUILTIN_RECIPES["augment"][1], data.image_shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    recipe.attach(model, opt, num_classes=10, generator=torch.Generator().manual_seed(0))
    augmenting = total = 0.0
    for _ in range(40):
        for idx in torch.randperm(len(data.x_train)).split(32):
            start = time.perf_counter()
            xb, yb = data.x_train[idx], data.y_train[idx]  # loading the batch: not augmentation
            loaded = time.perf_counter()
            x, y = recipe.on_batch(xb, yb)
            augmented = time.perf_counter()
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            end = time.perf_counter()
            augmenting += augmented - loaded
            total += end - start
    return augmenting / total, total


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(B, 3, 32, 32), torch.randint(0, 10, (B,))
    rates = {
        "(a) reglab, vectorized": best_rate(vectorized(g), x, y),
        "(b) per-sample Python loop": best_rate(loop(g), x, y),
        "(c) kornia crop+flip, reglab mixup": best_rate(with_kornia(g), x, y),
        "(d) tensor copy (memory limit)": best_rate(lambda a, b: a.clone(), x, y),
    }
    print(f"crop(4)+hflip+mixup on {B} images of 3x32x32, 1 thread, best of {REPEATS}")
    for name, rate in rates.items():
        print(f"{name:36}{rate:12,.0f} images/s  {rate / rates['(a) reglab, vectorized']:.3f}x (a)")
    share, seconds = share_in_default_study()
    print(
        f"default image study (digits, MLP, batch 32, `augment`): augmentation takes "
        f"{share:.1%} of step time (target <= 10%) over {seconds:.2f} s of steps"
    )


if __name__ == "__main__":
    main()
