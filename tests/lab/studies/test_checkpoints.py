"""Fault tests: studies killed (SIGKILL to the whole process group) or interrupted (Ctrl-C) once
the output folder shows the state a test needs (a checkpoint, both populations' checkpoints, a
late epoch), then rerun with the same command, end with the same numbers as an uninterrupted
run, nothing duplicated, and resume instead of starting over. No test waits for a fraction of
a measured time: on a loaded machine that finds another state.

How much time a rerun saves is measured by ``benchmarks/kill_resume.py``, not here: a timed
assertion on a shared two-core machine would fail on its noise, not on the code."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

# the default study with 2 seeds and 60 epochs: 20 trials in two populations of 10; a
# checkpoint at every epoch end (not part of a trial's key). Each kill is at a state, so the
# number of epochs only has to leave room for the states: fewer make the tests shorter.
EPOCHS = 60
DEFAULT = ["compare", "--seeds", "2", "--epochs", str(EPOCHS), "--checkpoint-every", "0"]
SEQUENTIAL = ["compare", "--recipes", "baseline,l2,dropout,mixup", "--seeds", "2"]
SEQUENTIAL += ["--epochs", "60", "--engine", "sequential", "--checkpoint-every", "0"]
SINGLE = ["compare", "--recipes", "l2", "--seeds", "1", "--epochs", "300"]
SINGLE += ["--checkpoint-every", "0"]


def _command(args, out):
    return [sys.executable, "-m", "reglab", *args, "--out", str(out)]


def _timed(args, out):
    """Run to the end; the wall time and the output."""
    started = time.monotonic()
    done = subprocess.run(_command(args, out), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return time.monotonic() - started, done.stdout


def _interrupted(args, out, until=None, sig=signal.SIGKILL, pattern=None):
    """Start, and send ``sig`` to the whole process group once ``until(out)`` is true (or a
    file matching ``pattern`` appears in ``out/checkpoints``); the exit code, the seconds from
    the signal to the exit, and the output."""
    proc = subprocess.Popen(
        _command(args, out),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    if until is None:
        until = lambda folder: bool(list((Path(folder) / "checkpoints").glob(pattern)))
    deadline = time.monotonic() + 300
    while not until(out):
        assert proc.poll() is None, f"ended first: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "the state never appeared"
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before the signal: {proc.communicate()[1][-2000:]}"
    sent = time.monotonic()
    os.killpg(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, time.monotonic() - sent, stdout + stderr


def _trials(out):
    """The (recipe, seed) of each row of ``trials.csv``, checked to be unique."""
    rows = list(csv.DictReader((Path(out) / "trials.csv").open()))
    keys = [(r["recipe"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys)), "a trial is duplicated"
    return sorted(keys)


def _saved_epochs(out):
    """The epoch each population checkpoint in ``out`` was saved at."""
    return sorted(
        torch.load(p, weights_only=True)["state"]["epoch"]
        for p in (Path(out) / "checkpoints").glob("population-*.pt")
    )


@pytest.fixture(scope="module")
def default_clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    seconds, _ = _timed(DEFAULT, out)
    return out, seconds


def _saved_epochs_now(out):
    """:func:`_saved_epochs` while the study runs: a checkpoint removed between the listing
    and the read counts as not saved yet."""
    try:
        return _saved_epochs(out)
    except (FileNotFoundError, EOFError, RuntimeError):
        return [0]


def _populations(out):
    return list((Path(out) / "checkpoints").glob("population-*.pt"))


#: The states a default study is killed at, each read from its output folder.
STATES = {
    # the first population checkpoint has been written
    "first_checkpoint": lambda out: len(_populations(out)) >= 1,
    # both populations are checkpointed mid-training
    "both_checkpointed": lambda out: len(_populations(out)) >= 2,
    # both populations are checkpointed past half of their epochs, before either ends
    "late": lambda out: len(_populations(out)) >= 2 and min(_saved_epochs_now(out)) >= EPOCHS // 2,
}


@pytest.mark.parametrize("state", list(STATES))
def test_default_study_killed_at_a_state_resumes_to_the_same_results(
    default_clean, tmp_path, state
):
    clean, _ = default_clean
    code, _, _ = _interrupted(DEFAULT, tmp_path, STATES[state])
    assert code == -signal.SIGKILL
    saved = _saved_epochs(tmp_path)
    written = list((tmp_path / "trials").glob("*.json"))
    assert saved and all(0 < e < EPOCHS for e in saved), saved
    assert not written and not (tmp_path / "results.csv").exists()
    rerun, stdout = _timed(DEFAULT, tmp_path)
    # the rerun went on from each checkpoint, not from scratch
    assert f"Resumed {10 * len(saved)} trials from their checkpoints" in stdout
    trials = [json.loads(p.read_text()) for p in (tmp_path / "trials").glob("*.json")]
    assert {t["resumed_from"] for t in trials} - {0} == set(saved)
    assert _trials(tmp_path) == _trials(clean)
    assert (tmp_path / "results.csv").read_text() == (clean / "results.csv").read_text()
    assert len(trials) == 20
    assert not (tmp_path / "checkpoints").exists()  # removed once every result is written
    print(f"killed at {state} (epochs {saved}); the rerun took {rerun:.1f} s")


def _held_at(point, out):
    """The study waits at hold point ``point`` (see reglab.lab.studies.holds)."""
    return (Path(out) / f".held-{point}").exists()


@pytest.mark.parametrize("point", ["before_announce", "after_announce", "trial_written", "report"])
def test_default_study_killed_at_a_hold_point_resumes_to_the_same_results(
    default_clean, tmp_path, monkeypatch, point
):
    """The windows between two files that no watcher can hit by polling: the study holds at
    the named point (REGLAB_HOLD_AT), the test sees the marker file and kills the group."""
    clean, _ = default_clean
    monkeypatch.setenv("REGLAB_HOLD_AT", point)
    code, _, _ = _interrupted(DEFAULT, tmp_path, lambda out: _held_at(point, out))
    assert code == -signal.SIGKILL
    written = list((tmp_path / "trials").glob("*.json"))
    announced = list((tmp_path / "checkpoints").glob("population-*.json"))
    assert len(announced) == {"before_announce": 0, "report": 0}.get(point, 2)
    assert len(written) == {"trial_written": 1, "report": 20}.get(point, 0)
    assert (tmp_path / "results.csv").exists() == (point == "report")
    assert not (tmp_path / "report.html").exists()
    monkeypatch.delenv("REGLAB_HOLD_AT")
    (tmp_path / f".held-{point}").unlink()
    _, stdout = _timed(DEFAULT, tmp_path)
    assert (tmp_path / "results.csv").read_text() == (clean / "results.csv").read_text()
    assert _trials(tmp_path) == _trials(clean)
    assert (tmp_path / "report.html").exists() and not (tmp_path / "checkpoints").exists()
    if point in ("trial_written", "report"):
        assert f"Reused {len(written)} finished trials" in stdout


def test_a_hold_point_that_does_not_exist_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("REGLAB_HOLD_AT", "middle")
    done = subprocess.run(
        _command(["compare", "--recipes", "baseline", "--seeds", "1", "--epochs", "1"], tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "reglab: error: The 'REGLAB_HOLD_AT' environment variable must be one of "
        "'before_announce', 'after_announce', 'trial_written', 'before_store', 'report'. "
        "Got 'middle'."
    )


def test_a_study_killed_after_its_final_checkpoint_resumes_to_the_same_results(tmp_path):
    """The window between a population's last checkpoint (saved when every member has left)
    and its trials' results: the rerun restored no row of stacked parameters with a float
    index, failed, and trained again from scratch with the members' models cut loose, so every
    L1/L2 member's per-epoch penalty read its final value (58 rows of results.csv differed)."""
    args = ["compare", "--recipes", "baseline,l1,l2,dropout", "--seeds", "2", "--epochs", "30"]
    args += ["--checkpoint-every", "1000"]  # the only population checkpoint is the final one
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    _timed(args, clean)
    code, _, _ = _interrupted(args, killed, pattern="population-*.pt")
    assert code == -signal.SIGKILL
    written = len(list((killed / "trials").glob("*.json")))
    _, stdout = _timed(args, killed)
    if written < 8:  # the kill came before every result was written: some resumed
        assert "Resumed" in stdout and "CheckpointWarning" not in stdout
    assert (killed / "results.csv").read_text() == (clean / "results.csv").read_text()


def test_workers_of_a_killed_study_checkpoint_and_exit(default_clean, tmp_path):
    """Only the study's own process is killed (as an out-of-memory kill does): its workers
    save at their next epoch end and exit instead of training on, or waiting, forever."""
    clean, _ = default_clean
    proc = subprocess.Popen(
        _command(DEFAULT, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while len(list((tmp_path / "checkpoints").glob("population-*.pt"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoints"
        time.sleep(0.05)
    before = _saved_epochs(tmp_path)
    proc.kill()  # the main process alone
    proc.wait()
    deadline = time.monotonic() + 30
    while True:  # every worker (and the forkserver) of the session has gone
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "worker processes outlived their study"
        time.sleep(0.2)
    after = _saved_epochs(tmp_path)
    assert len(after) == 2 and all(a > b for a, b in zip(after, before, strict=True))
    _, stdout = _timed(DEFAULT, tmp_path)
    assert "Resumed 20 trials from their checkpoints" in stdout
    assert (tmp_path / "results.csv").read_text() == (clean / "results.csv").read_text()


def test_sequential_study_killed_midway_resumes_to_the_same_results(tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    _timed(SEQUENTIAL, clean)
    _interrupted(SEQUENTIAL, killed, pattern="*__seed*.pt")  # mid-trial
    assert not (killed / "results.csv").exists()
    _timed(SEQUENTIAL, killed)
    assert (killed / "results.csv").read_text() == (clean / "results.csv").read_text()
    assert len(list((killed / "trials").glob("*.json"))) == 8


def _trial_epoch(out):
    """The epoch the running trial's checkpoint was saved at (0: none readable yet)."""
    for path in (Path(out) / "checkpoints").glob("*.pt"):
        try:
            return int(torch.load(path, weights_only=True)["state"]["epoch"])
        except (FileNotFoundError, EOFError, RuntimeError, KeyError):
            return 0
    return 0


def test_single_long_trial_killed_midway_resumes_where_it_was(tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    _timed(SINGLE, clean)
    # killed well into the trial: once its checkpoint holds a third of its epochs
    _interrupted(SINGLE, killed, lambda out: _trial_epoch(out) >= 100)
    _timed(SINGLE, killed)
    assert (killed / "results.csv").read_text() == (clean / "results.csv").read_text()
    trial = json.loads(next((killed / "trials").glob("*.json")).read_text())
    assert [r["epoch"] for r in trial["history"]] == list(range(1, 301))
    assert trial["resumed_from"] >= 100


def test_ctrl_c_exits_130_within_seconds_and_the_rerun_resumes(tmp_path):
    args = ["compare", "--recipes", "baseline,l2,dropout", "--seeds", "2", "--epochs", "150"]
    args += ["--checkpoint-every", "0"]
    clean, stopped = tmp_path / "clean", tmp_path / "stopped"
    _timed(args, clean)
    code, took, output = _interrupted(args, stopped, sig=signal.SIGINT, pattern="population-*.pt")
    assert code == 130, output[-2000:]
    assert took < 10, f"exited {took:.1f} s after Ctrl-C"
    assert "interrupted: rerun the same command to resume" in output
    assert list((stopped / "checkpoints").glob("*.pt")), "nothing was checkpointed"
    _timed(args, stopped)
    assert (stopped / "results.csv").read_text() == (clean / "results.csv").read_text()


def _path_rows(out):
    rows = list(csv.DictReader((Path(out) / "path.csv").open()))
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_path_killed_midway_continues_each_chain_where_it_was(tmp_path):
    args = ["path", "--recipe", "l2", "--param", "strength=1e-4:1", "--points", "4"]
    args += ["--seeds", "2", "--epochs", "75", "--workers", "2"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    _timed(args, clean)
    _interrupted(args, killed, pattern="path-*-seed*.pt")  # a chain has finished a point
    _timed(args, killed)
    assert _path_rows(killed) == _path_rows(clean)
    assert not (killed / "checkpoints").exists()


def test_tune_killed_midway_keeps_its_trials_and_their_values(tmp_path):
    import optuna
    from optuna.trial import FixedTrial, TrialState

    from reglab.lab.studies.config import StudyConfig
    from reglab.lab.studies.study import plan
    from reglab.lab.studies.tune import TuneConfig, evaluate_trial

    args = ["tune", "--recipe", "l2", "--param", "strength=1e-4:1", "--trials", "4"]
    args += ["--workers", "1", "--epochs", "100", "--no-pruning", "--engine", "sequential"]
    args += ["--checkpoint-every", "0"]
    started = time.monotonic()
    # killed mid-trial: once a trial's checkpoint holds 10 epochs
    _interrupted(args, tmp_path, lambda out: _trial_epoch(out) >= 10)
    _timed(args, tmp_path)
    print(f"tune killed and rerun in {time.monotonic() - started:.1f} s")
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "tune.journal"))
    )
    study = optuna.load_study(study_name="l2-digits", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4  # none lost or added
    config = TuneConfig("l2", ["strength=1e-4:1"], StudyConfig(epochs=100), trials=4)
    _, settings, *_ = plan(StudyConfig(epochs=100, recipes={"l2": config.spec}, seeds=1, workers=1))
    payload = {"settings": settings, "seed": 0, "spec": config.spec, "dims": config.dims}
    payload["pruning"] = False
    torch.set_num_threads(1)  # as in a worker
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == list(range(1, 101))
        assert evaluate_trial(FixedTrial(trial.params), payload).value == trial.value
