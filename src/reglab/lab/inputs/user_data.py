"""A user's data as a study input: a data function's result, a mapping of ``Dataset`` splits,
an image folder; each made into a :class:`~reglab.lab.inputs.dataset.Dataset` that streams."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from ...core import ConfigError
from .dataset import TEST_FRACTION, VAL_FRACTION, Dataset, _noise, _split, _subset
from .errors import DataError
from .images import ImageFolder
from .streams import NoisyLabels, labels_of, sample_target
from .user import first_line, load_function

__all__ = ["function_data", "streamed"]


@dataclass(frozen=True)
class _Streams:
    """Data that streams: a user's ``train``/``val``/``test`` splits, or one image folder that
    each seed splits itself (``whole``)."""

    task: str
    num_classes: int | None
    input_shape: tuple[int, ...]
    splits: tuple[tuple[str, Any], ...] = ()
    whole: ImageFolder | None = None


def function_data(name: str, arrays: Callable[..., Any]) -> Any:
    """Call a user's data function (or take a mapping given from Python) and check what it
    returned: ``(X, y)`` arrays become raw data through ``arrays`` (as a CSV file's), a mapping
    of ``Dataset`` splits becomes :class:`_Streams`."""
    function = load_function(name, "data")  # a reference, or an object held here
    if isinstance(function, Mapping):  # a mapping of Dataset objects given from Python
        return _mapping(function, name)
    try:
        value = function()
    except ConfigError:
        raise
    except Exception as exc:
        raise DataError(
            f"The data function {name!r} raised {type(exc).__name__}: {first_line(exc)}."
        ) from None
    if isinstance(value, Mapping):
        return _mapping(value, name)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return arrays(value[0], value[1], f"the data function {name!r}", "X")
    raise DataError(
        f"The data function {name!r} must return (X, y) arrays or a mapping with 'train', "
        f"'val' and optionally 'test' torch.utils.data.Dataset objects. Got a "
        f"{type(value).__name__}."
    )


def _mapping(value: Mapping[str, Any], name: str) -> _Streams:
    missing = [k for k in ("train", "val") if k not in value]
    extra = [k for k in value if k not in ("train", "val", "test")]
    if missing or extra:
        raise DataError(
            f"The data {name!r} must map 'train', 'val' and optionally 'test' to Dataset "
            f"objects. Got the keys {sorted(map(str, value))}."
        )
    for key, split in value.items():
        if not (hasattr(split, "__getitem__") and hasattr(split, "__len__")):
            raise DataError(
                f"The {key!r} split of {name!r} must be a torch.utils.data.Dataset (with "
                f"__len__ and __getitem__). Got a {type(split).__name__}."
            )
    x, y = sample_target(value["train"], f"{name!r} 'train'")
    x = torch.as_tensor(x)
    floating = isinstance(y, float) or (isinstance(y, torch.Tensor) and y.is_floating_point())
    classes = None
    if not floating:
        labels = np.concatenate([labels_of(value[k]) for k in value])
        if labels.min() < 0:
            raise DataError(f"The labels of {name!r} must be class indices >= 0.")
        classes = int(labels.max()) + 1
        if classes < 2:
            raise DataError(f"The labels of {name!r} hold a single class: nothing to learn.")
    splits = tuple((k, value[k]) for k in ("train", "val", "test") if k in value)
    task = "regression" if floating else "classification"
    return _Streams(task, classes, tuple(x.shape), splits)


def streamed(
    name: str,
    src: _Streams,
    seed: int,
    train_size: int | None,
    label_noise: float,
    fractions: tuple[float, float] = (VAL_FRACTION, TEST_FRACTION),
) -> Dataset:
    notes: dict[str, Any] = {}
    if src.whole is not None:  # an image folder: this seed's stratified split
        tr, va, te = _split(src.whole.targets, src.task, seed, train_size, *fractions)
        train, val, test = (Subset(src.whole, i.tolist()) for i in (tr, va, te))
    else:
        splits = dict(src.splits)
        train, val = splits["train"], splits["val"]
        if "test" in splits:
            test = splits["test"]
        else:
            test = val
            notes["test_is_val"] = "no 'test' split was given: test metrics are on 'val'"
        if train_size is not None:
            labels = labels_of(train) if hasattr(train, "targets") else None
            pool = _subset(np.arange(len(train)), labels, src.task, seed, train_size)
            train = Subset(train, pool.tolist())
    if label_noise > 0:
        shifts = _noise(len(train), label_noise, src.num_classes, seed)
        train = NoisyLabels(train, shifts, src.num_classes)
        notes["noisy_labels"] = float(len(shifts))
    shape = tuple(src.input_shape)
    return Dataset(
        name,
        src.task,
        *([None] * 6),
        src.num_classes,
        [],
        shape if len(shape) == 3 else None,
        None,
        notes,
        splits={"train": train, "val": val, "test": test},
        input_shape=shape,
    )
