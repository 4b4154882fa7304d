"""Crash-safe studies: killed mid-run, the rerun finishes with nothing lost or duplicated."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reglab.cli import main

ARGS = [
    "compare",
    "--recipes",
    "baseline,l2,dropout",
    "--seeds",
    "2",
    "--epochs",
    "40",
    "--train-size",
    "100",
    "--workers",
    "2",
    "--engine",
    "sequential",  # one trial per job: trials finish one by one, and bitwise as on a clean run
]


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "reglab", *ARGS, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def test_sigkill_then_rerun_loses_and_duplicates_nothing(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _start(killed)
    deadline = time.monotonic() + 120
    while len(list((killed / "trials").glob("*.json"))) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no trial finished in time"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the study and its workers, mid-trial
    proc.wait()
    finished_before = len(list((killed / "trials").glob("*.json")))
    assert 2 <= finished_before < 6
    assert not (killed / "results.csv").exists()

    rerun = subprocess.run(
        [sys.executable, "-m", "reglab", *ARGS, "--out", str(killed)],
        capture_output=True,
        text=True,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"Reused {finished_before} finished trials" in rerun.stdout
    subprocess.run(
        [sys.executable, "-m", "reglab", *ARGS, "--out", str(clean)],
        check=True,
        capture_output=True,
    )

    trials = [json.loads(p.read_text()) for p in (killed / "trials").glob("*.json")]
    assert len(trials) == 6 and len({t["key"] for t in trials}) == 6
    assert sorted((t["recipe"], t["seed"]) for t in trials) == sorted(
        (r, s) for r in ("baseline", "l2", "dropout") for s in (0, 1)
    )
    assert (killed / "results.csv").read_text() == (clean / "results.csv").read_text()


def _run(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


SMALL = ["--seeds", "2", "--epochs", "2", "--train-size", "60", "--workers", "1"]


def test_changing_one_recipe_invalidates_only_its_trials(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert (
        _run(["compare", "--recipes", "baseline,l2,dropout", *SMALL, "--out", out], capsys)[0] == 0
    )
    config = tmp_path / "study.toml"
    config.write_text(
        '[recipes]\nbaseline = []\nl2 = [{ type = "L2", strength = 0.5 }]\ndropout = "dropout"\n'
    )
    code, stdout, _ = _run(["compare", "--config", str(config), *SMALL, "--out", out], capsys)
    assert code == 0 and "Reused 4 finished trials" in stdout


def test_a_folder_of_another_study_is_refused(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert _run(["compare", "--recipes", "baseline", *SMALL, "--out", out], capsys)[0] == 0
    code, _, err = _run(
        [
            "compare",
            "--data",
            "wine",
            "--recipes",
            "baseline",
            *SMALL[2:],
            "--seeds",
            "1",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1
    assert "whose study ran with other settings (data 'digits' → 'wine'" in err
    assert "--overwrite" in err


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run(["compare", *SMALL, "--out", str(blocker / "sub")], capsys)
    assert code == 2 and err.count("\n") == 1 and "must be a writable folder" in err
