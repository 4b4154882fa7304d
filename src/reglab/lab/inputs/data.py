"""Data for the lab: sets that ship with scikit-learn, synthetic sets, user files (CSV, NPZ),
a user's data function, a user's ``Dataset`` splits and image folders.

Every kind is resolved here, by :func:`load_dataset`, into one :class:`Dataset`: in-memory
tensors (built-ins, files, a function's ``(X, y)``) or streaming splits (``Dataset`` objects,
image folders) that the trainers read through :meth:`Dataset.source`.

Every study seed draws its own train/validation/test split (stratified for classification), so
confidence intervals over seeds include the variation of the data; every recipe sees the same
split for the same seed, so recipe differences are paired. Features (and regression targets) are
standardized with statistics of the training split only.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...core import ConfigError, Interval, check_param, unknown_name
from . import dataset
from .dataset import TEST_FRACTION, VAL_FRACTION, Dataset, _cut, _noise, _split
from .errors import DataError
from .images import ImageFolder
from .tables import TABLE_SUFFIXES, number, read_table
from .user import is_reference
from .user_data import _Streams, function_data, streamed

__all__ = ["BUILTIN_DATASETS", "DataError", "Dataset", "dataset_task", "load_dataset"]

BUILTIN_DATASETS = {
    "digits": "8x8 images of handwritten digits, 10 classes, 1,797 samples (scikit-learn)",
    "breast_cancer": "30 tumour measurements, 2 classes, 569 samples (scikit-learn)",
    "wine": "13 chemical measurements, 3 classes, 178 samples (scikit-learn)",
    "diabetes": "10 patient measurements, disease progression (regression), 442 samples",
    "sparse_regression": "100 features of which 10 are informative, 600 samples (synthetic)",
    "polynomial": "a noisy sine curve seen through powers x..x^10, 300 samples (synthetic)",
}

#: Classification targets with at most this many distinct integer values count as classes.
MAX_CLASSES = 50


@dataclass(frozen=True)
class _Raw:
    x: np.ndarray
    y: np.ndarray
    task: str
    feature_names: tuple[str, ...]
    image_shape: tuple[int, int, int] | None = None
    informative: tuple[int, ...] | None = None
    #: how NaN features are filled per seed ('mean', 'median'); 'error': there are none
    missing: str = "error"


def _sparse_regression() -> _Raw:
    rng = np.random.default_rng(20261123)
    n, d, k = 600, 100, 10
    x = rng.standard_normal((n, d))
    coef = np.zeros(d)
    informative = np.sort(rng.choice(d, size=k, replace=False))
    coef[informative] = rng.choice([-1, 1], size=k) * rng.uniform(1.0, 3.0, size=k)
    y = x @ coef + rng.standard_normal(n) * 2.0
    names = tuple(f"x{i}" for i in range(d))
    return _Raw(x, y, "regression", names, informative=tuple(int(i) for i in informative))


def _polynomial() -> _Raw:
    rng = np.random.default_rng(20261124)
    n, degree = 300, 10
    t = rng.uniform(-1, 1, size=n)
    y = np.sin(np.pi * t) + rng.standard_normal(n) * 0.3
    x = np.stack([t**k for k in range(1, degree + 1)], axis=1)
    return _Raw(x, y, "regression", tuple(f"x^{k}" for k in range(1, degree + 1)))


@functools.lru_cache(maxsize=8)
def _builtin(name: str) -> _Raw:
    if name == "sparse_regression":
        return _sparse_regression()
    if name == "polynomial":
        return _polynomial()
    from sklearn import datasets as skdata  # here: a worker given its data never imports it

    loader = {
        "digits": skdata.load_digits,
        "breast_cancer": skdata.load_breast_cancer,
        "wine": skdata.load_wine,
        "diabetes": skdata.load_diabetes,
    }[name]
    bunch = loader()
    task = "regression" if name == "diabetes" else "classification"
    names = tuple(str(n) for n in getattr(bunch, "feature_names", range(bunch.data.shape[1])))
    image = (1, 8, 8) if name == "digits" else None
    return _Raw(bunch.data.astype(np.float64), bunch.target, task, names, image)


def _encode_target(values: Any, where: str) -> tuple[np.ndarray, str]:
    """Integer-like targets with few values, or any non-numeric targets: classes 0..K-1."""
    arr: np.ndarray | None = None
    if isinstance(values, np.ndarray) and np.issubdtype(values.dtype, np.number):
        arr = values.astype(np.float64)  # a table's numeric column: no loop over its rows
    else:
        numbers = [number(v) if isinstance(v, str) else float(v) for v in values]
        if all(v is not None for v in numbers):
            arr = np.asarray(numbers, dtype=np.float64)
    if arr is not None:
        if not np.isfinite(arr).all():
            row = int(np.flatnonzero(~np.isfinite(arr))[0]) + 1
            raise DataError(f"The target of {where} has a missing or NaN value in row {row}.")
        integral = np.all(arr == np.round(arr))
        if not (integral and len(np.unique(arr)) <= MAX_CLASSES):
            return arr, "regression"
        values = arr
    classes, codes = np.unique(np.asarray(values), return_inverse=True)
    if len(classes) < 2:
        raise DataError(
            f"The target of {where} has a single class ({classes[0]!r}): nothing to learn."
        )
    return codes.astype(np.int64), "classification"


def _read_table(
    path: Path, target: str | None, features: tuple[str, ...] | None, missing: str
) -> _Raw:
    """A CSV or Parquet table (see :mod:`reglab.lab.inputs.tables`) as raw data."""
    table = read_table(path, target, features, missing)
    y, task = _encode_target(table.y, f"{path} (column {target!r})")
    return _Raw(table.x, y, task, table.names, missing=missing)


def _read_npz(path: Path) -> _Raw:
    with np.load(path, allow_pickle=False) as archive:
        missing = [k for k in ("X", "y") if k not in archive.files]
        if missing:
            raise DataError(
                f"{path} must hold arrays 'X' and 'y'; it has {', '.join(archive.files) or 'none'}."
            )
        x, y = archive["X"], archive["y"]
    return _arrays(x, y, str(path), "'X'")


def _arrays(x: Any, y: Any, where: str, x_name: str) -> _Raw:
    """Arrays (or tensors) ``x`` and ``y`` as raw data: ``x`` flattened per row (4-D arrays are
    images), classes encoded as for CSV files."""
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    path = where
    if x.ndim == 0:
        raise DataError(f"The inputs {x_name} of {where} must be an array with one row per sample.")
    if x.ndim == 1:
        x = x[:, None]
    image = tuple(x.shape[1:]) if x.ndim == 4 else None
    x = x.reshape(len(x), -1)
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"The inputs {x_name} of {path} must be numeric. Got dtype {x.dtype}.")
    x = x.astype(np.float32, copy=False)  # what the model trains on; half of float64
    if not np.isfinite(x).all():
        raise DataError(f"The inputs {x_name} of {path} have a NaN or infinite value.")
    if y.ndim == 0 or len(y) != len(x):
        raise DataError(
            f"{path} has {len(x)} rows of inputs but {y.size if y.ndim == 0 else len(y)} targets."
        )
    target, task = _encode_target(list(np.asarray(y).ravel()), f"{path}")
    names = tuple(f"x{i}" for i in range(x.shape[1]))
    return _Raw(x, target, task, names, image_shape=image)


def _source(
    name: str,
    target: str | None,
    image_size: tuple[int, ...] | None = None,
    features: tuple[str, ...] | None = None,
    missing: str = "error",
) -> Any:
    if name in BUILTIN_DATASETS:
        return _builtin(name)
    if name.startswith("python:") or is_reference(name) or Path(name).is_dir():
        return _user_source(name, image_size)
    path = Path(name)
    suffix = path.suffix.lower()
    looks_like_a_path = suffix in FILE_SUFFIXES or "/" in name or "\\" in name
    if looks_like_a_path and not path.exists():
        raise DataError(
            f"The 'data' parameter of compare names {name}, which does not exist (a .csv, "
            ".parquet or .npz file, or a folder of images with one sub-folder per class)."
        )
    if suffix not in FILE_SUFFIXES:
        raise unknown_name(
            "compare",
            "data",
            name,
            [
                *BUILTIN_DATASETS,
                "<file>.csv",
                "<file>.parquet",
                "<file>.npz",
                "<image folder>",
                "<module>:<function>",
            ],
        )
    if not path.is_file():
        raise DataError(f"The 'data' parameter of compare names {name}, which is not a file.")
    if features is not None and suffix not in TABLE_SUFFIXES:
        raise ConfigError(
            "The 'features' parameter of compare chooses columns of a .csv or .parquet table. "
            f"Got {list(features)} with {name}."
        )
    stat = path.stat()  # a file changed since it was read is read again
    where = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    return _file_source(*where, target, features, missing)


#: The files the lab reads, by suffix.
FILE_SUFFIXES = (*TABLE_SUFFIXES, ".npz")


@functools.lru_cache(maxsize=2)
def _file_source(
    path: str,
    mtime: int,
    size: int,
    target: str | None,
    features: tuple[str, ...] | None,
    missing: str,
) -> _Raw:
    """A data file, read once per process (each seed's split and the task reuse it)."""
    file = Path(path)
    if file.suffix.lower() in TABLE_SUFFIXES:
        return _read_table(file, target, features, missing)
    return _read_npz(file)


@functools.lru_cache(maxsize=8)
def _user_source(name: str, image_size: tuple[int, ...] | None) -> Any:
    """A data function's result or an image folder's listing, once per process."""
    if Path(name).is_dir():
        folder = ImageFolder(name, image_size)
        return _Streams("classification", len(folder.classes), folder.input_shape, whole=folder)
    return function_data(name, _arrays)


def dataset_task(
    name: str,
    target: str | None = None,
    image_size: tuple[int, ...] | None = None,
    features: Sequence[str] | None = None,
    missing: str = "error",
) -> str:
    """``'classification'`` or ``'regression'`` for a data set, without splitting it.

    Raises:
        ConfigError: as :func:`load_dataset` does for an unknown name or unusable data.
    """
    return _source(name, target, _size(image_size), _columns(features), missing).task


def _size(image_size: Any) -> tuple[int, ...] | None:
    return None if image_size is None else tuple(int(v) for v in image_size)


def _columns(features: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if features is None else tuple(features)


#: Rows per block when a float32 table's statistics are summed (bounds the float64 temporary).
STATS_BLOCK = 65_536


def _standardize(parts: list[np.ndarray]) -> None:
    """Standardize train, val and test (``parts``, copies: changed in place) with the training
    split's mean and standard deviation, 1 where a column is constant. Built-in data (float64)
    is computed exactly as NumPy does it for the whole array; a table (float32) has its
    statistics summed in float64 over blocks of rows, so no float64 copy of it is made."""
    train = parts[0]
    if train.dtype == np.float64:
        mean, std = train.mean(0), train.std(0)
    else:
        total = np.zeros(train.shape[1])
        for start in range(0, len(train), STATS_BLOCK):
            total += train[start : start + STATS_BLOCK].sum(0, dtype=np.float64)
        mean = total / max(len(train), 1)
        squares = np.zeros(train.shape[1])
        for start in range(0, len(train), STATS_BLOCK):
            block = train[start : start + STATS_BLOCK].astype(np.float64) - mean
            squares += (block * block).sum(0)
        std = np.sqrt(squares / max(len(train), 1))
    std[std == 0] = 1.0
    for part in parts:
        part -= mean.astype(part.dtype)
        part /= std.astype(part.dtype)


def _fill_missing(raw: _Raw, parts: list[np.ndarray]) -> tuple[list[np.ndarray], str | None]:
    """Fill the NaN features of every split (``parts``: train, val, test; filled in place)
    with the training split's mean or median of the column (0 for a column with no training
    value); the note that says so, or None."""
    if raw.missing == "error":
        return parts, None
    train = parts[0]
    gaps = np.isnan(train).any(0) | np.any([np.isnan(p).any(0) for p in parts[1:]], axis=0)
    if not gaps.any():
        return parts, None
    columns = np.flatnonzero(gaps)
    known = train[:, columns]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column with no training value
        statistic = np.nanmean if raw.missing == "mean" else np.nanmedian
        fill = np.nan_to_num(statistic(known, axis=0), nan=0.0).astype(train.dtype)
    cells = 0
    for part in parts:
        block = part[:, columns]
        empty = np.isnan(block)
        cells += int(empty.sum())
        part[:, columns] = np.where(empty, fill, block)
    names = ", ".join(repr(raw.feature_names[c]) for c in columns[:5])
    more = f" and {len(columns) - 5} more" if len(columns) > 5 else ""
    note = (
        f"{cells:,} missing values in {names}{more} were filled with each column's "
        f"{raw.missing} over this seed's training split"
    )
    return parts, note


def load_dataset(
    name: str = "digits",
    *,
    seed: int = 0,
    train_size: int | None = None,
    label_noise: float = 0.0,
    target: str | None = None,
    image_size: tuple[int, int] | None = None,
    val_fraction: float = VAL_FRACTION,
    test_fraction: float = TEST_FRACTION,
    features: Sequence[str] | None = None,
    missing: str = "error",
) -> Dataset:
    """Load a data set and draw seed ``seed``'s split.

    Args:
        name: a built-in name (see :data:`BUILTIN_DATASETS`), a ``.csv``, ``.parquet`` or
            ``.npz`` path, a
            folder of images with one sub-folder per class, or a data function
            ``'package.module:function'`` / ``'file.py:function'`` returning ``(X, y)`` arrays
            (treated as a CSV file's) or a mapping ``{'train', 'val'[, 'test']}`` of
            ``torch.utils.data.Dataset`` objects (the user's split, streamed).
        seed: selects the split and the noisy labels; the same seed gives the same data.
        train_size: keep only this many training samples (stratified); None keeps all that
            remain after the test and validation splits.
        label_noise: fraction of training labels replaced by a different, random class
            (classification only); validation and test labels are never changed.
        target: the target column of a CSV file.
        image_size: ``(H, W)`` images of a folder are resized to (default: the first image's).
        val_fraction: the share of the data drawn (stratified) for validation, in ``(0, 1)``.
        test_fraction: the share drawn for test; ``val_fraction + test_fraction < 1``. A
            user's own ``{'train', 'val', 'test'}`` split is used as given.
        features: the columns of a table to use as inputs (default: all but the target).
        missing: a table's missing values: ``'error'`` refuses them; ``'mean'`` and
            ``'median'`` fill a column's gaps with that statistic of the seed's training split
            (a missing category is a row of zeros; see :mod:`reglab.lab.inputs.tables`).

    Returns:
        A :class:`Dataset`.

    Raises:
        ConfigError: for an unknown name, a bad size or fraction, or unusable data
            (:class:`DataError`).

    Examples:
        >>> data = load_dataset("digits", seed=0, train_size=300, label_noise=0.3)
    """
    check_param("compare", "label_noise", label_noise, Interval(float, 0, 1, "left"))
    check_param("compare", "val_fraction", val_fraction, Interval(float, 0, 1, "neither"))
    check_param("compare", "test_fraction", test_fraction, Interval(float, 0, 1, "neither"))
    raw = _source(name, target, _size(image_size), _columns(features), missing)
    if raw.task == "regression" and label_noise > 0:
        raise ConfigError(
            f"The 'label_noise' parameter of compare must be 0 for a regression "
            f"data set such as {name!r}. Got {label_noise}."
        )
    if isinstance(raw, _Streams):
        return streamed(name, raw, seed, train_size, label_noise, (val_fraction, test_fraction))
    tr, va, te = _split(raw.y, raw.task, seed, train_size, val_fraction, test_fraction)
    notes: dict[str, Any] = {}
    curve = None
    if len(tr) > dataset.CURVE_ROWS:  # learning curves on a fixed sample; final figures on all
        _, chosen = _cut(np.arange(len(tr)), dataset.CURVE_ROWS, raw.y[tr], raw.task, seed)
        curve = torch.as_tensor(np.sort(chosen))
        notes["curves"] = (
            f"the learning curves measure the training split on a fixed stratified sample of "
            f"{dataset.CURVE_ROWS:,} of its {len(tr):,} rows; the final figures use every row"
        )
    xs, filled = _fill_missing(raw, [raw.x[i] for i in (tr, va, te)])
    _standardize(xs)
    ys = [raw.y[i].copy() for i in (tr, va, te)]
    if filled is not None:
        notes["missing"] = filled
    num_classes = None
    if raw.task == "classification":
        num_classes = int(raw.y.max()) + 1
        if label_noise > 0:
            clean = torch.as_tensor(ys[0].copy(), dtype=torch.int64)
            shifts = _noise(len(tr), label_noise, num_classes, seed)
            flip = np.fromiter(shifts, dtype=np.int64, count=len(shifts))
            shift = np.fromiter(shifts.values(), dtype=np.int64, count=len(shifts))
            ys[0][flip] = (ys[0][flip] + shift) % num_classes
            notes["noisy_labels"] = float(len(flip))
        ys = [torch.as_tensor(y, dtype=torch.int64) for y in ys]
    else:
        y_mean, y_std = ys[0].mean(), ys[0].std() or 1.0
        ys = [torch.as_tensor((y - y_mean) / y_std, dtype=torch.float32) for y in ys]
    # a user's images keep their shape: the model receives (B, C, H, W) batches, as from an
    # image folder; the built-in data sets are tables (digits: 64 features; 'cnn' unflattens)
    user_images = raw.image_shape is not None and name not in BUILTIN_DATASETS
    shape = raw.image_shape if user_images else (raw.x.shape[1],)
    xt = [torch.as_tensor(x, dtype=torch.float32).reshape(len(x), *shape) for x in xs]
    return Dataset(
        name,
        raw.task,
        xt[0],
        ys[0],
        xt[1],
        ys[1],
        xt[2],
        ys[2],
        num_classes,
        list(raw.feature_names),
        raw.image_shape,
        list(raw.informative) if raw.informative else None,
        notes,
        input_shape=tuple(shape),
        y_train_clean=clean if raw.task == "classification" and label_noise > 0 else None,
        curve_index=curve,
    )
