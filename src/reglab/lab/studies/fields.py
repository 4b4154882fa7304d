"""Every setting of a study, once: its default and its help text. :class:`StudyConfig` takes
its defaults from here and the ``reglab`` command builds its options from here, so a default
lives in one place. Nothing heavy is imported (the command reads this before PyTorch loads).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COMPARE_ONLY",
    "DEFAULT_LABEL_NOISE",
    "DEFAULT_TRAIN_SIZE",
    "PATH_SETTINGS",
    "SETTINGS",
    "STORAGE_SETTINGS",
    "TUNE_SETTINGS",
    "Setting",
    "default_workers",
]

#: Training samples of a built-in data set when ``train_size`` is None (all, if fewer).
DEFAULT_TRAIN_SIZE = 300
#: Label noise of a built-in classification data set when ``label_noise`` is None.
DEFAULT_LABEL_NOISE = 0.3


def default_workers() -> int:
    """One worker process per core."""
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Setting:
    """One setting of a study.

    Attributes:
        default: the value when none is given; a callable (no arguments) for a value computed
            when a study is made, a list or dict for a fresh copy each time.
        help: the command-line help; ``{default}`` stands for the default.
        kind: how the command line reads it: ``int``, ``float``, ``str`` (also lists and
            tables written as text, parsed by the command) or ``bool`` (a flag).
        option: whether the command line has an option for it (``--name-with-dashes``).
    """

    default: Any
    help: str = ""
    kind: type = str
    option: bool = True

    def value(self) -> Any:
        """A fresh default value."""
        if callable(self.default):
            return self.default()
        if isinstance(self.default, (list, dict)):
            return type(self.default)(self.default)
        return self.default

    def factory(self) -> Callable[[], Any] | None:
        """What a dataclass field needs for a default that must not be shared, else None."""
        return (
            self.value if callable(self.default) or isinstance(self.default, (list, dict)) else None
        )

    def help_text(self) -> str:
        shown = self.default() if callable(self.default) else self.default
        return self.help.format(default=shown)


#: The settings of a study in the order of a study file and of ``reglab compare --help``.
SETTINGS: dict[str, Setting] = {
    "data": Setting(
        "digits",
        "{default} (default), breast_cancer, wine, diabetes, sparse_regression, polynomial, a "
        ".csv/.parquet/.npz file, a folder of images (one sub-folder per class), or a data "
        "function package.module:function / file.py:function returning (X, y) or "
        "{{'train', 'val'[, 'test']}} Datasets.",
    ),
    "target": Setting(None, "Target column of a CSV or Parquet table."),
    "features": Setting(
        None,
        "Columns of a CSV or Parquet table to use as inputs, comma-separated (default: every "
        "column but the target). Text columns are one-hot encoded.",
    ),
    "missing": Setting(
        "error",
        "Missing values in a table: {default} (default: refuse, naming each column and its "
        "count), mean or median (fill each column's gaps with that statistic of the seed's "
        "training split; a missing category becomes zeros).",
    ),
    "model": Setting(
        "mlp",
        "{default} (default), resmlp (residual blocks), cnn (image data), linear, or your "
        "factory package.module:function / file.py:function, called as "
        "function(input_shape, num_outputs, **model_args).",
    ),
    "widths": Setting([256, 256], "Hidden widths of the MLP (default 256,256)."),
    "activation": Setting(
        "relu", "{default} (default), gelu, tanh, silu, elu, leaky_relu or selu."
    ),
    "init": Setting("he", option=False),
    "recipes": Setting(None, "Comma-separated recipe names (see `reglab recipes`)."),
    "seeds": Setting(
        6,
        "Number of seeds (default {default}), or auto: seeds in rounds until every comparison "
        "is decided (see --max-seeds, --budget).",
    ),
    "max_seeds": Setting(10, "The most seeds --seeds auto runs (default {default}).", int),
    "budget": Setting(None, "With --seeds auto: start no round past this many seconds.", float),
    "correction": Setting(
        "bh",
        "{default} (default: Benjamini-Hochberg, false discovery rate) or holm (family-wise "
        "error).",
    ),
    "epochs": Setting(150, "Epochs per trial (default {default}).", int),
    "train_size": Setting(
        None,
        f"Training samples (default: {DEFAULT_TRAIN_SIZE} of a built-in data set, or all if "
        "fewer; every sample of your own data).",
        int,
    ),
    "val_fraction": Setting(
        0.2,
        "Share of the data drawn per seed for validation (default {default}; not for your "
        "own {{'train', 'val', 'test'}} split).",
        float,
    ),
    "test_fraction": Setting(
        0.3,
        "Share of the data drawn per seed for test (default {default}); the rest is for "
        "training (then --train-size of it).",
        float,
    ),
    "label_noise": Setting(
        None,
        f"Fraction of training labels made wrong (default {DEFAULT_LABEL_NOISE} for built-in "
        "classification data, 0 for your own).",
        float,
    ),
    "lr": Setting(1e-3, "Learning rate (default {default}).", float),
    "batch_size": Setting(32, "Batch size (default {default}).", int),
    "optimizer": Setting(
        "adam",
        "{default} (default), adamw or sgd; never with weight decay of its own: that is a recipe.",
    ),
    "baseline": Setting("baseline", option=False),
    "divergence_threshold": Setting(
        None, "Stop a trial as diverged when its mean training loss exceeds this.", float
    ),
    "workers": Setting(default_workers, "Parallel worker processes (default: one per core).", int),
    "engine": Setting(
        "population",
        "{default} (default: trials trained together as one batched model) or sequential "
        "(one reglab.fit per trial).",
    ),
    "model_args": Setting(
        {},
        "Keyword arguments of a model factory: key=value,key=value or a JSON object "
        "(e.g. '{{\"width\": 32}}').",
    ),
    "image_size": Setting(None, "H,W that the images of a folder are resized to."),
    "num_workers": Setting(0, "DataLoader workers for streaming data (default {default}).", int),
    "device": Setting(
        "auto",
        "{default} (default: CUDA when available), cpu, cuda (one worker per GPU), cuda:N or mps.",
    ),
    "precision": Setting("32", "{default} (default) or bf16 (autocast; parameters stay float32)."),
    "deterministic": Setting(
        False,
        "torch.use_deterministic_algorithms(True) (see the README on what is bitwise).",
        bool,
    ),
    "checkpoint_every": Setting(
        5.0,
        "Seconds between two checkpoints of a running trial (default {default:g}; 0: every "
        "epoch); a rerun resumes from them.",
        float,
    ),
    "tensorboard": Setting(
        False,
        "Write each trial's epochs as a TensorBoard run under OUT/tensorboard/ (recipe/seed-N; "
        "needs reglab[tensorboard]): tensorboard --logdir OUT/tensorboard.",
        bool,
    ),
}

#: The settings only ``reglab compare`` has options for (``tune`` and ``path`` run one recipe
#: and choose their own seeds and engine).
COMPARE_ONLY = ("recipes", "seeds", "max_seeds", "budget", "correction", "engine")

#: ``reglab tune``'s own settings (:class:`~reglab.lab.studies.tune.TuneConfig`).
TUNE_SETTINGS: dict[str, Setting] = {
    "trials": Setting(20, "Trials this run adds (default {default}).", int),
    "seed": Setting(0, "Seed of every trial (default {default}).", int),
    "engine": Setting(
        "population",
        "{default} (default: each worker trains 4 trials at once) or sequential.",
    ),
}

#: The settings of a study shared through a database (``compare`` and ``tune`` with
#: ``--storage``).
STORAGE_SETTINGS: dict[str, Setting] = {
    "storage_retry": Setting(
        60.0,
        "Seconds to wait out an outage of the --storage database (default {default:g}); "
        "training goes on meanwhile. Past it the command stops with exit 2, keeping every "
        "result: rerun it to resume.",
        float,
    ),
}

#: ``reglab path``'s own settings (:class:`~reglab.lab.studies.path.PathConfig`).
PATH_SETTINGS: dict[str, Setting] = {
    "points": Setting(8, "Strengths on the grid (default {default}).", int),
    "seeds": Setting(3, "Chains, one per seed (default {default}).", int),
}
