"""What a user's own model and data cost per epoch against the built-in path, in one run.

Run by hand: `.venv/bin/python benchmarks/user_inputs.py` (about a minute on two cores).

One trial of the default study's shape (digits, 300 training samples, MLP 64-256-256-10, Adam,
batch 32, an evaluation of train and val every epoch), trained by the lab's sequential engine
(`run_trial`, one thread) with its inputs given five ways:

- built-in: `--model mlp --data digits` (in-memory tensors);
- factory: the same MLP from a user's factory (`module:function`), on the built-in data;
- Dataset: the same samples as a user's `{'train', 'val', 'test'}` mapping of `TensorDataset`s,
  streamed through a `DataLoader` (one trial at a time: the population engine needs tensors);
- factory + Dataset: both;
- image folder: the same digits written as 8x8 PNG files, decoded by Pillow on every read.

It also times a plain PyTorch loop over the same tensors, for scale. Seconds per epoch are the
median of three trials after one warm-up; ratios are against the built-in path, measured here.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

EPOCHS = 30
HERE = Path(__file__).resolve().parent


def user_mlp(input_shape, num_outputs):
    """The built-in MLP's architecture, from a user's factory."""
    return nn.Sequential(
        nn.Linear(input_shape[0], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, num_outputs),
    )  # fmt: skip


def user_datasets():
    """The default study's seed-0 split as a user's Dataset mapping."""
    from reglab.lab.studies.seams import dataset_for, trial_settings
    from reglab.lab.studies.study import StudyConfig

    data = dataset_for(trial_settings(StudyConfig(label_noise=0.0), "classification"), 0)
    make = torch.utils.data.TensorDataset
    return {
        "train": make(data.x_train, data.y_train),
        "val": make(data.x_val, data.y_val),
        "test": make(data.x_test, data.y_test),
    }


def _folder(root: Path) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    for i in range(len(y)):
        folder = root / str(y[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((x[i].reshape(8, 8) * 255 / 16).astype(np.uint8), mode="L").save(
            folder / f"{i}.png"
        )
    return root


def _trial(**settings):
    from reglab.lab.studies.study import StudyConfig, plan

    base = {"epochs": EPOCHS, "seeds": 1, "recipes": ["baseline"], "engine": "sequential"}
    base.update({"label_noise": 0.0, "device": "cpu", "workers": 1})
    return plan(StudyConfig(**{**base, **settings}))[3][0]


def per_epoch(trial) -> float:
    from reglab.lab.studies.trial import run_trial

    run_trial(trial)  # warm-up: data loading, caches
    times = []
    for _ in range(3):
        result = run_trial(trial)
        assert result["status"] == "completed", result["message"]
        times.append(statistics.fsum(e["seconds"] for e in result["history"]) / EPOCHS)
    return statistics.median(times)


def plain_per_epoch() -> float:
    from study_speed import plain_trial

    data = user_datasets()
    torch.manual_seed(0)
    started = time.perf_counter()
    plain_trial(user_mlp((64,), 10), data["train"].tensors, data["val"].tensors, EPOCHS, 0)
    return (time.perf_counter() - started) / EPOCHS


def main() -> None:
    torch.set_num_threads(1)
    sys.path.insert(0, str(HERE))
    from reglab.lab.inputs.user import reference

    mapping = reference(user_datasets(), "data")
    with tempfile.TemporaryDirectory() as tmp:
        folder = _folder(Path(tmp) / "digits")
        variants = {
            "built-in (mlp, digits)": _trial(),
            "factory model": _trial(model="user_model_data:user_mlp"),
            "Dataset splits": _trial(data=mapping),
            "factory + Dataset": _trial(model="user_model_data:user_mlp", data=mapping),
            "image folder (PNG)": _trial(data=str(folder), train_size=300),
        }
        figures = {name: per_epoch(trial) for name, trial in variants.items()}
    plain_per_epoch()  # warm-up, as the others have
    plain = plain_per_epoch()
    base = figures["built-in (mlp, digits)"]
    print(f"one trial, 300 training samples, batch 32, {EPOCHS} epochs, 1 thread:")
    print(f"  {'plain PyTorch loop':26s} {plain * 1e3:7.1f} ms/epoch  {plain / base:5.2f}x")
    for name, seconds in figures.items():
        print(f"  {name:26s} {seconds * 1e3:7.1f} ms/epoch  {seconds / base:5.2f}x built-in")
    print(json.dumps({k: round(v * 1e3, 2) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
