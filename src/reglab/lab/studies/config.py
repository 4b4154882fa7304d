"""The settings of a study: :class:`StudyConfig`, the keys of a study TOML file and the options
of ``reglab compare``."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...core import Choice, ConfigError, Interval, Predicate, check_param
from ..inputs.data import BUILTIN_DATASETS
from ..inputs.tables import MISSING
from ..reports.decisions import CORRECTIONS, Design
from .fields import DEFAULT_LABEL_NOISE, DEFAULT_TRAIN_SIZE, SETTINGS

__all__ = [
    "DEFAULT_EVERY",
    "DEFAULT_LABEL_NOISE",
    "DEFAULT_SEEDS",
    "DEFAULT_TRAIN_SIZE",
    "StudyConfig",
]

#: Seeds of the default study: enough for its large effects to be decided after correction
#: (about 30 s on two cores); 3 seeds gave each paired test 2 degrees of freedom and decided
#: nothing.
DEFAULT_SEEDS = SETTINGS["seeds"].default
#: Seconds between two checkpoints of a running trial, unless ``checkpoint_every`` says otherwise.
DEFAULT_EVERY = SETTINGS["checkpoint_every"].default


def _default(name: str) -> Any:
    """The dataclass default of setting ``name`` (:data:`~.fields.SETTINGS`)."""
    setting = SETTINGS[name]
    factory = setting.factory()
    return setting.default if factory is None else field(default_factory=factory)


@dataclass
class StudyConfig:
    """Everything that defines a study: the fields are the keys of a study TOML file and the
    options of ``reglab compare``. ``None`` means "the default for this data": for the built-in
    data sets ``train_size`` 300 (or all, if fewer) and ``label_noise`` 0.3 for classification
    (0 for regression); for a user's data (a file, a folder, a data function) every training
    sample and no label noise; ``recipes`` the default panel. ``val_fraction`` (0.2) and
    ``test_fraction`` (0.3) of the data are drawn, stratified, per seed for validation and test;
    ``train_size`` then keeps that many of the rest (a user's own ``{'train', 'val', 'test'}``
    split is used as given).

    ``data`` is a built-in name, a ``.csv``, ``.parquet`` or ``.npz`` file, a folder of
    images with one sub-folder per class, or a data function ``'package.module:function'`` /
    ``'path/to/file.py:function'``; a table's ``target`` column is predicted from its
    ``features`` (default: every other column; text columns one-hot encoded), and ``missing``
    (``'error'``, ``'mean'``, ``'median'``) says what its missing values do (see
    :mod:`reglab.lab.inputs.tables`); ``model`` a built-in name or a factory reference called as
    ``function(input_shape, num_outputs, **model_args)``. ``device`` is ``'auto'`` (CUDA when
    available), ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'mps'``; ``precision`` ``'32'`` or
    ``'bf16'``; ``deterministic`` turns on ``torch.use_deterministic_algorithms``;
    ``num_workers`` is the ``DataLoader`` workers of streaming data. ``seeds`` is a number of
    seeds (one look at all of them) or ``"auto"``: seeds in rounds (4, 6, 10, ...) up to
    ``max_seeds``, stopping once every comparison is decided or cannot be within
    ``max_seeds``, or when ``budget`` seconds are spent; ``correction`` is ``"bh"``
    (Benjamini-Hochberg, the default) or ``"holm"`` (see
    :mod:`reglab.lab.reports.decisions`). ``checkpoint_every`` is the
    seconds between two checkpoints of a running trial or population (0: every epoch); it does
    not change any number, so it is not part of a trial's configuration. ``tensorboard``
    writes each trial's epochs as a TensorBoard run under ``<out>/tensorboard/`` (not part of
    a trial's configuration either).

    Raises:
        ConfigError: for any value outside its constraint (checked at construction).

    Examples:
        >>> StudyConfig(data="wine", recipes=["baseline", "l2"], seeds=5)
    """

    data: str = _default("data")
    target: str | None = _default("target")
    features: list[str] | None = _default("features")
    missing: str = _default("missing")
    model: str = _default("model")
    widths: list[int] = _default("widths")
    activation: str = _default("activation")
    init: str = _default("init")
    recipes: Any = _default("recipes")
    seeds: int | str = _default("seeds")
    max_seeds: int = _default("max_seeds")
    budget: float | None = _default("budget")
    correction: str = _default("correction")
    epochs: int = _default("epochs")
    train_size: int | None = _default("train_size")
    val_fraction: float = _default("val_fraction")
    test_fraction: float = _default("test_fraction")
    label_noise: float | None = _default("label_noise")
    lr: float = _default("lr")
    batch_size: int = _default("batch_size")
    optimizer: str = _default("optimizer")
    baseline: str = _default("baseline")
    divergence_threshold: float | None = _default("divergence_threshold")
    workers: int = _default("workers")
    engine: str = _default("engine")
    model_args: dict[str, Any] = _default("model_args")
    image_size: list[int] | None = _default("image_size")
    num_workers: int = _default("num_workers")
    device: str = _default("device")
    precision: str = _default("precision")
    deterministic: bool = _default("deterministic")
    checkpoint_every: float = _default("checkpoint_every")
    tensorboard: bool = _default("tensorboard")

    CONSTRAINTS = {
        "data": Predicate(
            lambda v: isinstance(v, str) and v != "",
            f"one of {', '.join(map(repr, BUILTIN_DATASETS))}, a .csv/.npz path, an image "
            "folder or 'module:function'",
        ),
        "model": Predicate(
            lambda v: isinstance(v, str) and v != "",
            "a built-in model name or 'module:function'",
        ),
        "target": Predicate(lambda v: v is None or isinstance(v, str), "a column name"),
        "features": Predicate(
            lambda v: (
                v is None
                or (
                    isinstance(v, (list, tuple))
                    and len(v) > 0
                    and all(isinstance(c, str) and c for c in v)
                )
            ),
            "a list of column names",
        ),
        "missing": Choice(*MISSING),
        "seeds": Predicate(
            lambda v: (
                v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1000)
            ),
            "an int in [1, 1000] or 'auto'",
        ),
        "max_seeds": Interval(int, 2, 1000),
        "budget": Interval(float, 0, None, "neither", allow_none=True),
        "correction": Choice(*CORRECTIONS),
        "epochs": Interval(int, 1, 100_000),
        "train_size": Interval(int, 2, None, allow_none=True),
        "val_fraction": Interval(float, 0, 1, "neither"),
        "test_fraction": Interval(float, 0, 1, "neither"),
        "label_noise": Interval(float, 0, 1, "left", allow_none=True),
        "lr": Interval(float, 0, None, "neither"),
        "batch_size": Interval(int, 1, None),
        "optimizer": Choice("adam", "adamw", "sgd"),
        "baseline": Predicate(lambda v: isinstance(v, str), "a recipe name"),
        "divergence_threshold": Interval(float, 0, None, "neither", allow_none=True),
        "workers": Interval(int, 1, 256),
        "engine": Choice("population", "sequential"),
        "model_args": Predicate(
            lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
            "a table of keyword arguments",
        ),
        "image_size": Predicate(
            lambda v: (
                v is None
                or (
                    isinstance(v, (list, tuple))
                    and len(v) == 2
                    and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in v)
                )
            ),
            "two ints H,W >= 1",
        ),
        "num_workers": Interval(int, 0, 64),
        "device": Predicate(
            lambda v: (
                isinstance(v, str)
                and (v in ("auto", "cpu", "cuda", "mps") or v.startswith("cuda:"))
            ),
            "one of 'auto', 'cpu', 'cuda', 'cuda:N', 'mps'",
        ),
        "precision": Choice("32", "bf16"),
        "deterministic": Predicate(lambda v: isinstance(v, bool), "a bool"),
        "checkpoint_every": Interval(float, 0, None),
        "tensorboard": Predicate(lambda v: isinstance(v, bool), "a bool"),
    }

    @property
    def design(self) -> Design:
        """How this study's comparisons are decided: its correction and, with ``seeds =
        "auto"``, its looks."""
        return Design(self.correction, self.max_seeds if self.seeds == "auto" else None)

    @property
    def max_trial_seeds(self) -> int:
        """The most seeds this study runs: ``seeds``, or ``max_seeds`` when it is ``"auto"``."""
        return self.max_seeds if self.seeds == "auto" else int(self.seeds)

    def __post_init__(self) -> None:
        if self.precision == 32 and not isinstance(
            self.precision, bool
        ):  # `precision = 32` in TOML
            self.precision = "32"
        for name, constraint in self.CONSTRAINTS.items():
            check_param("compare", name, getattr(self, name), constraint)
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(
                "The 'test_fraction' parameter of compare must leave data to train on: "
                "val_fraction + test_fraction < 1. Got "
                f"{self.val_fraction} + {self.test_fraction}."
            )

    @classmethod
    def from_toml(cls, path: str | Path, owner: str = "compare", **overrides: Any) -> StudyConfig:
        """Read a study file; ``overrides`` (e.g. from the command line) win over it. ``owner``
        is the command named in errors.

        Raises:
            ConfigError: a missing file, a TOML syntax error, an unknown key, a bad value.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"The 'config' parameter of {owner} must be a TOML file. Got "
                f"{str(path)!r}, which is not a file."
            )
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}.") from None
        known = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in known:
                raise ConfigError(
                    f"{path}: unknown key {key!r}; the known keys are {', '.join(known)}."
                )
        return cls(**{**data, **overrides})
