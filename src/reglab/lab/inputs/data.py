"""Data for the lab: sets that ship with scikit-learn, synthetic sets, and user files.

Every study seed draws its own train/validation/test split (stratified for classification), so
confidence intervals over seeds include the variation of the data; every recipe sees the same
split for the same seed, so recipe differences are paired. Features (and regression targets) are
standardized with statistics of the training split only.
"""

from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn import datasets as skdata
from sklearn.model_selection import train_test_split

from ...core import ConfigError, Interval, check_param, unknown_name

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
TEST_FRACTION, VAL_FRACTION = 0.3, 0.2


class DataError(ConfigError):
    """Data that cannot be used: a missing column, a non-number, a NaN, too few rows."""


@dataclass
class Dataset:
    """One seed's split, as float32 features and int64 classes or float32 targets."""

    name: str
    task: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int | None
    feature_names: list[str]
    image_shape: tuple[int, int, int] | None = None
    informative: list[int] | None = None
    notes: dict[str, float] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]


@dataclass(frozen=True)
class _Raw:
    x: np.ndarray
    y: np.ndarray
    task: str
    feature_names: tuple[str, ...]
    image_shape: tuple[int, int, int] | None = None
    informative: tuple[int, ...] | None = None


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


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _encode_target(values: list, where: str) -> tuple[np.ndarray, str]:
    """Integer-like targets with few values, or any non-numeric targets: classes 0..K-1."""
    numbers = [_number(v) if isinstance(v, str) else float(v) for v in values]
    if all(v is not None for v in numbers):
        arr = np.asarray(numbers, dtype=np.float64)
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


def _read_csv(path: Path, target: str | None) -> _Raw:
    with path.open(newline="") as handle:
        rows = [r for r in csv.reader(handle) if r]
    if len(rows) < 2:
        raise DataError(f"{path} has no data rows below its header.")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if target not in header:
        raise unknown_name("compare", "target", target, header)
    t = header.index(target)
    columns = [i for i in range(len(header)) if i != t]
    x = np.empty((len(body), len(columns)))
    for r, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(
                f"Row {r} of {path} has {len(row)} fields; the header has {len(header)}."
            )
        for j, c in enumerate(columns):
            value = _number(row[c])
            if value is None:
                raise DataError(
                    f"Column {header[c]!r} of {path} must hold numbers; row {r} has {row[c]!r}."
                )
            if not math.isfinite(value):
                raise DataError(
                    f"Column {header[c]!r} of {path} has a missing or NaN value in row {r}."
                )
            x[r - 2, j] = value
    y, task = _encode_target([row[t].strip() for row in body], f"{path} (column {target!r})")
    return _Raw(x, y, task, tuple(header[c] for c in columns))


def _read_npz(path: Path) -> _Raw:
    with np.load(path, allow_pickle=False) as archive:
        missing = [k for k in ("X", "y") if k not in archive.files]
        if missing:
            raise DataError(
                f"{path} must hold arrays 'X' and 'y'; it has {', '.join(archive.files) or 'none'}."
            )
        x, y = archive["X"], archive["y"]
    if x.ndim == 1:
        x = x[:, None]
    image = tuple(x.shape[1:]) if x.ndim == 4 else None
    x = x.reshape(len(x), -1)
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"The array 'X' of {path} must be numeric. Got dtype {x.dtype}.")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise DataError(f"The array 'X' of {path} has a NaN or infinite value.")
    if len(y) != len(x):
        raise DataError(f"{path} has {len(x)} rows in 'X' but {len(y)} in 'y'.")
    target, task = _encode_target(list(np.asarray(y).ravel()), f"{path}")
    names = tuple(f"x{i}" for i in range(x.shape[1]))
    return _Raw(x, target, task, names, image_shape=image)


def _raw(name: str, target: str | None) -> _Raw:
    if name in BUILTIN_DATASETS:
        return _builtin(name)
    path = Path(name)
    if path.suffix.lower() not in (".csv", ".npz"):
        raise unknown_name("compare", "data", name, [*BUILTIN_DATASETS, "<file>.csv", "<file>.npz"])
    if not path.is_file():
        raise DataError(f"The 'data' parameter of compare names {name}, which is not a file.")
    return _read_csv(path, target) if path.suffix.lower() == ".csv" else _read_npz(path)


def dataset_task(name: str, target: str | None = None) -> str:
    """``'classification'`` or ``'regression'`` for a data set, without splitting it.

    Raises:
        ConfigError: as :func:`load_dataset` does for an unknown name or unusable data.
    """
    return _raw(name, target).task


def _split(raw: _Raw, seed: int, train_size: int | None) -> tuple[np.ndarray, ...]:
    n = len(raw.y)
    idx = np.arange(n)
    n_test, n_val = round(n * TEST_FRACTION), round(n * VAL_FRACTION)
    if n - n_test - n_val < 2 or n_test < 1 or n_val < 1:
        raise DataError(
            f"The data has {n} rows: too few to split into train, validation and test sets."
        )

    def cut(pool: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        strata = raw.y[pool] if raw.task == "classification" else None
        try:
            return train_test_split(pool, test_size=size, random_state=seed, stratify=strata)
        except ValueError:  # a class too rare to stratify: fall back to a plain shuffle
            return train_test_split(pool, test_size=size, random_state=seed)

    rest, test = cut(idx, n_test)
    pool, val = cut(rest, n_val)
    if train_size is not None:
        check_param("compare", "train_size", train_size, Interval(int, 2, len(pool)))
        if train_size < len(pool):
            pool, _ = cut(pool, len(pool) - train_size)
    return np.sort(pool), val, test


def load_dataset(
    name: str = "digits",
    *,
    seed: int = 0,
    train_size: int | None = None,
    label_noise: float = 0.0,
    target: str | None = None,
) -> Dataset:
    """Load a data set and draw seed ``seed``'s split.

    Args:
        name: a built-in name (see :data:`BUILTIN_DATASETS`) or a ``.csv``/``.npz`` path.
        seed: selects the split and the noisy labels; the same seed gives the same data.
        train_size: keep only this many training samples (stratified); None keeps all that
            remain after the test (30% of the data) and validation (20%) splits.
        label_noise: fraction of training labels replaced by a different, random class
            (classification only); validation and test labels are never changed.
        target: the target column of a CSV file.

    Returns:
        A :class:`Dataset`.

    Raises:
        ConfigError: for an unknown name, a bad size or fraction, or unusable data
            (:class:`DataError`).

    Example:
        >>> data = load_dataset("digits", seed=0, train_size=300, label_noise=0.3)
    """
    check_param("compare", "label_noise", label_noise, Interval(float, 0, 1, "left"))
    raw = _raw(name, target)
    if raw.task == "regression" and label_noise > 0:
        raise ConfigError(
            f"The 'label_noise' parameter of compare must be 0 for a regression "
            f"data set such as {name!r}. Got {label_noise}."
        )
    tr, va, te = _split(raw, seed, train_size)
    x_mean, x_std = raw.x[tr].mean(0), raw.x[tr].std(0)
    x_std[x_std == 0] = 1.0
    xs = [(raw.x[i] - x_mean) / x_std for i in (tr, va, te)]
    ys = [raw.y[i].copy() for i in (tr, va, te)]
    notes: dict[str, float] = {}
    num_classes = None
    if raw.task == "classification":
        num_classes = int(raw.y.max()) + 1
        if label_noise > 0:
            rng = np.random.default_rng([seed, 7])
            flip = rng.choice(len(tr), size=round(label_noise * len(tr)), replace=False)
            shift = rng.integers(1, num_classes, size=len(flip))
            ys[0][flip] = (ys[0][flip] + shift) % num_classes
            notes["noisy_labels"] = float(len(flip))
        ys = [torch.as_tensor(y, dtype=torch.int64) for y in ys]
    else:
        y_mean, y_std = ys[0].mean(), ys[0].std() or 1.0
        ys = [torch.as_tensor((y - y_mean) / y_std, dtype=torch.float32) for y in ys]
    xt = [torch.as_tensor(x, dtype=torch.float32) for x in xs]
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
    )
