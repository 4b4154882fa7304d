"""The seams of a study: one function per input. A study's data and its model enter only
through :func:`dataset_for` and :func:`model_for`, whatever their kind (a built-in name, a file,
an image folder, a user's data function or ``Dataset`` mapping, a user's model factory); the
engines, reports, ``tune`` and ``path`` receive the same objects and never know which kind it
was. :func:`trial_settings` turns a :class:`StudyConfig` into the plain settings every trial
carries, :func:`fit_options` and :func:`splits_for` into what :func:`reglab.fit` takes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ...core import Chain
from ...devices import check_precision, prepare_deterministic_cublas, resolve_device
from ...tensorboard import summary_writer
from ...train import prepare_targets
from ..engine.device import device_for, stored_device
from ..engine.population import Member
from ..inputs.data import BUILTIN_DATASETS, Dataset, load_dataset
from ..inputs.dataset import TEST_FRACTION, VAL_FRACTION
from ..inputs.models import build_model, model_from_factory
from ..inputs.recipes import build_recipe
from ..inputs.user import in_process, is_reference
from .config import DEFAULT_LABEL_NOISE, DEFAULT_TRAIN_SIZE, StudyConfig
from .keys import TrialSettings

__all__ = [
    "adopt_datasets",
    "board_for",
    "board_line",
    "build",
    "curve_for",
    "dataset_for",
    "datasets_to_hand",
    "fit_options",
    "member_for",
    "model_for",
    "splits_for",
    "start_worker",
    "trial_settings",
]


def trial_settings(
    config: StudyConfig, task: str, out: str | os.PathLike[str] | None = None
) -> TrialSettings:
    """The settings of ``config`` that shape every trial, with defaults made concrete (the
    device resolved: ``'auto'`` becomes what this machine has), in the one form trials carry
    them (:class:`~reglab.lab.studies.keys.TrialSettings`). With ``config.tensorboard`` and
    an output folder ``out``, ``tensorboard`` is the absolute folder of the study's
    TensorBoard runs (``<out>/tensorboard``; see :func:`board_for`)."""
    noise = config.label_noise
    if noise is None:
        builtin = config.data in BUILTIN_DATASETS
        noise = DEFAULT_LABEL_NOISE if task == "classification" and builtin else 0.0
    device = resolve_device(config.device, "compare")
    check_precision(config.precision, device, "compare")
    return TrialSettings(
        {
            "data": config.data,
            "target": config.target,
            "model": config.model,
            "widths": list(config.widths),
            "activation": config.activation,
            "init": config.init,
            "epochs": config.epochs,
            "train_size": config.train_size,
            "val_fraction": config.val_fraction,
            "test_fraction": config.test_fraction,
            "label_noise": noise,
            "lr": config.lr,
            "batch_size": config.batch_size,
            "optimizer": config.optimizer,
            "divergence_threshold": config.divergence_threshold,
            "engine": config.engine,
            "model_args": dict(config.model_args),
            "image_size": None if config.image_size is None else list(config.image_size),
            "num_workers": config.num_workers,
            "device": stored_device(config.device, device),
            "precision": config.precision,
            "deterministic": config.deterministic,
            # a table's columns and gaps: present only when set, so the keys (and folders)
            # of every study that does not use them stay as they were
            **({"features": list(config.features)} if config.features is not None else {}),
            **({"missing": config.missing} if config.missing != "error" else {}),
            **_board_root(config, out),
        }
    )


def _board_root(config: StudyConfig, out: str | os.PathLike[str] | None) -> dict[str, str]:
    if not config.tensorboard or out is None:
        return {}
    summary_writer("compare", "tensorboard")  # the package is there, or one ConfigError
    return {"tensorboard": str((Path(out) / "tensorboard").resolve())}


def board_for(settings: Mapping[str, Any], *run: str) -> dict[str, Any]:
    """The keyword argument of :func:`reglab.fit` (or field of a population
    :class:`~reglab.lab.engine.member.Member`) that writes a trial's epochs as the
    TensorBoard run ``run`` (e.g. ``("l2", "seed-0")``) under the study's folder; none when
    the study writes no TensorBoard runs.

    Examples:
        >>> board_for(settings, "l2", "seed-0")
        {'log_dir': '/home/me/runs/compare/tensorboard/l2/seed-0'}
    """
    root = settings.get("tensorboard")
    if not root:
        return {}
    return {"log_dir": os.path.join(root, *(_run_part(part) for part in run))}


def board_line(out: str | os.PathLike[str], enabled: bool) -> str | None:
    """The console's line on a study's TensorBoard runs (None when it wrote none)."""
    folder = Path(out) / "tensorboard"
    if not enabled or not folder.is_dir():
        return None
    return f"Curves of every trial: tensorboard --logdir {folder}"


def _run_part(name: str) -> str:
    """``name`` as one folder of a run's path: letters, digits and ``-_.=+`` kept."""
    kept = "".join(c if c.isalnum() or c in "-_.=+" else "_" for c in name)
    return kept if kept.strip(".") else kept.replace(".", "_")


@functools.lru_cache(maxsize=16)
def _dataset(
    data: str,
    target: str | None,
    seed: int,
    train_size: int | None,
    label_noise: float,
    image_size: tuple[int, ...] | None,
    fractions: tuple[float, float],
    features: tuple[str, ...] | None = None,
    missing: str = "error",
) -> Dataset:
    options = {"seed": seed, "target": target, "label_noise": label_noise}
    options["image_size"] = image_size
    options["features"], options["missing"] = features, missing
    options["val_fraction"], options["test_fraction"] = fractions
    if train_size is None and data in BUILTIN_DATASETS:  # at most 300, fewer when fewer
        probe = load_dataset(data, **options)
        if probe.size("train") <= DEFAULT_TRAIN_SIZE:
            if probe.size("train") < DEFAULT_TRAIN_SIZE:
                probe.notes["train_size"] = (
                    f"{data} has {probe.size('train')} training samples after the validation "
                    f"and test splits, fewer than the default train size of "
                    f"{DEFAULT_TRAIN_SIZE}: all {probe.size('train')} are used"
                )
            return probe
        train_size = DEFAULT_TRAIN_SIZE
    return load_dataset(data, train_size=train_size, **options)


#: data sets built by the study's own process and handed to this worker (see
#: :func:`datasets_to_hand`), by :func:`_key`
_HANDED: dict[tuple, Dataset] = {}


def _key(settings: Mapping[str, Any], seed: int) -> tuple:
    size = settings.get("image_size")
    return (
        settings["data"],
        settings["target"],
        seed,
        settings["train_size"],
        settings["label_noise"],
        None if size is None else tuple(size),
        (
            settings.get("val_fraction", VAL_FRACTION),
            settings.get("test_fraction", TEST_FRACTION),
        ),
        None if settings.get("features") is None else tuple(settings["features"]),
        settings.get("missing", "error"),
    )


def dataset_for(settings: Mapping[str, Any], seed: int) -> Dataset:
    """The data of one seed under ``settings`` (cached per process): the one seam through
    which every kind of data (built-in, file, image folder, data function, ``Dataset``
    mapping) enters a study."""
    key = _key(settings, seed)
    handed = _HANDED.get(key)
    return _dataset(*key) if handed is None else handed


def datasets_to_hand(settings: Mapping[str, Any], seeds: Sequence[int]) -> dict[tuple, Dataset]:
    """The built-in data sets of ``seeds``, built here once for the study's workers to adopt
    (:func:`adopt_datasets`) instead of building them again: a worker that builds one imports
    scikit-learn first (1.4 s on two cores, before its first epoch); the copies are exact.

    Args:
        settings: the trial settings (:func:`trial_settings`).
        seeds: the seeds whose data the workers will need.

    Returns:
        The data sets by their cache key; empty for other kinds of data (files, image
        folders, a user's function), which each worker reads itself, as before.

    Examples:
        >>> handed = datasets_to_hand(settings, [0, 1, 2])  # then run_jobs(..., prepare=
        >>> # (adopt_datasets, handed)) calls adopt_datasets(handed) in each worker
    """
    if settings["data"] not in BUILTIN_DATASETS:
        return {}
    return {_key(settings, seed): dataset_for(settings, seed) for seed in seeds}


def start_worker(payload: Mapping[str, Any]) -> None:
    """A study's worker, before any CUDA work: cuBLAS's workspace setting for a deterministic
    study (ATen reads ``CUBLAS_WORKSPACE_CONFIG`` once, at the first cuBLAS call, so setting it
    later raises on every deterministic matmul), then the data sets handed over
    (:func:`adopt_datasets`).

    Args:
        payload: ``{"deterministic": bool, "datasets": ...}`` (from :func:`datasets_to_hand`).
    """
    if payload.get("deterministic"):
        prepare_deterministic_cublas()
    adopt_datasets(payload["datasets"])


def adopt_datasets(datasets: Mapping[tuple, Dataset]) -> None:
    """In a worker: :func:`dataset_for` returns ``datasets`` (from :func:`datasets_to_hand`)
    for their seeds from now on, instead of building them.

    Args:
        datasets: data sets by their cache key, as :func:`datasets_to_hand` returns them.
    """
    _HANDED.update(datasets)


def model_for(settings: Mapping[str, Any], data: Dataset, seed: int) -> torch.nn.Module:
    """The initial model of one seed, the same weights for every recipe: the one seam through
    which a built-in model or a user's factory (called as ``function(input_shape,
    num_outputs, **model_args)`` with torch seeded from ``seed``) enters a study."""
    out = data.num_classes if data.task == "classification" else 1
    spec = settings["model"]
    if is_reference(spec) or in_process(spec):
        return model_from_factory(
            spec, data.input_shape, out, seed=seed, model_args=settings.get("model_args") or {}
        )
    model = build_model(
        spec,
        data.n_features,
        out,
        seed=seed,
        widths=settings["widths"],
        activation=settings["activation"],
        init=settings["init"],
        image_shape=data.image_shape,
    )
    if len(data.input_shape) > 1:  # streaming images arrive as (B, C, H, W); built-ins read rows
        model = torch.nn.Sequential(torch.nn.Flatten(), *model)
    return model


def build(
    settings: Mapping[str, Any],
    spec: Sequence[Mapping[str, Any]],
    seed: int,
    data: Dataset | None = None,
) -> tuple[Dataset, torch.nn.Module, Chain]:
    """What one trial trains: the data of ``seed`` (:func:`dataset_for`, or ``data`` when the
    caller holds it), the seed's initial model (:func:`model_for`: the same weights for every
    recipe) and the recipe built from ``spec`` for that data. Trials, tune's trials, path's
    points and the study's pre-flight all build through it.

    Examples:
        >>> data, model, recipe = build(settings, [{"type": "L2", "strength": 1e-3}], seed=0)
    """
    data = dataset_for(settings, seed) if data is None else data
    return data, model_for(settings, data, seed), build_recipe(list(spec), data.image_shape)


def fit_options(settings: Mapping[str, Any], data: Dataset) -> dict[str, Any]:
    """The keyword arguments of :func:`reglab.fit` (and of ``fit_population``) that a study's
    settings and data fix: epochs, optimizer, lr, batch size, task, classes, divergence,
    device and precision."""
    return {
        "epochs": settings["epochs"],
        "optimizer": settings["optimizer"],
        "lr": settings["lr"],
        "batch_size": settings["batch_size"],
        "task": data.task,
        "num_classes": data.num_classes,
        "divergence_threshold": settings["divergence_threshold"],
        "device": device_for(settings),
        "precision": settings.get("precision", "32"),
    }


def splits_for(settings: Mapping[str, Any], data: Dataset, seed: int) -> tuple[Any, Any]:
    """The training and validation data of one seed as :func:`reglab.fit` takes them: tensors,
    or ``DataLoader`` s (training shuffled from ``seed``) for streaming data."""
    pin = device_for(settings).type == "cuda"
    workers = settings.get("num_workers", 0)
    train = data.source(
        "train", batch_size=settings["batch_size"], seed=seed, num_workers=workers, pin_memory=pin
    )
    return train, data.source("val", num_workers=workers, pin_memory=pin)


def member_for(
    data: Dataset, model: torch.nn.Module, recipe: Any, seed: int, log_dir: str | None = None
) -> Member:
    """A population member on ``data``'s training and validation splits (and the training
    sample its learning curves use, for a large split), writing its epochs to ``log_dir``
    (:func:`board_for`) when given."""
    train = (data.x_train, prepare_targets(data.y_train, data.task))
    val = (data.x_val, prepare_targets(data.y_val, data.task))
    sample = data.curve()
    curve = None if sample is None else (sample[0], prepare_targets(sample[1], data.task))
    return Member(model, recipe, train, val, seed, curve, log_dir)


def curve_for(data: Dataset) -> dict[str, Any]:
    """The keyword argument of :func:`reglab.fit` that measures each epoch's train metrics
    on ``data``'s fixed training sample (none for a split small enough to use whole)."""
    sample = data.curve()
    return {} if sample is None else {"train_eval": sample}
