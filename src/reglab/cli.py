"""The ``reglab`` command. Bad input ends in one line on stderr and exit code 2."""

from __future__ import annotations

import atexit
import gc
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import ConfigError, StorageUnavailable, one_line_warnings
from .lab.studies.fields import (
    COMPARE_ONLY,
    PATH_SETTINGS,
    SETTINGS,
    STORAGE_SETTINGS,
    TUNE_SETTINGS,
    Setting,
)

EXIT_USAGE = 2
INTERRUPTED = "interrupted: rerun the same command to resume"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reglab")
def cli() -> None:
    """reglab: regularization for PyTorch that you can see working."""


def _option(
    name: str, table: Mapping[str, Setting] = SETTINGS
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The command-line option of setting ``name``, from its one definition in ``table``
    (:mod:`reglab.lab.studies.fields`): ``--name-with-dashes``, its type and help. An option
    left out is None: the setting then has its default (or a ``--config`` file's value)."""
    setting = table[name]
    flag = f"--{name.replace('_', '-')}"
    if setting.kind is bool:
        return click.option(flag, is_flag=True, default=None, help=setting.help_text())
    kind = setting.kind if setting.kind in (int, float) else None
    return click.option(flag, type=kind, help=setting.help_text())


#: The options that define a study's data, model and training, shared by the commands.
_STUDY_OPTIONS = [
    _option(name)
    for name, setting in SETTINGS.items()
    if setting.option and name not in COMPARE_ONLY
]


_CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    help="A study TOML file: its settings and its [recipes]; options given win.",
)
_RECIPE_OPTION = click.option(
    "--recipe",
    required=True,
    help="The recipe: built-in (see `reglab recipes`) or defined in --config.",
)


def _study_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that define a study's data, model and training, shared by the commands."""
    for option in reversed(_STUDY_OPTIONS):
        command = option(command)
    return command


def _study(config_path: str | None, given: dict[str, Any], owner: str) -> Any:
    """The study of a command: the ``--config`` file with the options given winning over it,
    or the options alone."""
    from .lab.studies.config import StudyConfig

    if config_path is None:
        return StudyConfig(**given)
    return StudyConfig.from_toml(config_path, owner=owner, **given)


def _study_values(options: dict[str, Any]) -> dict[str, Any]:
    """The options given, with ``--widths``, ``--features``, ``--image-size`` and
    ``--model-args`` parsed."""
    given = _given(**options)
    if isinstance(given.get("seeds"), str) and given["seeds"].strip().isdigit():
        given["seeds"] = int(given["seeds"])
    if "model_args" in given:
        given["model_args"] = _keywords(given["model_args"])
    if "image_size" in given:
        try:
            given["image_size"] = [int(v) for v in given["image_size"].split(",")]
        except ValueError:
            raise ConfigError(
                "The 'image_size' parameter of compare must be two ints H,W, e.g. 32,32. "
                f"Got {options['image_size']!r}."
            ) from None
    if "features" in given:
        given["features"] = [c.strip() for c in given["features"].split(",") if c.strip()]
    if "widths" in given:
        try:
            given["widths"] = [int(w) for w in given["widths"].split(",") if w.strip()]
        except ValueError:
            raise ConfigError(
                "The 'widths' parameter of compare must be comma-separated ints, "
                f"e.g. 256,256. Got {options['widths']!r}."
            ) from None
    return given


def _keywords(text: str) -> dict[str, Any]:
    """``key=value,key=value`` (values read as TOML: numbers, booleans, quoted strings, else
    the text) or a JSON object."""
    import json
    import tomllib

    problem = (
        "The 'model_args' parameter of compare must be key=value pairs separated by commas or "
        f"a JSON object. Got {text!r}."
    )
    if text.strip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError(problem) from None
        if not isinstance(value, dict):
            raise ConfigError(problem)
        return value
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, raw = part.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(problem)
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw.strip()
    return out


@cli.command(short_help="Train a model under recipes and seeds; report what each one does.")
@_study_options
@_option("recipes")
@_option("seeds")
@_option("max_seeds")
@_option("budget")
@_option("correction")
@_option("engine")
@click.option(
    "--storage",
    help="An Optuna storage URL (e.g. postgresql://user:pass@host/db) shared by machines: each "
    "runs the same command and takes trials from it. Shared trials train with the sequential "
    "engine: compare them with a local --engine sequential run, not the default engine's "
    "numbers (they differ in the last digits, up to ~2% after many epochs).",
)
@click.option("--study-name", help="The shared study's name (default: compare-DATA-MODEL).")
@_option("storage_retry", STORAGE_SETTINGS)
@_CONFIG_OPTION
@click.option(
    "--out",
    default="runs/compare",
    show_default=True,
    help="Output folder; a rerun with the same settings reuses its finished trials.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="When --out holds a study run with other settings, move it aside to OUT.<time> and "
    "start afresh (without it, such a rerun is refused).",
)
def compare(
    config_path: str | None,
    out: str,
    storage: str | None,
    study_name: str | None,
    storage_retry: float | None,
    overwrite: bool,
    **options: Any,
) -> None:
    """Train one model under several recipes and seeds; report the effect of each.

    With no options: digits, an MLP, 300 training samples with 30% label noise, 6 seeds and a
    panel with one recipe of each family. A trial that fails is printed with its error and
    the exit status is 1; the others are reported, and a rerun redoes only the failed ones.
    """
    from .lab.engine.workers import warm_up

    warm_up()  # the workers' imports overlap this command's start-up
    from .lab.studies.compare import compare as run_compare

    config = _study(config_path, _study_values(options), "compare")
    run = run_compare(
        config,
        out,
        _console(),
        storage=storage,
        study_name=study_name,
        overwrite=overwrite,
        **_given(storage_retry=storage_retry),
    )
    if run.interrupted:
        sys.exit(130)
    if any(r["status"] == "failed" for r in run.results):
        sys.exit(1)  # every output is written; the errors are printed and in trials.csv


@cli.command(short_help="Search a recipe's strengths with Optuna (TPE, median pruning).")
@_RECIPE_OPTION
@click.option(
    "--param",
    "params",
    multiple=True,
    help="An argument and its range, e.g. strength=1e-5:1e-1:log (log is the default for "
    "floats); repeat for several.",
)
@_option("trials", TUNE_SETTINGS)
@_option("seed", TUNE_SETTINGS)
@click.option("--storage", help="An RDB URL shared by machines (default: a journal file in --out).")
@click.option("--study-name", help="The Optuna study's name (default: RECIPE-DATA).")
@_option("storage_retry", STORAGE_SETTINGS)
@click.option("--no-pruning", is_flag=True, help="Never stop a trial early.")
@_option("engine", TUNE_SETTINGS)
@_study_options
@_CONFIG_OPTION
@click.option(
    "--out",
    default="runs/tune",
    show_default=True,
    help="Output folder: the journal file, tune_trials.csv, best.toml, tune_report.html.",
)
def tune(
    recipe: str,
    params: tuple[str, ...],
    trials: int | None,
    seed: int | None,
    storage: str | None,
    study_name: str | None,
    storage_retry: float | None,
    no_pruning: bool,
    engine: str | None,
    config_path: str | None,
    out: str,
    **options: Any,
) -> None:
    """Search a recipe's strengths with Optuna (TPE, median pruning on validation loss).

    Prints the best values with their validation and test metrics and writes best.toml, a
    study file for `reglab compare --config` with the tuned recipe beside baseline. Rerunning
    continues the same study; several machines share one through --storage URL --study-name NAME.
    A trial that fails is printed with its error (and is in tune_trials.csv); the exit status
    is then 1.
    """
    from .lab.engine.workers import warm_up

    warm_up()
    from .lab.studies.tune import TuneConfig
    from .lab.studies.tune_report import tune as run

    given = _study_values(options)
    workers = given.pop("workers", None)

    config = TuneConfig(
        recipe=recipe,
        params=list(params),
        study=_study(config_path, {**given, "engine": "sequential"}, "tune"),
        storage=storage,
        study_name=study_name,
        pruning=not no_pruning,
        **_given(trials=trials, seed=seed, engine=engine, storage_retry=storage_retry),
    )
    if run(config, out, workers or config.study.workers, _console()).failed:
        sys.exit(1)  # every output is written; the errors are printed and in tune_trials.csv


@cli.command(short_help="A regularization path: strengths from strong to weak, warm-started.")
@_RECIPE_OPTION
@click.option(
    "--param", required=True, help="The argument and its range, e.g. strength=1e-4:1 (log scale)."
)
@_option("points", PATH_SETTINGS)
@_option("seeds", PATH_SETTINGS)
@click.option("--cold", is_flag=True, help="Start every fit from the initial weights.")
@click.option(
    "--warm-epochs", type=int, help="Epochs of each warm-started point (default: epochs/3)."
)
@_study_options
@_CONFIG_OPTION
@click.option("--out", default="runs/path", show_default=True, help="Output folder.")
def path(
    recipe: str,
    param: str,
    points: int | None,
    seeds: int | None,
    cold: bool,
    warm_epochs: int | None,
    config_path: str | None,
    out: str,
    **options: Any,
) -> None:
    """A regularization path: fit at log-spaced strengths from strong to weak, each fit
    warm-started from the previous one; plot the U-curve, sparsity and weight norm, and mark
    the best strength and the one-standard-error choice."""
    from .lab.engine.workers import warm_up

    warm_up()
    from .lab.studies.path import PathConfig
    from .lab.studies.path_report import path as run

    given = _study_values(options)
    workers = given.pop("workers", None)
    config = PathConfig(
        recipe=recipe,
        param=param,
        study=_study(config_path, given, "path"),
        warm=not cold,
        **_given(points=points, seeds=seeds),
        warm_epochs=warm_epochs,
    )
    run(config, out, workers or config.study.workers, _console())


def _given(**options: Any) -> dict[str, Any]:
    """The options given (not None): the others keep their settings' defaults."""
    return {k: v for k, v in options.items() if v is not None}


def _console() -> Console:
    console = Console()
    if not console.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        console = Console(width=130)  # logs and pipes: do not wrap the tables at 80 columns
    return console


@cli.command()
def recipes() -> None:
    """List the built-in recipes and regularizers with their parameters."""
    from .core import Regularizer
    from .lab.inputs.recipes import BUILTIN_RECIPES, DEFAULT_PANEL

    console = Console()
    table = Table(title="Built-in recipes (* in the default panel)")
    for col in ("recipe", "what it does", "regularizers"):
        table.add_column(col)
    for name, (text, spec) in BUILTIN_RECIPES.items():
        regs = "; ".join(
            f"{s['type']}(" + ", ".join(f"{k}={v}" for k, v in s.items() if k != "type") + ")"
            for s in spec
        )
        table.add_row(name + (" *" if name in DEFAULT_PANEL else ""), text, regs or "-")
    console.print(table)
    regs = Table(title='Regularizers for TOML recipes ({ type = "Name", argument = value })')
    regs.add_column("type")
    regs.add_column("arguments: allowed values")
    for name, cls in sorted(Regularizer.registry.items()):
        if name == "Chain":
            continue
        regs.add_row(name, "; ".join(f"{k}: {c.describe()}" for k, c in cls.constraints.items()))
    console.print(regs)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; turn bad input into one line on stderr and exit code 2."""
    one_line_warnings()
    # at exit, once every output is written: the interpreter's teardown then skips its last
    # garbage collections over PyTorch's (and dynamo's) hundreds of thousands of objects,
    # which took 0.8-1.2 s after the command was done (an in-process caller is unaffected
    # until its own exit)
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    try:
        cli.main(args=argv, prog_name="reglab", standalone_mode=False)
    except (ConfigError, StorageUnavailable) as exc:
        click.echo(f"reglab: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.UsageError as exc:
        click.echo(f"reglab: error: {exc.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo(f"reglab: {INTERRUPTED}", err=True)
        sys.exit(130)
    sys.exit(0)


if __name__ == "__main__":
    main()
