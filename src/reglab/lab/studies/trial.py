"""One trial (a recipe at a seed) or a population of trials: trained, evaluated, and turned into
the JSON-ready result a study writes to ``<out>/trials/``. A trial never raises: a failure is a
result with status ``failed`` and its error's first line."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ...core import ConfigError
from ...devices import deterministic
from ...train import History, evaluate, fit
from ..engine.population import fit_population
from ..inputs.data import Dataset
from ..inputs.user import first_line
from ..reports.calibration import mc_rows, raw_weight_metrics, uncertainty_figures
from ..reports.inspect import model_figures
from .checkpoints import Checkpoints
from .keys import Trial
from .seams import board_for, build, curve_for, fit_options, member_for, splits_for

__all__ = ["Trial", "error_line", "run_name", "run_population", "run_trial", "trial_result"]


def run_trial(trial: Trial, checkpoints: Checkpoints | None = None) -> dict[str, Any]:
    """Train one trial with :func:`reglab.fit` and evaluate its final model; never raises for a
    failed run. With ``checkpoints`` it resumes from its checkpoint and saves one as it trains
    (a requested stop raises :class:`reglab.Interrupted` after saving).

    Returns:
        A JSON-ready dict: ``recipe``, ``seed``, ``key``, ``engine`` (``'sequential'``),
        ``status`` (``completed``, ``stopped_early``, ``diverged`` or ``failed``), ``message``,
        ``epochs_run``, ``seconds``, ``history`` (per-epoch records), ``final`` (split ->
        metrics of the final model, after any restore), ``model`` (sparsity and norms, overall
        and per layer; inputs kept), ``histogram`` and ``features`` (names of the inputs still
        used, or None); see :func:`reglab.lab.reports.inspect.model_figures`. ``final['test']``
        also holds calibration and Monte-Carlo dropout figures and ``calibration`` the
        reliability counts (see :func:`reglab.lab.reports.calibration.uncertainty_figures`;
        the Monte-Carlo passes use a stratified sample of a large test set, ``mc_sample``
        says how many rows of how many: :func:`~reglab.lab.reports.calibration.mc_rows`);
        ``final['test_raw']`` holds the raw weights' test metrics of a recipe with weight averaging.
    """
    settings = trial.settings
    started = time.perf_counter()
    try:
        with deterministic(settings.get("deterministic", False)):
            data, model, recipe = build(settings, json.loads(trial.spec[0]), trial.seed)
            history = fit(
                model,
                *splits_for(settings, data, trial.seed),
                recipe=recipe,
                seed=trial.seed,
                checkpoint=None if checkpoints is None else checkpoints.trial(trial),
                **fit_options(settings, data),
                **curve_for(data),
                **board_for(settings, *run_name(trial)),
            )
        # the figures outside deterministic mode: on CUDA it refuses the weighted bincount of
        # the calibration and the histc of the weight histograms
        result = trial_result(trial, data, history, recipe)
    except Exception as exc:  # the trial fails with its error; the study goes on
        return _failed(trial, error_line(exc), time.perf_counter() - started)
    result["seconds"] = time.perf_counter() - started
    return result


def run_population(
    trials: Sequence[Trial],
    report: Callable[[int], None] | None = None,
    checkpoints: Checkpoints | None = None,
) -> list:
    """Train trials of one study together with :func:`reglab.lab.engine.population.fit_population`
    and evaluate each as :func:`run_trial` does (``engine`` is ``'population'``; ``seconds``
    is the trial's own time: its share of each epoch it trained in, divided among the members
    training then, plus its evaluation). Trials it cannot batch run with :func:`run_trial`.

    Args:
        trials: trials with the same settings.
        report: called with each finished epoch (progress).
        checkpoints: where the population (and any trial run alone) checkpoints and resumes.

    Returns:
        One result dict per trial, in order.
    """
    return _run_population(trials, report, trials[0].settings, checkpoints)


def _run_population(
    trials: Sequence[Trial],
    report: Callable[[int], None] | None,
    settings: dict[str, Any],
    checkpoints: Checkpoints | None,
) -> list:
    results: list[dict[str, Any] | None] = [None] * len(trials)
    members, index, built = [], [], []
    for i, trial in enumerate(trials):
        try:
            data, model, recipe = build(settings, json.loads(trial.spec[0]), trial.seed)
        except ConfigError as exc:
            results[i] = _failed(trial, str(exc), 0.0)
            continue
        if data.streams or not trial.batched:  # decided once, when the study was planned
            results[i] = run_trial(trial, checkpoints)
            continue
        members.append(
            member_for(data, model, recipe, trial.seed, **board_for(settings, *run_name(trial)))
        )
        index.append(i)
        built.append((data, recipe))
    if not members:
        return results
    histories, out_of_memory = None, False
    try:
        with deterministic(settings.get("deterministic", False)):
            histories = fit_population(
                members,
                on_epoch=None if report is None else (lambda epoch, alive: report(epoch)),
                checkpoint=None if checkpoints is None else checkpoints.population(trials),
                **fit_options(settings, built[0][0]),
            )
    except Exception as exc:  # one member's error, or out of memory: handled below
        out_of_memory = isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc)
    if histories is None:  # outside the except: its traceback no longer holds the population
        del members, built  # nor do these (their recipes hold the members' parameters)
        _free_device_memory()
        if out_of_memory and len(index) > 1:  # half the members at a time, then one by one
            half = len(index) // 2
            for part in (index[:half], index[half:]):
                done = _run_population([trials[i] for i in part], report, settings, checkpoints)
                for i, result in zip(part, done, strict=True):
                    results[i] = result
            return results
        for i in index:
            results[i] = run_trial(trials[i], checkpoints)
        return results
    for i, history, (data, recipe) in zip(index, histories, built, strict=True):
        evaluated = time.perf_counter()
        try:  # the figures outside deterministic mode, one trial's error its own
            results[i] = trial_result(trials[i], data, history, recipe, "population")
        except Exception as exc:
            results[i] = _failed(trials[i], error_line(exc), history.seconds)
            continue
        # its own time: its share of each epoch it trained in, and its evaluation
        results[i]["seconds"] = history.seconds + time.perf_counter() - evaluated
    return results


def run_name(trial: Trial) -> tuple[str, str]:
    """A trial's TensorBoard run under the study's folder: ``(recipe, 'seed-N')``."""
    return trial.recipe, f"seed-{trial.seed}"


def _free_device_memory() -> None:
    """Give a failed population's cached GPU memory back before its trials run one by one."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def error_line(exc: BaseException) -> str:
    """One line for a trial's error: a ConfigError's message, else ``Type: first line``."""
    text = first_line(exc)
    if isinstance(exc, ConfigError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _failed(trial: Trial, message: str, seconds: float) -> dict[str, Any]:
    return {
        "recipe": trial.recipe,
        "seed": trial.seed,
        "key": trial.key,
        "engine": trial.settings.get("engine", "sequential"),
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
    splits = ("train", "val", "test", *(("train_clean",) if data.noisy else ()))
    final = {split: evaluate(final_model, data.source(split), data.task) for split in splits}
    if data.noisy and data.relabelled:
        # memorized: the share of the relabelled samples predicted as the wrong label given
        wrong = evaluate(final_model, data.source("train_relabelled"), data.task)
        final["train"]["memorized"] = wrong["accuracy"]
    test = data.source("test")
    n_test = data.size("test")
    epochs = trial.settings.get("epochs") or max(history.epochs_run, 1)  # planned: per seed
    rows = mc_rows(n_test, data.size("train"), data.size("val"), epochs)
    extra, bins = uncertainty_figures(final_model, test, data.task, trial.seed, rows)
    final["test"].update(extra)
    raw = raw_weight_metrics(recipe, final_model, test, data.task)
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
        "dropped": inspected.get("dropped") if finite else None,
        "layers": inspected.get("layers") if finite else None,
        "calibration": bins if finite else None,
        "resumed_from": history.resumed_from,
        # the test rows the Monte-Carlo dropout figures used (a sample of a large test set)
        **({"mc_sample": {"rows": rows, "of": n_test}} if "mc_std" in extra else {}),
    }
