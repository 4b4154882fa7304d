"""A rerun never silently overwrites another study (issue 26 §2): a folder is extended by more
seeds or recipes, and refused, or moved aside with ``overwrite``, when its settings differ."""

from __future__ import annotations

import json

import pytest

import reglab
from reglab.lab import compare

SMALL = {"data": "wine", "seeds": 2, "epochs": 2, "workers": 1, "quiet": True}


def test_a_rerun_that_adds_seeds_or_recipes_extends_the_study(tmp_path):
    first = compare(recipes=["baseline", "l2"], out=tmp_path, **SMALL)
    more = compare(recipes=["baseline", "l2", "dropout"], out=tmp_path, **{**SMALL, "seeds": 3})
    assert more.reused == len(first.results) == 4
    assert len(more.results) == 9


def test_a_rerun_with_other_settings_is_refused_and_changes_nothing(tmp_path, capsys):
    from reglab.cli import main

    compare(recipes=["baseline", "l2"], out=tmp_path, **SMALL)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(reglab.ConfigError) as error:
        compare(recipes=["baseline", "l2"], out=tmp_path, **{**SMALL, "epochs": 3, "lr": 0.01})
    message = str(error.value)
    assert "epochs 2 → 3" in message and "lr 0.001 → 0.01" in message
    assert "--overwrite" in message and "another --out" in message
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before
    args = ["compare", "--data", "wine", "--recipes", "baseline,l2", "--seeds", "2", "--epochs",
            "3", "--workers", "1", "--out", str(tmp_path)]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "epochs 2 → 3" in err


def test_overwrite_moves_the_old_study_aside_and_starts_afresh(tmp_path):
    out = tmp_path / "study"
    compare(recipes=["baseline", "l2"], out=out, **SMALL)
    old = (out / "trials" / "l2__seed0.json").read_text()
    run = compare(recipes=["baseline", "l2"], out=out, overwrite=True, **{**SMALL, "epochs": 3})
    assert run.reused == 0 and run.results[0]["epochs_run"] == 3
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("study.")]
    assert len(aside) == 1 and (aside[0] / "trials" / "l2__seed0.json").read_text() == old
    manifest = json.loads((out / "reglab-study.json").read_text())
    assert manifest["settings"]["epochs"] == 3
