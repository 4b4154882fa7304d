"""A study over a folder of images, as a user with photos on disk would run it.

It writes scikit-learn's digits as 16x16 PNG files, one sub-folder per class (the ImageFolder
layout), then compares recipes on the residual CNN of ``examples/residual_cnn.py``::

    python examples/image_folder.py                 # writes runs/digit_images/ and a report
    python examples/image_folder.py --epochs 5 --seeds 1

The same study from the command line, once the folder exists::

    reglab compare --data runs/digit_images/data --image-size 16,16 \
        --model examples/residual_cnn.py:residual_cnn --model-args width=16,blocks=2 \
        --recipes baseline,augment,drop_path,l2 --seeds 3 --epochs 30
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

import reglab.lab

HERE = Path(__file__).resolve().parent


def write_digit_folder(root: str | Path, per_class: int = 60, size: int = 16) -> Path:
    """Write ``per_class`` digits of each class as ``size x size`` greyscale PNGs under
    ``root/<digit>/``; return ``root``."""
    root = Path(root)
    x, y = load_digits(return_X_y=True)
    for digit in range(10):
        folder = root / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(y == digit)[:per_class]:
            pixels = (x[i].reshape(8, 8) * 255 / 16).astype(np.uint8)
            image = Image.fromarray(pixels, mode="L").resize((size, size), Image.BILINEAR)
            image.save(folder / f"{i}.png")
    return root


def main(argv: list[str] | None = None) -> reglab.lab.StudyRun:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/digit_images")
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--recipes", default="baseline,augment,drop_path,l2")
    args = parser.parse_args(argv)
    data = write_digit_folder(Path(args.out) / "data", args.per_class)
    return reglab.lab.compare(
        data=str(data),
        image_size=[16, 16],
        model=f"{HERE / 'residual_cnn.py'}:residual_cnn",
        model_args={"width": 16, "blocks": 2},
        recipes=args.recipes.split(","),
        seeds=args.seeds,
        epochs=args.epochs,
        lr=3e-3,
        out=Path(args.out) / "study",
    )


if __name__ == "__main__":
    main()
