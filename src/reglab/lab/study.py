"""A study: one model trained under several recipes and seeds, trial by trial.

Each trial is an ordinary :func:`reglab.fit` with public objects; the lab adds data, models,
parallel workers, and files. A finished trial is written to ``<out>/trials/`` at once
(temp file, then rename), so an interrupted study loses only the trials still running; a rerun
with the same configuration reuses the finished ones (matched by a hash of their configuration).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
import tomllib
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..core import Choice, ConfigError, Interval, Predicate, check_param
from ..train import evaluate, fit
from .calibration import raw_weight_metrics, uncertainty_figures
from .data import BUILTIN_DATASETS, Dataset, dataset_task, load_dataset
from .inspect import model_figures
from .models import build_model
from .recipes import build_recipe, resolve_recipes
from .store import check_folder, load_finished, write_atomic

__all__ = ["StudyConfig", "Trial", "run_study", "run_trial"]

DEFAULT_TRAIN_SIZE = 300
DEFAULT_LABEL_NOISE = 0.3


def _default_workers() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass
class StudyConfig:
    """Everything that defines a study: the fields are the keys of a study TOML file and the
    options of ``reglab compare``. ``None`` means "the default for this data": ``train_size`` 300
    (or all, if fewer), ``label_noise`` 0.3 for classification and 0 for regression,
    ``recipes`` the default panel.

    Raises:
        ConfigError: for any value outside its constraint (checked at construction).

    Example:
        >>> StudyConfig(data="wine", recipes=["baseline", "l2"], seeds=5)
    """

    data: str = "digits"
    target: str | None = None
    model: str = "mlp"
    widths: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "relu"
    init: str = "he"
    recipes: Any = None
    seeds: int = 3
    epochs: int = 150
    train_size: int | None = None
    label_noise: float | None = None
    lr: float = 1e-3
    batch_size: int = 32
    optimizer: str = "adam"
    baseline: str = "baseline"
    divergence_threshold: float | None = None
    workers: int = field(default_factory=_default_workers)

    CONSTRAINTS = {
        "data": Predicate(
            lambda v: isinstance(v, str) and v != "",
            f"one of {', '.join(map(repr, BUILTIN_DATASETS))} or a .csv/.npz path",
        ),
        "target": Predicate(lambda v: v is None or isinstance(v, str), "a column name"),
        "seeds": Interval(int, 1, 1000),
        "epochs": Interval(int, 1, 100_000),
        "train_size": Interval(int, 2, None, allow_none=True),
        "label_noise": Interval(float, 0, 1, "left", allow_none=True),
        "lr": Interval(float, 0, None, "neither"),
        "batch_size": Interval(int, 1, None),
        "optimizer": Choice("adam", "adamw", "sgd"),
        "baseline": Predicate(lambda v: isinstance(v, str), "a recipe name"),
        "divergence_threshold": Interval(float, 0, None, "neither", allow_none=True),
        "workers": Interval(int, 1, 256),
    }

    def __post_init__(self) -> None:
        for name, constraint in self.CONSTRAINTS.items():
            check_param("compare", name, getattr(self, name), constraint)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> StudyConfig:
        """Read a study file; ``overrides`` (e.g. from the command line) win over it.

        Raises:
            ConfigError: a missing file, a TOML syntax error, an unknown key, a bad value.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"The 'config' parameter of compare must be a TOML file. Got "
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


@dataclass(frozen=True)
class Trial:
    """One recipe at one seed, with everything a worker process needs."""

    recipe: str
    spec: tuple  # JSON text of the regularizer specs, to keep the dataclass hashable
    seed: int
    settings: tuple  # sorted (key, value) pairs of the study settings that shape a trial

    @property
    def key(self) -> str:
        """A hash of the full configuration of this trial (and reglab's version)."""
        payload = json.dumps([self.recipe, self.spec, self.seed, self.settings, __version__])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def filename(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.recipe)
        return f"{safe}__seed{self.seed}.json"


def trial_settings(config: StudyConfig, task: str) -> dict[str, Any]:
    """The settings of ``config`` that shape every trial, with defaults made concrete."""
    noise = config.label_noise
    if noise is None:
        noise = DEFAULT_LABEL_NOISE if task == "classification" else 0.0
    return {
        "data": config.data,
        "target": config.target,
        "model": config.model,
        "widths": list(config.widths),
        "activation": config.activation,
        "init": config.init,
        "epochs": config.epochs,
        "train_size": config.train_size,
        "label_noise": noise,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "optimizer": config.optimizer,
        "divergence_threshold": config.divergence_threshold,
    }


@functools.lru_cache(maxsize=16)
def _dataset(
    data: str, target: str | None, seed: int, train_size: int | None, label_noise: float
) -> Dataset:
    if train_size is None:  # the default: at most 300, fewer when the data has fewer
        probe = load_dataset(data, seed=seed, target=target, label_noise=label_noise)
        if len(probe.y_train) <= DEFAULT_TRAIN_SIZE:
            return probe
        train_size = DEFAULT_TRAIN_SIZE
    return load_dataset(
        data, seed=seed, train_size=train_size, label_noise=label_noise, target=target
    )


def dataset_for(settings: Mapping[str, Any], seed: int) -> Dataset:
    """The data of one seed under ``settings`` (cached per process)."""
    return _dataset(
        settings["data"], settings["target"], seed, settings["train_size"], settings["label_noise"]
    )


def model_for(settings: Mapping[str, Any], data: Dataset, seed: int) -> torch.nn.Module:
    """The initial model of one seed: the same weights for every recipe."""
    out = data.num_classes if data.task == "classification" else 1
    return build_model(
        settings["model"],
        data.n_features,
        out,
        seed=seed,
        widths=settings["widths"],
        activation=settings["activation"],
        init=settings["init"],
        image_shape=data.image_shape,
    )


def run_trial(trial: Trial) -> dict[str, Any]:
    """Train one trial and evaluate its final model; never raises for a failed run.

    Returns:
        A JSON-ready dict: ``recipe``, ``seed``, ``key``, ``status`` (``completed``,
        ``stopped_early``, ``diverged`` or ``failed``), ``message``, ``epochs_run``,
        ``seconds``, ``history`` (per-epoch records), ``final`` (split -> metrics of the final
        model, after any restore), ``model`` (sparsity and norms, overall and per layer; inputs
        kept), ``histogram`` and ``features`` (names of the inputs still used, or None); see
        :func:`reglab.lab.inspect.model_figures`. ``final['test']`` also holds calibration
        and Monte-Carlo dropout figures and ``calibration`` the reliability counts (see
        :func:`reglab.lab.calibration.uncertainty_figures`); ``final['test_raw']`` holds the
        raw weights' test metrics of a recipe with weight averaging.
    """
    settings = {k: json.loads(v) for k, v in trial.settings}
    started = time.perf_counter()
    result: dict[str, Any] = {"recipe": trial.recipe, "seed": trial.seed, "key": trial.key}
    try:
        data = dataset_for(settings, trial.seed)
        model = model_for(settings, data, trial.seed)
        recipe = build_recipe(json.loads(trial.spec[0]), data.image_shape)
        history = fit(
            model,
            (data.x_train, data.y_train),
            (data.x_val, data.y_val),
            recipe=recipe,
            epochs=settings["epochs"],
            optimizer=settings["optimizer"],
            lr=settings["lr"],
            batch_size=settings["batch_size"],
            seed=trial.seed,
            task=data.task,
            num_classes=data.num_classes,
            divergence_threshold=settings["divergence_threshold"],
        )
        final_model = history.model
        final = {
            split: evaluate(final_model, (x, y), data.task)
            for split, x, y in (
                ("train", data.x_train, data.y_train),
                ("val", data.x_val, data.y_val),
                ("test", data.x_test, data.y_test),
            )
        }
        extra, bins = uncertainty_figures(
            final_model, data.x_test, data.y_test, data.task, trial.seed
        )
        final["test"].update(extra)
        raw = raw_weight_metrics(recipe, final_model, data.x_test, data.y_test, data.task)
        if raw is not None:
            final["test_raw"] = raw
        inspected = model_figures(final_model, data)
        finite = all(math.isfinite(v) for m in final.values() for k, v in m.items() if k != "r2")
        result.update(
            status=history.status,
            message=history.message,
            epochs_run=history.epochs_run,
            history=history.epochs,
            final=final if finite else {},
            model=inspected["figures"] if finite else {},
            histogram=inspected["histogram"] if finite else {},
            features=inspected.get("features") if finite else None,
            calibration=bins if finite else None,
        )
    except ConfigError as exc:
        result.update(
            status="failed",
            message=str(exc),
            epochs_run=0,
            history=[],
            final={},
            model={},
            histogram={},
        )
    result["seconds"] = time.perf_counter() - started
    return result


def _init_worker() -> None:
    torch.set_num_threads(1)


@dataclass
class StudyRun:
    """What :func:`run_study` produced."""

    config: StudyConfig
    task: str
    settings: dict[str, Any]
    recipes: dict[str, list]
    results: list[dict[str, Any]]
    reused: int
    out: Path
    n_train: int
    interrupted: bool = False


def plan(config: StudyConfig) -> tuple[str, dict[str, Any], dict[str, list], list[Trial], int]:
    """Check the whole study before any training: data, model, recipes (each attached once to
    a real model, so a bad selection or an unknown monitor fails now, in one line).

    Returns:
        The task, the trial settings, the resolved recipes, the trials in order, and the number
        of training samples of seed 0.
    """
    task = dataset_task(config.data, config.target)
    settings = trial_settings(config, task)
    data = dataset_for(settings, 0)
    recipes = resolve_recipes(config.recipes, task, images=data.image_shape is not None)
    for name, spec in recipes.items():
        model = model_for(settings, data, 0)
        recipe = build_recipe(spec, data.image_shape)
        model = recipe.transform_model(model)
        try:
            recipe.attach(
                model,
                torch.optim.SGD(model.parameters(), lr=config.lr),
                num_classes=data.num_classes,
                generator=torch.Generator(),
            )
            recipe.on_batch(data.x_train[:4], data.y_train[:4])  # shapes, channels, classes
        except ConfigError as exc:
            raise ConfigError(f"Recipe {name!r}: {exc}") from None
        metric = "accuracy" if task == "classification" else "r2"
        fake = {
            "epoch": 0,
            "objective": 0.0,
            "train_loss": 0.0,
            f"train_{metric}": 0.0,
            "val_loss": 0.0,
            f"val_{metric}": 0.0,
            "penalty": 0.0,
            "lr": config.lr,
            **recipe.logs(),
        }
        try:
            recipe.on_epoch_end(fake)
        except ConfigError as exc:
            raise ConfigError(f"Recipe {name!r}: {exc}") from None
    items = tuple(sorted((k, json.dumps(v)) for k, v in settings.items()))
    trials = [
        Trial(name, (json.dumps(spec, sort_keys=True),), seed, items)
        for seed in range(config.seeds)
        for name, spec in recipes.items()
    ]
    return task, settings, recipes, trials, len(data.y_train)


def run_study(
    config: StudyConfig,
    out: str | Path,
    on_trial: Callable[[dict[str, Any], int, int], None] | None = None,
) -> StudyRun:
    """Run (or resume) every trial of ``config``, writing each to ``<out>/trials/``.

    Args:
        config: the study.
        out: output folder (created).
        on_trial: called with each finished trial's result, the number done and the total.

    Returns:
        A :class:`StudyRun` with every result (reused or new) in plan order. On Ctrl-C the
        finished trials are kept and ``interrupted`` is set.
    """
    task, settings, recipes, trials, n_train = plan(config)
    out = Path(out)
    trial_dir = check_folder(out, settings)
    done: dict[str, dict[str, Any]] = {}
    for trial in trials:
        saved = load_finished(trial_dir / trial.filename, trial.key)
        if saved is not None:
            done[trial.key] = saved
    reused = len(done)
    pending = [t for t in trials if t.key not in done]
    total = len(trials)

    def finish(trial: Trial, result: dict[str, Any]) -> None:
        write_atomic(trial_dir / trial.filename, json.dumps(result))
        done[trial.key] = result
        if on_trial is not None:
            on_trial(result, len(done), total)

    interrupted = False
    workers = min(config.workers, len(pending)) if pending else 1
    try:
        if workers <= 1:
            for trial in pending:
                finish(trial, run_trial(trial))
        else:
            ctx = get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
                futures: dict[Future, Trial] = {pool.submit(run_trial, t): t for t in pending}
                try:
                    while futures:
                        finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                        for future in finished:
                            finish(futures.pop(future), future.result())
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    except KeyboardInterrupt:
        interrupted = True
    results = [done[t.key] for t in trials if t.key in done]
    return StudyRun(config, task, settings, recipes, results, reused, out, n_train, interrupted)
