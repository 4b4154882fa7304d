"""Shared studies under faults: a database outage (short: waited out; long: one line, exit 2,
and a rerun that loses nothing), and a tune rerun after the heartbeat grace period. Against
a real PostgreSQL of the test's own, stopped and started as an administrator would."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SMALL = ["--recipes", "baseline,l2,dropout", "--seeds", "2", "--epochs", "4"]
SMALL += ["--train-size", "60", "--workers", "1"]


def _start(args, env=None):
    """``reglab ARGS`` in its own process group; stdout and stderr go to files beside it."""
    out = Path(args[args.index("--out") + 1])
    out.mkdir(parents=True, exist_ok=True)
    logs = out.parent / f"{out.name}.stdout", out.parent / f"{out.name}.stderr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reglab", *args],
        stdout=logs[0].open("w"),
        stderr=logs[1].open("w"),
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    return proc, logs


def _wait_for(condition, proc, what, logs, limit=300.0):
    """Wait (for a state, not a time) until ``condition()``; fail if the command ends first."""
    deadline = time.monotonic() + limit
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the command ended before {what}: {logs[1].read_text()[-2000:]}")
        assert time.monotonic() < deadline, f"no {what} in {limit:g} s"
        time.sleep(0.05)


def _finish(proc, logs, limit=300):
    try:
        proc.wait(timeout=limit)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, logs[0].read_text(), logs[1].read_text()


def _complete_keys(url, name):
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=name, storage=url)
    return sorted(t.user_attrs["key"] for t in study.trials if t.state == TrialState.COMPLETE)


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """``results.csv`` of the study run here, alone, with the sequential engine (the numbers
    a shared study must give whatever its database went through)."""
    local = tmp_path_factory.mktemp("local") / "out"
    command = [sys.executable, "-m", "reglab", "compare", *SMALL, "--engine", "sequential"]
    done = subprocess.run(
        [*command, "--out", str(local)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return (local / "results.csv").read_text()


def test_shared_compare_waits_out_a_database_outage(tmp_path, expected, own_postgres):
    url = own_postgres.database("outage")
    out = tmp_path / "shared"
    args = ["compare", *SMALL, "--storage", url, "--study-name", "grid", "--out", str(out)]
    proc, logs = _start(args, {"REGLAB_HOLD_AT": "before_store"})
    held = out / ".held-before_store"
    _wait_for(held.exists, proc, "a finished result", logs)
    timeline = [("a worker holds its first finished result", time.monotonic())]
    own_postgres.stop()
    timeline.append(("database stopped", time.monotonic()))
    held.unlink()  # the worker goes on: it stores into a database that is gone
    noticed = lambda: "cannot be reached" in logs[1].read_text()
    _wait_for(noticed, proc, "the outage noticed", logs)
    timeline.append(("the command says it retries", time.monotonic()))
    time.sleep(2.0)  # the outage lasts longer than a poll (0.2 s) and several retries
    own_postgres.start()
    timeline.append(("database started", time.monotonic()))
    code, stdout, stderr = _finish(proc, logs)
    timeline.append((f"command exited {code}", time.monotonic()))
    t0 = timeline[0][1]
    print("\n".join(f"{t - t0:6.1f} s  {what}" for what, t in timeline))
    print(stderr)
    assert code == 0, stderr
    assert "Traceback" not in stderr and "StorageInternalError" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 2 and "retrying for up to 60 s" in lines[0], stderr
    assert "is back after" in lines[1] and url.rsplit("/", 1)[0] in lines[1]
    # every trial once, and the numbers of a run without the outage
    keys = _complete_keys(url, "grid")
    assert len(keys) == 6 and len(set(keys)) == 6
    assert (out / "results.csv").read_text() == expected
    assert not (out / "checkpoints").exists()  # no kept result or checkpoint left
    # the console and the report say whose numbers a shared study's are
    note = "every trial trained with the sequential engine"
    assert note in " ".join(stdout.split())
    assert note in (out / "report.html").read_text()


def test_shared_compare_past_the_retry_limit_stops_in_one_line_and_a_rerun_loses_nothing(
    tmp_path, expected, own_postgres
):
    url = own_postgres.database("long_outage").replace("postgres@", "postgres:s3cret@")
    out = tmp_path / "shared"
    args = ["compare", *SMALL, "--storage", url, "--study-name", "grid", "--out", str(out)]
    proc, logs = _start([*args, "--storage-retry", "3"], {"REGLAB_HOLD_AT": "before_store"})
    held = out / ".held-before_store"
    _wait_for(held.exists, proc, "a finished result", logs)
    kept = {p.name: json.loads(p.read_text()) for p in (out / "checkpoints").glob("*.result.json")}
    assert len(kept) == 1  # the finished result waits on disk before it is stored
    own_postgres.stop()
    held.unlink()
    code, _, stderr = _finish(proc, logs)
    print(stderr)
    assert code == 2
    assert stderr.strip().splitlines()[-1] == (
        f"reglab: error: the database {url.replace('s3cret', '***')} could not be reached for "
        "3 s (Connection refused); every finished result is kept: rerun the same command to "
        "resume"
    )
    assert "Traceback" not in stderr and "s3cret" not in stderr
    assert len(stderr.strip().splitlines()) == 2  # the warning, then the error
    assert {p.name for p in (out / "checkpoints").glob("*.result.json")} == set(kept)

    own_postgres.start()
    proc, logs = _start(args)
    code, _, stderr = _finish(proc, logs)
    assert code == 0, stderr
    keys = _complete_keys(url, "grid")
    assert len(keys) == 6 and len(set(keys)) == 6
    assert (out / "results.csv").read_text() == expected
    # the kept result was stored as it was: that trial was not trained again
    ((name, result),) = kept.items()
    stored = json.loads((out / "trials" / name.replace(".result", "")).read_text())
    assert stored == result["result"]
    assert not (out / "checkpoints").exists()


TUNE = ["tune", "--recipe", "l2", "--param", "strength=1e-5:1e-1:log", "--trials", "4"]
TUNE += ["--epochs", "120", "--workers", "1", "--no-pruning", "--checkpoint-every", "0"]


def test_tune_rerun_after_the_heartbeat_grace_period_resumes_its_trials(tmp_path, own_postgres):
    import optuna
    from optuna.trial import TrialState

    url = own_postgres.database("late_rerun")
    out = tmp_path / "tune"
    args = [*TUNE, "--storage", url, "--study-name", "late", "--out", str(out)]
    grace = {"REGLAB_HEARTBEAT_GRACE": "3"}
    proc, logs = _start(args, grace)
    population = lambda: any((out / "checkpoints").glob("tune-late-0-1-2-3.pt"))
    _wait_for(population, proc, "a checkpoint of the population", logs)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    study = optuna.load_study(study_name="late", storage=url)
    reported = {t.number: max(t.intermediate_values, default=0) for t in study.trials}
    time.sleep(5.0)  # past the grace period: every heartbeat of the killed worker is stale
    proc, logs = _start(args, grace)
    code, stdout, stderr = _finish(proc, logs)
    print(stdout, stderr, reported)
    assert code == 0, stderr
    assert "UpdateFinishedTrialError" not in stderr and "Traceback" not in stderr
    assert "ExperimentalWarning" not in stderr and "already reported" not in stderr
    assert "4 taken over from workers that died" in " ".join(stdout.split())
    study = optuna.load_study(study_name="late", storage=url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4  # none retrained anew
    resumed = [t.user_attrs["resumed_from"] for t in study.trials]
    print("resumed from epochs", resumed)
    assert all(0 < r < 120 for r in resumed) and len(set(resumed)) == 1
    for t in study.trials:
        assert sorted(t.intermediate_values) == list(range(1, 121))
    assert not (out / "checkpoints").exists()  # no checkpoint or kept outcome left
    rows = list(csv.DictReader((out / "tune_trials.csv").open()))
    assert [r["state"] for r in rows] == ["complete"] * 4
