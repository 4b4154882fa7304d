"""A user's model for the lab: a small residual CNN factory.

The lab calls ``residual_cnn(input_shape, num_outputs, **model_args)`` with torch seeded per study
seed, so every recipe of a seed starts from the same weights::

    reglab compare --data shapes/ --image-size 16,16 \
        --model examples/residual_cnn.py:residual_cnn --model-args width=16,blocks=2

Its residual blocks are ``reglab.Residual`` modules, so ``DropPath`` finds them by itself, and
other recipes (dropout insertion, norms, penalties) work on it as on the built-ins.
"""

from __future__ import annotations

import math

from torch import nn

import reglab


def residual_cnn(
    input_shape: tuple[int, ...], num_outputs: int, width: int = 16, blocks: int = 2
) -> nn.Module:
    """A stem convolution, ``blocks`` residual 3x3 blocks, average pooling to 4x4 and a linear
    head. ``input_shape`` is ``(C, H, W)``, or ``(features,)`` for square greyscale images
    given as flat rows (the built-in ``digits``)."""
    if len(input_shape) == 1:  # flat rows of a square greyscale image, e.g. digits' 64
        side = math.isqrt(input_shape[0])
        if side * side != input_shape[0]:
            raise ValueError(f"flat inputs of {input_shape[0]} features are not a square image")
        stem: list[nn.Module] = [nn.Unflatten(1, (1, side, side))]
        channels = 1
    else:
        stem, channels = [], input_shape[0]
    body = [
        reglab.Residual(
            nn.Sequential(
                nn.Conv2d(width, width, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1),
            )
        )
        for _ in range(blocks)
    ]
    return nn.Sequential(
        *stem,
        nn.Conv2d(channels, width, 3, padding=1),
        nn.ReLU(),
        *body,
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(width * 16, num_outputs),
    )
