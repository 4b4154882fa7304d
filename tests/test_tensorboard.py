"""TensorBoard scalars (issue 28 §2): what ``fit(log_dir=)`` and the population engine write,
read back with tensorboard's own ``EventAccumulator`` and checked against the History, a resumed
run that continues its folder without a duplicate step, and the lab's ``--tensorboard``."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import reglab
from reglab.lab.engine.population import Member, fit_population
from reglab.tensorboard import scalar_tag

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="the tensorboard package is not installed (make setup installs it)",
)


def _read(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of one run folder: tag -> [(step, value)], as TensorBoard shows them
    (steps an interrupted process wrote past its last checkpoint purged)."""
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _expected(epochs) -> dict[str, list[tuple[int, float]]]:
    """A History's records as TensorBoard holds them (float32 values)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in epochs:
        for key, value in record.items():
            if key != "epoch":
                stored = torch.tensor(value, dtype=torch.float32).item()
                out.setdefault(scalar_tag(key), []).append((int(record["epoch"]), stored))
    return out


def _without_seconds(scalars):
    return {k: v for k, v in scalars.items() if k != "fit/seconds"}


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def test_scalar_tag_groups_the_splits_and_the_rest_under_fit():
    assert scalar_tag("train_loss") == "train/loss"
    assert scalar_tag("val_accuracy") == "val/accuracy"
    assert scalar_tag("clip_fraction") == "fit/clip_fraction"
    assert scalar_tag("lr") == "fit/lr"


def test_fit_writes_every_scalar_of_its_history_each_epoch(toy_data, tmp_path):
    recipe = reglab.chain(reglab.L1(1e-3), reglab.ClipGradNorm(0.05))
    history = reglab.fit(_model(), *toy_data, recipe=recipe, epochs=4, log_dir=tmp_path / "run")
    got = _read(tmp_path / "run")
    assert set(got) == {
        "train/loss", "train/accuracy", "val/loss", "val/accuracy", "fit/objective",
        "fit/penalty", "fit/lr", "fit/clip_fraction", "fit/seconds",
    }  # fmt: skip
    assert got == _expected(history.epochs)
    assert [s for s, _ in got["fit/clip_fraction"]] == [1, 2, 3, 4]
    assert got["fit/penalty"][0][1] > 0


class Kill(Exception):
    """Stands for a crash after an epoch was logged, before its checkpoint was written."""


def test_a_resumed_fit_continues_its_run_without_a_duplicate_step(toy_data, tmp_path):
    recipe = lambda: reglab.chain(reglab.Dropout(0.2), reglab.L2(1e-3))
    clean = reglab.fit(_model(), *toy_data, recipe=recipe(), epochs=6, seed=1)
    checkpoint = reglab.Checkpoint(tmp_path / "run.pt", every=0)

    def crash_at_4(record):
        if record["epoch"] == 4:
            raise Kill  # epoch 4 is logged; the last checkpoint is epoch 3's

    with pytest.raises(Kill):
        reglab.fit(_model(), *toy_data, recipe=recipe(), epochs=6, seed=1,
                   checkpoint=checkpoint, on_epoch=crash_at_4, log_dir=tmp_path / "tb")  # fmt: skip
    assert [s for s, _ in _read(tmp_path / "tb")["val/loss"]] == [1, 2, 3, 4]
    resumed = reglab.fit(_model(), *toy_data, recipe=recipe(), epochs=6, seed=1,
                         checkpoint=checkpoint, log_dir=tmp_path / "tb")  # fmt: skip
    assert resumed.resumed_from == 3
    got = _read(tmp_path / "tb")
    for tag, points in got.items():
        assert [s for s, _ in points] == [1, 2, 3, 4, 5, 6], tag  # epoch 4 once, not twice
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 2
    # the values are the uninterrupted run's
    assert _without_seconds(got) == _without_seconds(_expected(clean.epochs))


def test_a_population_writes_each_members_run_as_fit_would(toy_data, tmp_path):
    (x, y), val = toy_data
    recipes = [reglab.chain(reglab.L2(1e-3)), reglab.chain(reglab.EarlyStopping(patience=1))]
    members = [
        Member(_model(k), recipes[k], (x, y), val, k, log_dir=str(tmp_path / f"m{k}"))
        for k in range(2)
    ]
    histories = fit_population(members, epochs=30, batch_size=16, lr=0.05)
    assert histories[1].epochs_run < 30  # early stopping left the population before the end
    for k, history in enumerate(histories):
        got = _read(tmp_path / f"m{k}")
        assert got == _expected(history.epochs), k
        assert [s for s, _ in got["val/loss"]] == list(range(1, history.epochs_run + 1))


def test_a_resumed_population_continues_each_members_run_without_a_duplicate_step(
    toy_data, tmp_path
):
    (x, y), val = toy_data

    def members():
        return [
            Member(_model(k), reglab.chain(reglab.Dropout(0.2)), (x, y), val, k,
                   log_dir=str(tmp_path / f"m{k}"))
            for k in range(2)
        ]  # fmt: skip

    clean = fit_population(
        [Member(m.model, m.recipe, m.train, m.val, m.seed) for m in members()],
        epochs=6, batch_size=16,
    )  # fmt: skip
    checkpoint = reglab.Checkpoint(tmp_path / "population.pt", every=0)

    def crash_at_4(epoch, alive):
        if epoch == 4:
            raise Kill  # epoch 4 is logged; the last checkpoint is epoch 3's

    with pytest.raises(Kill):
        fit_population(members(), epochs=6, batch_size=16, checkpoint=checkpoint,
                       on_epoch=crash_at_4)  # fmt: skip
    resumed = fit_population(members(), epochs=6, batch_size=16, checkpoint=checkpoint)
    assert [h.resumed_from for h in resumed] == [3, 3]
    for k in range(2):
        got = _read(tmp_path / f"m{k}")
        assert [s for s, _ in got["val/loss"]] == [1, 2, 3, 4, 5, 6]
        assert _without_seconds(got) == _without_seconds(_expected(clean[k].epochs))


def test_the_log_dir_without_tensorboard_installed_is_one_line(toy_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(reglab.ConfigError) as caught:
        reglab.fit(_model(), *toy_data, epochs=1, log_dir=tmp_path)
    assert str(caught.value) == (
        "The 'log_dir' parameter of fit needs the tensorboard package. Install it with: "
        "pip install 'reglab[tensorboard]'."
    )
    with pytest.raises(reglab.ConfigError, match="'tensorboard' parameter of compare needs"):
        reglab.lab.compare(data="wine", recipes=["baseline"], seeds=1, epochs=1, workers=1,
                           tensorboard=True, out=tmp_path / "study", quiet=True)  # fmt: skip
    assert not (tmp_path / "study").exists()  # refused before anything was written


@pytest.mark.parametrize("engine", ["population", "sequential"])
def test_compare_writes_one_run_per_trial_named_recipe_and_seed(tmp_path, engine):
    out = tmp_path / "study"
    options = {"data": "wine", "recipes": ["baseline", "l2", "early_stopping"], "seeds": 2}
    options.update(epochs=8, workers=1, engine=engine, out=out, quiet=True)
    run = reglab.lab.compare(tensorboard=True, **options)
    runs = sorted(str(p.parent.relative_to(out / "tensorboard")) for p in
                  (out / "tensorboard").rglob("events.out.tfevents.*"))  # fmt: skip
    assert runs == [f"{r}/seed-{s}" for r in ("baseline", "early_stopping", "l2") for s in (0, 1)]
    for result in run.results:
        got = _read(out / "tensorboard" / result["recipe"] / f"seed-{result['seed']}")
        assert got == _expected(result["history"]), (result["recipe"], result["seed"])
    # the setting is not part of a trial: a rerun without it reuses every trial
    again = reglab.lab.compare(**options)
    assert len(again.results) == 6 and again.reused == 6


def _command(args, out):
    done = subprocess.run(
        [sys.executable, "-m", "reglab", *args, "--data", "wine", "--epochs", "3", "--workers",
         "1", "--tensorboard", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"tensorboard --logdir {out / 'tensorboard'}" in done.stdout.replace("\n", "")


def _runs(root):
    return sorted(str(p.parent.relative_to(root)) for p in root.rglob("events.out.tfevents.*"))


def test_tune_writes_one_run_per_optuna_trial(tmp_path):
    _command(["tune", "--recipe", "l2", "--param", "strength=1e-4:1e-1", "--trials", "3"], tmp_path)
    runs = _runs(tmp_path / "tensorboard")
    assert runs == [f"l2-wine/trial-{n}" for n in range(3)], runs
    for run in runs:
        assert [s for s, _ in _read(tmp_path / "tensorboard" / run)["val/loss"]] == [1, 2, 3]


def test_path_writes_one_run_per_strength_and_seed(tmp_path):
    args = ["path", "--recipe", "l2", "--param", "strength=1e-4:1e-1", "--points", "2"]
    _command([*args, "--seeds", "1"], tmp_path)
    runs = _runs(tmp_path / "tensorboard")
    assert runs == ["l2/strength=0.0001/seed-0", "l2/strength=0.1/seed-0"], runs
    first = _read(tmp_path / "tensorboard" / "l2/strength=0.1/seed-0")  # the strongest, first
    assert [s for s, _ in first["val/loss"]] == [1, 2, 3]
