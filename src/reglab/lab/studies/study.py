"""A study: one model trained under several recipes and seeds, trial by trial.

Each trial is an ordinary :func:`reglab.fit` with public objects; the lab adds data, models,
parallel workers, and files. A finished trial is written to ``<out>/trials/`` at once
(temp file, then rename), so an interrupted study loses only the trials still running; a rerun
with the same configuration reuses the finished ones (matched by a hash of their configuration).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ... import __version__
from ...core import ConfigError
from ...train import History, _prepare_targets, evaluate, fit
from ..engine.population import Member, fit_population, population_reason
from ..engine.runner import run_jobs
from ..inputs.data import Dataset, dataset_task, load_dataset
from ..inputs.models import build_model
from ..inputs.recipes import build_recipe, resolve_recipes
from ..reports.calibration import raw_weight_metrics, uncertainty_figures
from ..reports.inspect import model_figures
from .config import DEFAULT_LABEL_NOISE, DEFAULT_TRAIN_SIZE, StudyConfig
from .store import check_folder, load_finished, write_atomic

__all__ = ["StudyConfig", "Trial", "run_population", "run_study", "run_trial"]


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
        "engine": config.engine,
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


def fit_options(settings: Mapping[str, Any], data: Dataset) -> dict[str, Any]:
    """The keyword arguments of :func:`reglab.fit` (and of ``fit_population``) that a study's
    settings and data fix: epochs, optimizer, lr, batch size, task, classes, divergence."""
    return {
        "epochs": settings["epochs"],
        "optimizer": settings["optimizer"],
        "lr": settings["lr"],
        "batch_size": settings["batch_size"],
        "task": data.task,
        "num_classes": data.num_classes,
        "divergence_threshold": settings["divergence_threshold"],
    }


def member_for(data: Dataset, model: torch.nn.Module, recipe: Any, seed: int) -> Member:
    """A population member on ``data``'s training and validation splits."""
    train = (data.x_train, _prepare_targets(data.y_train, data.task))
    return Member(model, recipe, train, (data.x_val, _prepare_targets(data.y_val, data.task)), seed)


def run_trial(trial: Trial) -> dict[str, Any]:
    """Train one trial with :func:`reglab.fit` and evaluate its final model; never raises for a
    failed run.

    Returns:
        A JSON-ready dict: ``recipe``, ``seed``, ``key``, ``engine`` (``'sequential'``),
        ``status`` (``completed``, ``stopped_early``, ``diverged`` or ``failed``), ``message``,
        ``epochs_run``, ``seconds``, ``history`` (per-epoch records), ``final`` (split ->
        metrics of the final model, after any restore), ``model`` (sparsity and norms, overall
        and per layer; inputs kept), ``histogram`` and ``features`` (names of the inputs still
        used, or None); see :func:`reglab.lab.reports.inspect.model_figures`. ``final['test']``
        also holds calibration and Monte-Carlo dropout figures and ``calibration`` the
        reliability counts (see :func:`reglab.lab.reports.calibration.uncertainty_figures`);
        ``final['test_raw']`` holds the raw weights' test metrics of a recipe with weight averaging.
    """
    settings = _settings(trial)
    started = time.perf_counter()
    try:
        data = dataset_for(settings, trial.seed)
        model = model_for(settings, data, trial.seed)
        recipe = build_recipe(json.loads(trial.spec[0]), data.image_shape)
        history = fit(
            model,
            (data.x_train, data.y_train),
            (data.x_val, data.y_val),
            recipe=recipe,
            seed=trial.seed,
            **fit_options(settings, data),
        )
    except Exception as exc:  # the trial fails with its error; the study goes on
        return _failed(trial, error_line(exc), time.perf_counter() - started)
    result = trial_result(trial, data, history, recipe)
    result["seconds"] = time.perf_counter() - started
    return result


def run_population(trials: Sequence[Trial], report: Callable[[int], None] | None = None) -> list:
    """Train trials of one study together with :func:`reglab.lab.engine.population.fit_population`
    and evaluate each as :func:`run_trial` does (``engine`` is ``'population'``; ``seconds``
    is the population's time shared equally). Trials it cannot batch run with :func:`run_trial`.

    Args:
        trials: trials with the same settings.
        report: called with each finished epoch (progress).

    Returns:
        One result dict per trial, in order.
    """
    started = time.perf_counter()
    settings = _settings(trials[0])
    results: list[dict[str, Any] | None] = [None] * len(trials)
    members, index, built = [], [], []
    for i, trial in enumerate(trials):
        try:
            data = dataset_for(settings, trial.seed)
            recipe = build_recipe(json.loads(trial.spec[0]), data.image_shape)
            model = model_for(settings, data, trial.seed)
        except ConfigError as exc:
            results[i] = _failed(trial, str(exc), 0.0)
            continue
        if population_reason(model, recipe) is not None:
            results[i] = run_trial(trial)
            continue
        members.append(member_for(data, model, recipe, trial.seed))
        index.append(i)
        built.append((data, recipe))
    if members:
        try:
            histories = fit_population(
                members,
                on_epoch=None if report is None else (lambda epoch, alive: report(epoch)),
                **fit_options(settings, built[0][0]),
            )
        except Exception:  # one member's error: each trial alone, so only that one fails
            for i in index:
                results[i] = run_trial(trials[i])
            return results
        share = (time.perf_counter() - started) / len(members)
        for i, history, (data, recipe) in zip(index, histories, built, strict=True):
            results[i] = trial_result(trials[i], data, history, recipe, "population")
            results[i]["seconds"] = share
    return results


def error_line(exc: BaseException) -> str:
    """One line for a trial's error: a ConfigError's message, else ``Type: first line``."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, ConfigError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _settings(trial: Trial) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in trial.settings}


def _failed(trial: Trial, message: str, seconds: float) -> dict[str, Any]:
    return {
        "recipe": trial.recipe,
        "seed": trial.seed,
        "key": trial.key,
        "engine": _settings(trial).get("engine", "sequential"),
        "status": "failed",
        "message": message,
        "epochs_run": 0,
        "history": [],
        "final": {},
        "model": {},
        "histogram": {},
        "seconds": seconds,
    }


def trial_result(
    trial: Trial, data: Dataset, history: History, recipe: Any, engine: str = "sequential"
) -> dict[str, Any]:
    """The result dict of :func:`run_trial` (without ``seconds``) for a finished training."""
    final_model = history.model
    final = {
        split: evaluate(final_model, (x, y), data.task)
        for split, x, y in (
            ("train", data.x_train, data.y_train),
            ("val", data.x_val, data.y_val),
            ("test", data.x_test, data.y_test),
        )
    }
    extra, bins = uncertainty_figures(final_model, data.x_test, data.y_test, data.task, trial.seed)
    final["test"].update(extra)
    raw = raw_weight_metrics(recipe, final_model, data.x_test, data.y_test, data.task)
    if raw is not None:
        final["test_raw"] = raw
    inspected = model_figures(final_model, data)
    finite = all(math.isfinite(v) for m in final.values() for k, v in m.items() if k != "r2")
    return {
        "recipe": trial.recipe,
        "seed": trial.seed,
        "key": trial.key,
        "engine": engine,
        "status": history.status,
        "message": history.message,
        "epochs_run": history.epochs_run,
        "history": history.epochs,
        "final": final if finite else {},
        "model": inspected["figures"] if finite else {},
        "histogram": inspected["histogram"] if finite else {},
        "features": inspected.get("features") if finite else None,
        "calibration": bins if finite else None,
    }


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
    sequential: dict[str, str] = field(default_factory=dict)
    requeued: int = 0


def plan(
    config: StudyConfig,
) -> tuple[str, dict[str, Any], dict[str, list], list[Trial], int, dict[str, str]]:
    """Check the whole study before any training: data, model, recipes (each attached once to
    a real model, so a bad selection or an unknown monitor fails now, in one line).

    Returns:
        The task, the trial settings, the resolved recipes, the trials in order, and the number
        of training samples of seed 0, and the recipes the population engine cannot batch,
        with the reason.
    """
    task = dataset_task(config.data, config.target)
    settings = trial_settings(config, task)
    data = dataset_for(settings, 0)
    recipes = resolve_recipes(config.recipes, task, images=data.image_shape is not None)
    sequential: dict[str, str] = {}
    for name, spec in recipes.items():
        model = model_for(settings, data, 0)
        recipe = build_recipe(spec, data.image_shape)
        reason = population_reason(model, recipe)
        if reason is not None:
            sequential[name] = reason
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
    return task, settings, recipes, trials, len(data.y_train), sequential


#: The most trials one population holds (a member's working set, ~1.4 MB for the default MLP
#: with its Adam state, should stay in cache: measured on 2 cores, 15 members per population
#: train 1.8x faster per member than one at a time, 30 are slower than 15).
POPULATION_SIZE = 16


def _jobs(config: StudyConfig, pending: list[Trial], sequential: Mapping[str, str]) -> list:
    if config.engine == "sequential":
        return [(run_trial, t) for t in pending]
    batch = [t for t in pending if t.recipe not in sequential]
    size = min(POPULATION_SIZE, max(1, math.ceil(len(batch) / config.workers)))
    chunks = [batch[i : i + size] for i in range(0, len(batch), size)]
    return [(run_population, c) for c in chunks] + [
        (run_trial, t) for t in pending if t.recipe in sequential
    ]


def run_study(
    config: StudyConfig,
    out: str | Path,
    on_trial: Callable[[dict[str, Any], int, int], None] | None = None,
    on_epoch: Callable[[float, int], None] | None = None,
) -> StudyRun:
    """Run (or resume) every trial of ``config``, writing each to ``<out>/trials/``.

    With ``engine='population'`` the trials that can be batched train in populations of at
    most :data:`POPULATION_SIZE` (one per worker where possible); the others run one by one,
    and ``StudyRun.sequential`` says why.

    Args:
        config: the study.
        out: output folder (created).
        on_trial: called with each finished trial's result, the number done and the total.
        on_epoch: called as populations train, with the number of trials done (counting the
            running ones' fraction of epochs, for a progress bar) and the total.

    Returns:
        A :class:`StudyRun` with every result (reused or new) in plan order. On Ctrl-C the
        finished trials are kept and ``interrupted`` is set.
    """
    task, settings, recipes, trials, n_train, sequential = plan(config)
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
    by_key = {t.key: t for t in pending}
    jobs = _jobs(config, pending, sequential)
    epochs_of: dict[int, int] = {}

    def finish(result: dict[str, Any]) -> None:
        write_atomic(trial_dir / by_key[result["key"]].filename, json.dumps(result))
        done[result["key"]] = result
        if on_trial is not None:
            on_trial(result, len(done), total)

    def progress(number: int, epoch: int) -> None:
        epochs_of[number] = epoch
        if on_epoch is not None:
            running = sum(
                len(jobs[n][1]) * e / config.epochs
                for n, e in epochs_of.items()
                if not all(t.key in done for t in jobs[n][1])
            )
            on_epoch(len(done) + running, total)

    interrupted = False
    try:
        run_jobs(jobs, min(config.workers, len(jobs)) if jobs else 1, finish, progress)
    except KeyboardInterrupt:
        interrupted = True
    results = [done[t.key] for t in trials if t.key in done]
    used = {k: v for k, v in sequential.items() if config.engine == "population"}
    return StudyRun(
        config, task, settings, recipes, results, reused, out, n_train, interrupted, used
    )
