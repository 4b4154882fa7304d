"""A study: one model trained under several recipes and seeds, trial by trial or in
populations.

Each trial is an ordinary :func:`reglab.fit` with public objects; the lab adds data, models,
parallel workers, and files. A finished trial is written to ``<out>/trials/`` at once
(temp file, then rename), so an interrupted study loses only the trials still running; a rerun
with the same configuration reuses the finished ones (matched by a hash of their configuration).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ...core import ConfigError
from ...devices import prepare_deterministic_cublas
from ...train import History
from ..engine.device import CPU_POPULATION, population_size, worker_devices
from ..engine.population import population_reason
from ..engine.runner import run_jobs
from ..inputs.data import Dataset, dataset_task
from ..inputs.recipes import resolve_recipes
from ..inputs.user import in_process
from .checkpoints import Checkpoints
from .config import StudyConfig
from .holds import hold
from .keys import TrialSettings
from .seams import (
    build,
    dataset_for,
    datasets_to_hand,
    model_for,
    start_worker,
    trial_settings,
)
from .store import check_folder, load_finished, write_atomic
from .trial import Trial, error_line, run_population, run_trial

__all__ = ["Plan", "StudyConfig", "StudyRun", "plan", "run_study"]


@dataclass
class StudyRun:
    """What a study produced (:func:`run_study`, and :func:`reglab.lab.compare`, which also
    writes the outputs and fills ``table`` and ``paths``).

    Attributes:
        config: the study's settings; ``settings`` the concrete ones every trial used.
        task: ``'classification'`` or ``'regression'``.
        recipes: recipe name -> its regularizer specs.
        results: one JSON-ready dict per finished trial (see
            :func:`reglab.lab.studies.trial.run_trial`).
        reused: trials taken from an earlier run in the same folder.
        out: the output folder; ``n_train`` the training samples of seed 0.
        interrupted: Ctrl-C ended it; the finished trials are kept.
        sequential: recipes the population engine could not batch, with the reason.
        table: the comparison table as numbers, one dict per recipe (see
            :func:`reglab.lab.reports.results.numeric_rows`; ``summary.csv`` has these columns
            beside its display ones).
        paths: every file written, by name (``report.html``, ``results.csv``, ...).
        resumed: for each trial of this run that resumed from a checkpoint, the epoch it
            resumed from.
        rounds: with ``seeds = "auto"``, the seeds of each round run (the looks).
        answer: the verdict's answer lines (filled with ``table``).
        shared: for a study shared through a database, that database (password masked).
    """

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
    table: list[dict[str, Any]] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    resumed: list[int] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)
    shared: str | None = None

    @property
    def histories(self) -> dict[tuple[str, int], History]:
        """Each trial's :class:`reglab.History` (the type :func:`reglab.fit` returns), by
        ``(recipe, seed)``: its per-epoch records, status, message and seconds (``model`` is
        None: the trained models are not kept)."""
        return {
            (r["recipe"], r["seed"]): History(
                epochs=[dict(e) for e in r.get("history", [])],
                status=r["status"],
                message=r.get("message", ""),
                task=self.task,
                resumed_from=int(r.get("resumed_from") or 0),
                seconds=float(r.get("seconds", 0.0)),
            )
            for r in self.results
        }

    @property
    def report(self) -> Path | None:
        """The HTML report's path, once written."""
        return self.paths.get("report.html")

    def _repr_html_(self) -> str:
        """In a notebook: the answer lines, the headline table and the effect plot."""
        from ..reports.html import notebook_html

        return notebook_html(self)

    def to_pandas(self) -> Any:
        """The comparison table as a ``pandas.DataFrame``, one row per recipe: the recipe's
        name, then a float column for each figure's mean and interval, each Δ with its
        interval, the adjusted p-value and the seeds needed.

        Raises:
            ImportError: pandas is not installed (it is not a dependency of reglab).
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "StudyRun.to_pandas needs pandas (pip install pandas); StudyRun.table holds "
                "the same rows as dicts."
            ) from None
        return pd.DataFrame(self.table)


STREAMING = "its data streams from a Dataset through a DataLoader, which the engine cannot batch"


def _check_model(settings: Mapping[str, Any], data: Dataset, batch: tuple) -> None:
    """The initial model runs on ``batch`` and gives one output per class (or one for
    regression); else a ConfigError that names the model."""
    model = model_for(settings, data, 0)
    x, _ = batch
    expected = data.num_classes if data.task == "classification" else 1
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as exc:
        raise ConfigError(
            f"The model {settings['model']!r} failed on a batch of the data (inputs of shape "
            f"{tuple(x.shape)}): {error_line(exc)}."
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), expected):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        what = f"{expected} classes" if data.task == "classification" else "regression"
        raise ConfigError(
            f"The model {settings['model']!r} must return outputs of shape (batch, {expected}) "
            f"for this data ({what}). Got {got} for a batch of {len(x)}."
        )


class _ParamGroups:
    """What a recipe's hooks read of its optimizer (``param_groups``: one group of every
    parameter at the study's learning rate), for the pre-flight. Building a torch optimizer
    imports ``torch._dynamo`` (1.6 s here), which the study's own process does not otherwise
    need while its workers train."""

    def __init__(self, params: Any, lr: float) -> None:
        self.param_groups = [{"params": list(params), "lr": lr}]


def _try_recipe(
    spec: list, settings: Mapping[str, Any], data: Dataset, batch: tuple, optimizer: Any
) -> str | None:
    """Apply recipe ``spec`` to a fresh model of seed 0, attached to ``optimizer(params, lr)``,
    and run ``batch`` through its hooks, the model and an epoch's end. Returns why the
    population engine cannot batch it, or None."""
    x, y = batch
    _, model, recipe = build(settings, spec, 0, data)
    reason = STREAMING if data.streams else population_reason(model, recipe)
    model = recipe.transform_model(model)
    recipe.attach(
        model,
        optimizer(model.parameters(), lr=settings["lr"]),
        num_classes=data.num_classes,
        generator=torch.Generator(),
    )
    xb, _ = recipe.on_batch(x, y)  # shapes, channels, classes
    with torch.no_grad():
        model.train()(xb)
    metric = "accuracy" if data.task == "classification" else "r2"
    fake = {
        "epoch": 0,
        "objective": 0.0,
        "train_loss": 0.0,
        f"train_{metric}": 0.0,
        "val_loss": 0.0,
        f"val_{metric}": 0.0,
        "penalty": 0.0,
        "lr": settings["lr"],
        **recipe.logs(),
    }
    recipe.on_epoch_end(fake)
    return reason


def _preflight(
    name: str, spec: list, settings: Mapping[str, Any], data: Dataset, batch: tuple
) -> str | None:
    """Apply recipe ``name`` to the model of seed 0 and run ``batch`` through its hooks and the
    model, so a recipe that cannot apply fails now, in one line naming it. Returns why the
    population engine cannot batch it, or None.

    The recipe is tried with :class:`_ParamGroups` for its optimizer; when that fails (a
    regularizer of your own may want a real optimizer), it is tried again, from scratch, with a
    ``torch.optim.SGD``, and that error is the recipe's."""
    try:
        try:
            return _try_recipe(spec, settings, data, batch, _ParamGroups)
        except Exception:
            return _try_recipe(spec, settings, data, batch, torch.optim.SGD)
    except ConfigError as exc:
        raise ConfigError(f"Recipe {name!r}: {exc}") from None
    except Exception as exc:
        raise ConfigError(
            f"Recipe {name!r} cannot apply to this model: {error_line(exc)}"
        ) from None


def plan(config: StudyConfig, out: str | os.PathLike[str] | None = None) -> Plan:
    """Check the whole study before any training: data, model (run on a batch, its output size
    checked), recipes (each applied to a real model and run through one batch, so a recipe that
    cannot apply, a bad selection or an unknown monitor fails now, in one line). Whether each
    recipe can be batched is decided here, once, and carried by its trials.

    ``out`` is the study's output folder: with ``config.tensorboard`` its trials write their
    TensorBoard runs under ``<out>/tensorboard``.

    Returns:
        A :class:`Plan`.
    """
    size = None if config.image_size is None else tuple(config.image_size)
    task = dataset_task(config.data, config.target, size, config.features, config.missing)
    settings = trial_settings(config, task, out)
    data = dataset_for(settings, 0)
    recipes = resolve_recipes(config.recipes, task, images=data.image_shape is not None)
    batch = data.sample(4)  # read once: a streamed image folder decodes it
    _check_model(settings, data, batch)
    sequential: dict[str, str] = {}
    for name, spec in recipes.items():
        reason = _preflight(name, spec, settings, data, batch)
        if reason is not None:
            sequential[name] = reason
    trials = [
        Trial(name, (json.dumps(spec, sort_keys=True),), seed, settings, name not in sequential)
        for seed in range(config.max_trial_seeds)
        for name, spec in recipes.items()
    ]
    return Plan(task, settings, recipes, trials, data.size("train"), sequential)


class Plan(NamedTuple):
    """A study, checked and laid out before any training (:func:`plan`)."""

    #: ``'classification'`` or ``'regression'``
    task: str
    #: the settings that shape every trial (:func:`~reglab.lab.studies.seams.trial_settings`)
    settings: TrialSettings
    #: each recipe's regularizer specs, by name
    recipes: dict[str, list]
    #: every trial, seed by seed
    trials: list[Trial]
    #: the training samples of seed 0
    n_train: int
    #: the recipes the population engine cannot batch, with the reason
    sequential: dict[str, str]


def _jobs(
    config: StudyConfig,
    pending: list[Trial],
    sequential: Mapping[str, str],
    workers: int,
    size: int,
    checkpoints: Checkpoints,
    finished: Mapping[str, Trial] | None = None,
) -> list:
    """The jobs of the pending trials. Populations an earlier run announced in ``checkpoints``
    are formed again with the same members, ``finished`` ones included (so they resume from
    their checkpoints, and a member computes in the same company as before: a population of
    other members rounds otherwise); the other trials are grouped as usual. Announcements that
    no longer fit are removed."""
    one = functools.partial(run_trial, checkpoints=checkpoints)
    if config.engine == "sequential":
        return [(one, t) for t in pending]
    many = functools.partial(run_population, checkpoints=checkpoints)
    batch = [t for t in pending if t.recipe not in sequential]
    by_key = {t.key: t for t in batch}
    chunks: list[list[Trial]] = []
    known = {**(finished or {}), **by_key}
    for keys in checkpoints.populations():
        chunk = [known[k] for k in keys if k in known]
        fits = len(chunk) == len(keys) and len(set(keys)) == len(keys)
        if fits and any(k in by_key for k in keys):
            chunks.append(chunk)
            for k in keys:
                by_key.pop(k, None)
        else:
            checkpoints.forget_population(keys)
    rest = [t for t in batch if t.key in by_key]
    if rest:
        # recipe by recipe, dealt round-robin: each population gets its turn of every recipe's
        # seeds, so what a recipe costs (members that stop early, dropout's masks, augmentation)
        # spreads evenly over the workers; dealt in plan order (seed-major) instead, an even
        # number of recipes put every seed of a recipe in the same population
        first = {name: i for i, name in enumerate(dict.fromkeys(t.recipe for t in rest))}
        rest.sort(key=lambda t: first[t.recipe])  # stable: each recipe's seeds stay in order
        count = math.ceil(len(rest) / min(size, max(1, math.ceil(len(rest) / workers))))
        chunks += [rest[i::count] for i in range(count)]
    for chunk in chunks:
        checkpoints.announce(chunk)
    return [(many, c) for c in chunks] + [(one, t) for t in pending if t.recipe in sequential]


def workers_for(config: StudyConfig, settings: Mapping[str, Any]) -> tuple[int, list | None]:
    """How many worker processes a study runs and, on GPUs, each one's device: one per GPU;
    one (this process) when its model or data is a Python object only this process holds;
    else ``config.workers``."""
    if in_process(settings["data"], settings["model"]):
        return 1, None
    devices = worker_devices(settings)
    if devices is not None:
        return len(devices), devices
    return config.workers, None


def run_study(
    config: StudyConfig,
    out: str | Path,
    on_trial: Callable[[dict[str, Any], int, int], None] | None = None,
    on_epoch: Callable[[float, int], None] | None = None,
    only: Collection[str] | None = None,
    overwrite: bool = False,
) -> StudyRun:
    """Run (or resume) every trial of ``config``, writing each to ``<out>/trials/``.

    With ``engine='population'`` the trials that can be batched train in populations of at
    most :data:`~reglab.lab.engine.device.CPU_POPULATION` on a CPU, or as many as fit in a GPU's
    memory (one population per worker where possible); the others run one by one, and
    ``StudyRun.sequential`` says why. On GPUs the study runs one worker per device.

    Args:
        config: the study.
        out: output folder (created).
        on_trial: called with each finished trial's result, the number done and the total.
        on_epoch: called as populations train, with the number of trials done (counting the
            running ones' fraction of epochs, for a progress bar) and the total.
        only: train only these recipes' pending trials (a round of ``seeds = "auto"``); the
            finished trials of the others are still read and returned.
        overwrite: when ``out`` holds a study run with other settings, move it aside to
            ``<out>.<time>`` and start afresh (without it, a ConfigError names the
            differences).

    Returns:
        A :class:`StudyRun` with every result (reused or new) in plan order. Running trials and
        populations checkpoint to ``<out>/checkpoints/`` every ``config.checkpoint_every``
        seconds, and a rerun resumes them. On Ctrl-C every running trial saves at its next
        epoch end, the finished trials are kept, and ``interrupted`` is set.
    """
    task, settings, recipes, trials, n_train, sequential = plan(config, out)
    out = Path(out)
    trial_dir = check_folder(out, settings, overwrite)
    done = _finished(trials, trial_dir)
    reused = len(done)
    pending = [t for t in trials if t.key not in done and (only is None or t.recipe in only)]
    workers, devices = workers_for(config, settings)
    size = CPU_POPULATION
    if devices is not None and pending:
        data = dataset_for(settings, 0)
        total = len(done) + len(pending)
        evaluated = data.size("train") + data.size("val")
        model = model_for(settings, data, 0)
        size = population_size(settings, model, data.sample(1)[0], total, evaluated)
    checkpoints = Checkpoints(str(out / "checkpoints"), config.checkpoint_every)
    hold("before_announce", out)
    finished = {t.key: t for t in trials if t.key in done}
    jobs = _jobs(config, pending, sequential, workers, size, checkpoints, finished)
    hold("after_announce", out)
    ledger = _Ledger(out, trial_dir, checkpoints, jobs, pending, done, config.epochs)
    ledger.on_trial, ledger.on_epoch = on_trial, on_epoch
    finish, progress, resumed = ledger.finish, ledger.progress, ledger.resumed
    interrupted = False
    try:
        handed = datasets_to_hand(settings, sorted({t.seed for t in pending}))
        count = min(workers, len(jobs)) if jobs else 1
        payload = {"deterministic": config.deterministic, "datasets": handed}
        if config.deterministic:  # in this process too (workers=1), before its CUDA work
            prepare_deterministic_cublas()
        run_jobs(jobs, count, finish, progress, devices, prepare=(start_worker, payload))
    except KeyboardInterrupt:
        interrupted = True
    if not interrupted:
        checkpoints.clean()
    results = [done[t.key] for t in trials if t.key in done]
    used = {k: v for k, v in sequential.items() if config.engine == "population"}
    return StudyRun(
        config,
        task,
        settings,
        recipes,
        results,
        reused,
        out,
        n_train,
        interrupted,
        used,
        resumed=resumed,
    )


def _finished(trials: Sequence[Trial], trial_dir: Path) -> dict[str, dict[str, Any]]:
    """The results already in ``trial_dir`` of ``trials`` (by key): a rerun reuses them."""
    done: dict[str, dict[str, Any]] = {}
    for trial in trials:
        saved = load_finished(trial_dir / trial.filename, trial.key)
        if saved is not None:
            done[trial.key] = saved
    return done


class _Ledger:
    """A running study's bookkeeping: each finished trial written to ``trials/`` (once), its
    checkpoints forgotten, the progress counted (the running populations' fraction of epochs
    included)."""

    def __init__(
        self,
        out: Path,
        trial_dir: Path,
        checkpoints: Checkpoints,
        jobs: list,
        pending: list[Trial],
        done: dict[str, dict[str, Any]],
        epochs: int,
    ) -> None:
        self.out, self.trial_dir, self.checkpoints, self.jobs = out, trial_dir, checkpoints, jobs
        self.done, self.reused, self.epochs = done, len(done), epochs
        self.by_key = {t.key: t for t in pending}
        self.total = len(done) + len(pending)
        self.populations = {
            t.key: payload for _, payload in jobs if isinstance(payload, list) for t in payload
        }
        self.epochs_of: dict[int, int] = {}
        self.resumed: list[int] = []
        self.on_trial: Callable[[dict[str, Any], int, int], None] | None = None
        self.on_epoch: Callable[[float, int], None] | None = None

    def finish(self, result: dict[str, Any]) -> None:
        """A trial's result: written atomically, then its checkpoints are no longer needed."""
        done = self.done
        if result["key"] not in self.by_key or result["key"] in done:
            return  # a finished member of a population formed again: its file is kept
        trial = self.by_key[result["key"]]
        write_atomic(self.trial_dir / trial.filename, json.dumps(result))
        done[result["key"]] = result
        if len(done) == self.reused + 1:
            hold("trial_written", self.out)
        if result.get("resumed_from"):
            self.resumed.append(result["resumed_from"])
        self.checkpoints.forget_trial(trial)
        members = self.populations.get(trial.key)
        if members is not None and all(t.key in done for t in members):
            self.checkpoints.forget_population([t.key for t in members])
        if self.on_trial is not None:
            self.on_trial(result, len(done), self.total)

    def progress(self, number: int, epoch: int) -> None:
        """Population ``number`` finished ``epoch``."""
        self.epochs_of[number] = epoch
        if self.on_epoch is None:
            return
        done, jobs = self.done, self.jobs
        running = sum(
            sum(t.key not in done for t in jobs[n][1]) * e / self.epochs
            for n, e in self.epochs_of.items()
            if not all(t.key in done for t in jobs[n][1])
        )
        self.on_epoch(len(done) + running, self.total)
