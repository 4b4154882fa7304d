"""A user's model factories and data, as a test imports them by reference
(``user_inputs:tiny_mlp``, with ``tests/lab`` on the path) or passes them from Python."""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Dataset

import reglab

CALLS: list[tuple] = []


def tiny_mlp(input_shape, num_outputs, hidden=16):
    CALLS.append((tuple(input_shape), num_outputs, hidden))
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_outputs),
    )


def residual_mlp(input_shape, num_outputs):
    width = 16
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), width),
        nn.ReLU(),
        reglab.Residual(nn.Sequential(nn.Linear(width, width), nn.ReLU())),
        nn.Linear(width, num_outputs),
    )


def batchnorm_mlp(input_shape, num_outputs):
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, num_outputs),
    )


def wrong_outputs(input_shape, num_outputs):
    return nn.Linear(math.prod(input_shape), 3)


def not_a_module(input_shape, num_outputs):
    return "a string"


def raises(input_shape, num_outputs):
    raise ValueError("no such layer size")


class Counting(Dataset):
    """Digits as a Dataset that counts every ``__getitem__``; no ``targets`` attribute, so the
    lab reads each label once to learn the classes."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x = torch.tensor(x / 16, dtype=torch.float32)
        self.y = y.astype(np.int64)
        self.calls = 0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        self.calls += 1
        return self.x[i], int(self.y[i])


def digits_arrays():
    x, y = load_digits(return_X_y=True)
    return x, y


def digits_datasets():
    x, y = load_digits(return_X_y=True)
    return {
        "train": Counting(x[:400], y[:400]),
        "val": Counting(x[400:600], y[400:600]),
        "test": Counting(x[600:800], y[600:800]),
    }


def mismatched():
    return np.zeros((10, 3)), np.zeros(7)


def wrong_type():
    return 42


def image_arrays():
    """Two classes of 3x8x8 images (bright top half or bright bottom half), as a user's data
    function returns them: a 4-D array."""
    g = np.random.default_rng(0)
    x = g.normal(0, 0.3, (120, 3, 8, 8)).astype(np.float32)
    y = np.arange(120) % 2
    x[y == 0, :, :4] += 1.0
    x[y == 1, :, 4:] += 1.0
    return x, y


SHAPES: list[tuple] = []


def shape_checking_cnn(input_shape, num_outputs):
    """A user's CNN that needs (C, H, W) and records the batch shapes it is fed."""
    SHAPES.append(tuple(input_shape))
    c, h, w = input_shape

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(c, 4, 3, padding=1)
            self.head = nn.Linear(4 * h * w, num_outputs)

        def forward(self, x):
            if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
                raise ValueError(f"expected (B, {c}, {h}, {w}) batches, got {tuple(x.shape)}")
            return self.head(torch.relu(self.conv(x)).flatten(1))

    return Net()
