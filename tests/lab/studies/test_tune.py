"""`reglab tune`: search space, storage, workers sharing a study, dead workers, bad input."""

import csv
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from reglab import ConfigError
from reglab.lab.inputs.recipes import BUILTIN_RECIPES
from reglab.lab.studies.dimensions import parse_dimension, tunable
from reglab.lab.studies.optuna_storage import masked

SMALL = ["--epochs", "6", "--train-size", "80", "--batch-size", "16"]


def journal_study(folder: Path, name: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "tune.journal"))
    )
    return optuna.load_study(study_name=name, storage=storage)


def test_tunable_names_every_numeric_argument_and_bare_names_when_unique():
    names = tunable(BUILTIN_RECIPES["combined"][1])
    assert {"L2.strength", "Dropout.p", "EarlyStopping.patience", "strength", "p"} <= set(names)
    assert names["p"][:2] == (1, "p")
    assert "monitor" not in names  # a choice, not a number


def test_parse_dimension_reads_ranges_and_scales():
    spec = BUILTIN_RECIPES["l2"][1]
    dim = parse_dimension("strength=1e-5:1e-1", spec, "l2")
    assert (dim.low, dim.high, dim.log, dim.integer) == (1e-5, 1e-1, True, False)
    assert not parse_dimension("strength=0:1:linear", spec, "l2").log
    patience = parse_dimension("patience=2:20", BUILTIN_RECIPES["early_stopping"][1], "es")
    assert patience.integer and not patience.log


@pytest.mark.parametrize(
    "text, message",
    [
        ("alpha=1:2", "must name a tunable argument of recipe 'l2' (L2.strength, strength)"),
        ("strength=1:0.1", "must have LOW < HIGH. Got strength=1:0.1."),
        ("strength=0:1:log", "must have LOW > 0 on a log scale. Got strength=0:1:log."),
        ("strength=1e-3", "must look like NAME=LOW:HIGH[:log|:linear]"),
        ("strength=-1:1:linear", "'param strength' parameter of tune must be a float"),
    ],
)
def test_parse_dimension_rejects_bad_input_in_one_line(text, message):
    with pytest.raises(ConfigError, match=None) as info:
        parse_dimension(text, BUILTIN_RECIPES["l2"][1], "l2")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_masked_hides_the_password():
    assert masked("postgresql://ann:s3cret@db.example:5432/lab") == (
        "postgresql://ann:***@db.example:5432/lab"
    )


def test_tune_beats_a_poor_strength_with_two_workers_and_no_trial_lost(tmp_path, cli):
    out = tmp_path / "t"
    base = ["tune", "--recipe", "l2", "--param", "strength=1e-4:30:log", *SMALL]
    base += ["--workers", "2", "--no-pruning", "--out", str(out)]
    code, stdout, err = cli([*base, "--trials", "6"])
    assert code == 0, err
    assert "Best trial" in stdout
    rows = list(csv.DictReader((out / "tune_trials.csv").open()))
    assert sorted(int(r["number"]) for r in rows) == list(range(6))
    assert {r["state"] for r in rows} == {"complete"}
    study = journal_study(out, "l2-digits")
    assert len(study.trials) == 6  # nothing ran twice, nothing extra
    workers = {t.user_attrs["reglab_worker"] for t in study.trials}
    assert 1 <= len(workers) <= 2
    # the deliberately poor end of the range: L2(30) crushes the weights
    poor = _val_loss(out, strength=30.0, cli=cli)
    assert study.best_value < poor - 0.3
    assert (out / "best.toml").is_file() and (out / "tune_report.html").is_file()
    report = (out / "tune_report.html").read_text()
    assert "<h2>History</h2>" in report and "Objective by parameter" in report
    # one parameter searched: its importance is trivially 1.0, so none is shown
    assert "Parameter importances" not in report and "importance of" not in stdout
    # rerunning continues the same study
    code, stdout, err = cli([*base, "--trials", "2"])
    assert code == 0, err
    assert len(journal_study(out, "l2-digits").trials) == 8


def _val_loss(out: Path, strength: float, cli) -> float:
    folder = out / "poor"
    args = ["tune", "--recipe", "l2", "--param", f"strength={strength}:{strength * 1.0001}"]
    args += ["--trials", "1", *SMALL, "--workers", "1", "--no-pruning", "--out", str(folder)]
    assert cli(args)[0] == 0
    return journal_study(folder, "l2-digits").best_value


STUDY_FILE = """
data = "wine"
epochs = 6
train_size = 80
batch_size = 16
baseline = "plain"

[recipes]
plain = []
drop = [{type = "Dropout", p = 0.3}, {type = "L2", strength = 0.001}]
"""


def test_tune_a_study_file_recipe_and_best_toml_runs_in_compare(tmp_path, cli):
    config = tmp_path / "study.toml"
    config.write_text(STUDY_FILE)
    out = tmp_path / "t"
    args = ["tune", "--config", str(config), "--recipe", "drop", "--param", "p=0.1:0.6:linear"]
    assert cli([*args, "--trials", "2", "--workers", "1", "--out", str(out)])[0] == 0
    study = journal_study(out, "drop-wine")
    assert all(t.user_attrs["epochs_run"] == 6 for t in study.trials)  # the file's settings
    best = tomllib.loads((out / "best.toml").read_text())
    assert best["data"] == "wine" and best["epochs"] == 6
    assert "engine" not in best and "workers" not in best and "baseline" not in best
    tuned = best["recipes"]["drop_tuned"]
    assert tuned[1] == {"type": "L2", "strength": 0.001}  # the file's other regularizer
    assert tuned[0]["p"] == pytest.approx(study.best_params["p"])
    assert best["recipes"]["baseline"] == []
    args = ["compare", "--config", str(out / "best.toml"), "--seeds", "1", "--epochs", "2"]
    code, stdout, err = cli([*args, "--workers", "1", "--out", str(tmp_path / "c")])
    assert code == 0, err
    assert "drop_tuned" in stdout


@pytest.mark.parametrize("command", ["tune", "path"])
def test_unknown_recipe_lists_the_study_files_and_the_builtins(tmp_path, cli, command):
    config = tmp_path / "study.toml"
    config.write_text(STUDY_FILE)
    args = [command, "--config", str(config), "--recipe", "nosuch", "--param", "strength=1e-3:1"]
    code, _, err = cli([*args, "--out", str(tmp_path / "o")])
    assert code == 2 and err.count("\n") == 1
    assert f"The 'recipe' parameter of {command} must be one of 'plain', 'drop', 'baseline'" in err
    assert err.rstrip().endswith("Got 'nosuch'.")


def test_tune_killed_worker_trial_is_taken_over_and_the_others_finish(tmp_path):
    out = tmp_path / "t"
    args = [sys.executable, "-m", "reglab", "tune", "--recipe", "l2"]
    args += ["--param", "strength=1e-4:1:log", "--trials", "4", "--workers", "2"]
    args += ["--epochs", "60", "--train-size", "200", "--no-pruning", "--out", str(out)]
    args += ["--checkpoint-every", "0"]  # a checkpoint at every epoch end: the state waited for
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    victim = None
    while victim is None:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.2)
        try:
            study = journal_study(out, "l2-digits")
        except (KeyError, OSError, ValueError):
            continue
        running = study.get_trials(states=(TrialState.RUNNING,))
        if running and "reglab_worker" in running[0].user_attrs:
            victim = running[0]
    # kill it once it trains (a checkpoint exists), not while it writes the journal just after
    # taking its trial: a worker killed holding the journal's lock left the others waiting 30 s
    # for Optuna to break it, and then writing to a trial another had finished
    while not list((out / "checkpoints").glob("tune-*.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.02)
    os.kill(int(victim.user_attrs["reglab_worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    study = journal_study(out, "l2-digits")
    states = [t.state for t in study.trials]
    # the dead worker's trials were taken over, still running, by a fresh worker: each keeps
    # its number and parameters and resumes from its checkpoint; nothing failed or re-queued
    assert states == [TrialState.COMPLETE] * 4
    assert study.trials[victim.number].params == victim.params or not victim.params
    assert "taken over from workers that died" in stdout


def test_tune_unreachable_storage_is_one_line_with_the_password_masked(tmp_path, cli):
    url = "postgresql://ann:s3cret@127.0.0.1:9/lab"
    args = ["tune", "--recipe", "l2", "--param", "strength=1e-4:1", "--storage", url]
    code, _out, err = cli([*args, *SMALL, "--out", str(tmp_path / "t")])
    assert code == 2
    assert err.count("\n") == 1 and "s3cret" not in err
    assert "postgresql://ann:***@127.0.0.1:9/lab" in err


def test_tune_unknown_param_lists_the_tunable_ones(tmp_path, cli):
    args = ["tune", "--recipe", "combined", "--param", "strenght=1:2"]
    code, _out, err = cli([*args, "--out", str(tmp_path / "t")])
    assert code == 2 and err.count("\n") == 1
    assert "L2.strength" in err and "Dropout.p" in err and "'strenght'" in err


def test_tune_needs_a_param(tmp_path, cli):
    code, _out, err = cli(["tune", "--recipe", "l2", "--out", str(tmp_path / "t")])
    assert code == 2 and "--param strength=1e-5:1e-1:log" in err


def test_tune_two_machines_share_one_postgresql_study(tmp_path, machines, postgres_url):
    args = [sys.executable, "-m", "reglab", "tune", "--recipe", "l2"]
    args += ["--param", "strength=1e-4:1:log", "--trials", "3", "--workers", "1"]
    args += [*SMALL, "--storage", postgres_url, "--study-name", "shared"]
    machines([[*args, "--out", str(tmp_path / f"m{i}")] for i in range(2)])
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    assert all(t.state in finished for t in study.trials)
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert len({tuple(t.params.items()) for t in study.trials}) == 6


def test_tune_population_and_sequential_engines_agree(tmp_path, cli):
    values = {}
    for engine in ("population", "sequential"):
        folder = tmp_path / engine
        args = ["tune", "--recipe", "l2", "--param", "strength=0.01:0.0100001", "--trials", "2"]
        args += [*SMALL, "--workers", "1", "--no-pruning", "--engine", engine]
        assert cli([*args, "--out", str(folder)])[0] == 0
        study = journal_study(folder, "l2-digits")
        values[engine] = sorted(t.value for t in study.trials)
    assert values["population"] == pytest.approx(values["sequential"], rel=1e-4)


def test_requeue_dead_takes_back_trials_of_dead_and_half_started_workers(tmp_path, monkeypatch):
    from reglab.lab.studies import optuna_storage as tune

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "j"))
    )
    study = optuna.create_study(study_name="s", storage=storage)
    for _ in range(3):
        study.enqueue_trial({}, user_attrs={"key": "k"})
    alive, dead, orphan = [tune.claim(study) for _ in range(3)]
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead.set_user_attr("reglab_worker", f"{tune.socket.gethostname()}:{gone.stdout.strip()}")
    study._storage.set_trial_user_attr(orphan._trial_id, "reglab_worker", "")
    monkeypatch.setattr(tune, "ORPHAN_SECONDS", 0.0)
    assert tune.requeue_dead(study) == 2  # the dead worker's and the orphan; not ours
    states = {t.number: t.state for t in study.trials}
    assert states[alive.number] == TrialState.RUNNING
    assert states[dead.number] == states[orphan.number] == TrialState.FAIL
    retries = [t for t in study.trials if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs["retry_of"] for t in retries) == sorted([dead.number, orphan.number])
    assert all(t.user_attrs["key"] == "k" for t in retries)


_OPEN_AT_ONCE = """
import pathlib, sys, time
from reglab.lab.studies.optuna_storage import open_storage
pathlib.Path(sys.argv[2]).touch()
while not pathlib.Path(sys.argv[3]).exists():
    time.sleep(0.001)
open_storage(sys.argv[1], pathlib.Path("."), "compare")
"""


def _open_at_once(url: str, folder: Path, processes: int = 6) -> None:
    go = folder / "go"
    procs = []
    for i in range(processes):
        ready = folder / f"ready{i}"
        cmd = [sys.executable, "-c", _OPEN_AT_ONCE, url, str(ready), str(go)]
        procs.append((ready, subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)))
    deadline = time.monotonic() + 120
    while not all(ready.exists() for ready, _ in procs) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # every process is imported and waiting: they all open the storage now
    errors = [proc.communicate(timeout=120)[1] for _, proc in procs]
    assert [proc.returncode for _, proc in procs] == [0] * processes, "\n".join(errors)
    study = optuna.create_study(study_name="after", storage=url)
    assert study.trials == []


def test_open_storage_by_many_first_users_of_a_postgresql_database_at_once(tmp_path, postgres_url):
    # machines started together on an empty database all create Optuna's tables: one wins
    # and the others must use its tables, not fail (CI caught this with two machines)
    _open_at_once(postgres_url, tmp_path)


def test_open_storage_by_many_first_users_of_a_sqlite_file_at_once(tmp_path):
    _open_at_once(f"sqlite:///{tmp_path / 'study.db'}", tmp_path)


def test_tune_trials_that_raise_fail_with_their_error_once_and_exit_1(tmp_path, cli):
    # BatchNorm cannot train on a last batch of one sample (17 = 16 + 1); the trials used to
    # kill their workers, be re-queued round after round, and end in exit 0
    config = tmp_path / "study.toml"
    config.write_text(
        '[recipes]\nbn = [{type = "InsertNorm", kind = "batch"}, {type = "L2", strength = 0.01}]\n'
    )
    out = tmp_path / "t"
    args = ["tune", "--config", str(config), "--recipe", "bn", "--param", "strength=1e-3:1"]
    args += ["--trials", "2", "--workers", "1", "--epochs", "2", "--train-size", "17"]
    code, stdout, _ = cli([*args, "--batch-size", "16", "--out", str(out)])
    assert code == 1
    assert "2 trial(s) failed (0, 1): ValueError: Expected more than 1 value" in stdout
    assert "taken over" not in stdout
    assert [t.state for t in journal_study(out, "bn-digits").trials] == [TrialState.FAIL] * 2
    rows = list(csv.DictReader((out / "tune_trials.csv").open()))
    assert [r["state"] for r in rows] == ["fail", "fail"]
    assert all(r["error"].startswith("ValueError: Expected more than 1 value") for r in rows)


def _finished_run(params: list[str], values: dict[str, list[float]], tmp_path: Path):
    """A TuneRun of trials made by hand (complete, and one pruned) on ``params``."""
    from reglab.lab.studies.config import StudyConfig
    from reglab.lab.studies.tune import TuneConfig, TuneRun

    config = TuneConfig("elastic_net", params, StudyConfig(data="wine"))
    dists = {
        d.name: optuna.distributions.FloatDistribution(d.low, d.high, log=d.log)
        for d in config.dims
    }
    trials = []
    for n, losses in enumerate(zip(*values.values(), strict=True)):
        point = dict(zip(list(values)[:-1], losses[:-1], strict=True))
        state = TrialState.PRUNED if n == 0 else TrialState.COMPLETE
        trial = optuna.trial.create_trial(
            params=point, distributions={k: dists[k] for k in point},
            value=None if n == 0 else losses[-1], state=state,
            intermediate_values={1: 2.0, 2: losses[-1]},
        )  # fmt: skip
        trial.number = n
        trials.append(trial)
    best = min(trials[1:], key=lambda t: t.value)
    return TuneRun(config.name, "x", trials, best, len(trials), 0, config)


def test_tune_report_draws_the_objective_against_each_parameter(tmp_path):
    from reglab.lab.studies.tune_report import write_tune_report

    run = _finished_run(
        ["strength=1e-4:1e-1", "l1_ratio=0.1:0.9:linear"],
        {"strength": [1e-3, 1e-2, 5e-2], "l1_ratio": [0.2, 0.5, 0.8], "loss": [0, 0.4, 0.3]},
        tmp_path,
    )
    run.importances = {"strength": 0.7, "l1_ratio": 0.3}
    report = write_tune_report(run, tmp_path).read_text()
    assert "Objective by parameter" in report and "Parameter importances" in report
    assert (tmp_path / "plots" / "tune_slices.png").stat().st_size > 10_000
    run.importances = {"strength": 1.0}  # one parameter: trivially all of it
    assert "Parameter importances" not in write_tune_report(run, tmp_path).read_text()
