"""Warm vs cold starts along a regularization path: time and final validation loss per point.

Run by hand: `.venv/bin/python benchmarks/path_warm_start.py` (about two minutes on two cores).

Two paths of L1's strength, 8 points from strong to weak, 3 seeds. Cold starts train every
point from the initial weights for the study's epochs; warm starts train the first point for
all of them and every later point for a third, starting from the previous point's weights, as
glmnet does:

1. the lasso: a linear model on `sparse_regression`, full-batch SGD (convex: each point has one
   solution, so a warm start should reach it in fewer epochs);
2. the default study's MLP on digits with 30% label noise (not convex, and more epochs mean more
   memorized noise: a warm-started point has trained longer in total).
"""

from __future__ import annotations

import os

from reglab.lab.studies.config import StudyConfig
from reglab.lab.studies.path import PathConfig, run_path

LASSO = StudyConfig(
    data="sparse_regression",
    model="linear",
    optimizer="sgd",
    lr=0.2,
    batch_size=300,
    train_size=300,
    epochs=600,
)


def compare(study: StudyConfig, param: str) -> None:
    workers = os.cpu_count() or 1
    runs = {}
    for warm in (False, True):
        config = PathConfig(recipe="l1", param=param, study=study, points=8, seeds=3, warm=warm)
        runs[warm] = run_path(config, workers)
    cold, warm = runs[False], runs[True]
    print(f"{'strength':>10s} {'cold val loss':>14s} {'warm val loss':>14s} {'warm - cold':>12s}")
    for s, (mean_cold, se_cold) in sorted(cold.choice["stats"].items(), reverse=True):
        mean_warm, se_warm = warm.choice["stats"][s]
        print(
            f"{s:10.4g} {mean_cold:8.4f}±{se_cold:.3f} {mean_warm:8.4f}±{se_warm:.3f} "
            f"{mean_warm - mean_cold:+12.4f}"
        )
    epochs = {w: sum(r["epochs"] for r in runs[w].rows) for w in runs}
    for label, run, n in (("cold", cold, epochs[False]), ("warm", warm, epochs[True])):
        print(
            f"{label}: {run.seconds:6.1f} s, {n} epochs; best {run.choice['best']:.4g}, "
            f"one-SE {run.choice['one_se']:.4g}"
        )
    print(f"warm starts: {cold.seconds / warm.seconds:.2f}x faster")


def main() -> None:
    for title, study, param in (
        ("lasso path (linear model, sparse_regression)", LASSO, "strength=1e-3:1"),
        ("MLP on noisy digits (the default study)", StudyConfig(), "strength=1e-3:0.3"),
    ):
        print(f"== {title}", flush=True)
        compare(study, param)
        print()


if __name__ == "__main__":
    main()
