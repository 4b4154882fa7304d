import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reglab.cli import main

TINY = ["--seeds", "2", "--epochs", "3", "--train-size", "60", "--workers", "1"]


def run(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def read_results(folder: Path) -> list[dict]:
    with (folder / "results.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_compare_end_to_end_writes_csv_report_and_plots(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(
        ["compare", "--recipes", "baseline,l2,early_stopping", *TINY, "--out", str(out)], capsys
    )
    assert code == 0, err
    assert "Generalization" in stdout and "early_stopping" in stdout
    header = (out / "results.csv").read_text().splitlines()[0]
    assert header == "recipe,seed,epoch,split,metric,value"
    rows = read_results(out)
    assert {r["recipe"] for r in rows} == {"baseline", "l2", "early_stopping"}
    assert {r["epoch"] for r in rows} == {"1", "2", "3", "final"}
    final = {(r["split"], r["metric"]) for r in rows if r["epoch"] == "final"}
    assert {
        ("train", "accuracy"),
        ("val", "accuracy"),
        ("test", "accuracy"),
        ("test", "loss"),
        ("test", "ece"),
        ("model", "zero_fraction"),
        ("model", "weight_l2"),
    } <= final
    assert not any(m.startswith("mc_") for _, m in final)  # no dropout in these recipes
    curves = {(r["split"], r["metric"]) for r in rows if r["epoch"] == "1"}
    assert {
        ("train", "loss"),
        ("val", "loss"),
        ("train", "accuracy"),
        ("val", "accuracy"),
        ("train", "penalty"),
    } <= curves
    assert all(float(r["value"]) == float(r["value"]) for r in rows)  # no NaN
    report = (out / "report.html").read_text()
    # no recipe here makes a weight exactly zero: no sparsity chart, one line instead
    assert report.count("data:image/png;base64,") == 4 and "<table>" in report
    assert "No recipe has a weight that is exactly zero" in report
    assert not (out / "plots" / "sparsity.png").exists()
    assert "Reliability diagram" in report and "Calibration and uncertainty" in report
    for name in ("curves", "effects", "weights", "reliability"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((out / "trials").glob("*.json"))) == 6
    assert (out / "summary.csv").read_text().startswith("recipe,n,train acc")


def test_compare_rerun_reuses_finished_trials(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["compare", "--recipes", "baseline,dropout", *TINY, "--out", str(out)]
    assert run(args, capsys)[0] == 0
    first = (out / "results.csv").read_text()
    (out / "trials" / "dropout__seed1.json").unlink()  # as if interrupted before it finished
    code, stdout, _ = run(args, capsys)
    assert code == 0 and "Reused 3 finished trials" in stdout
    assert (out / "results.csv").read_text() == first
    code, stdout, _ = run([*args[:-2], "--epochs", "4", "--out", str(out)], capsys)
    assert "Reused" not in stdout  # a changed configuration invalidates the trials


def test_same_seed_gives_every_recipe_the_same_split_and_weights(tmp_path, capsys):
    config = tmp_path / "study.toml"
    config.write_text(
        "recipes = { baseline = [], twin = [] }\nseeds = 2\nepochs = 2\n"
        "train_size = 60\nworkers = 1\n"
    )
    assert run(["compare", "--config", str(config), "--out", str(tmp_path / "o")], capsys)[0] == 0
    rows = read_results(tmp_path / "o")
    by = {}
    for r in rows:
        by.setdefault((r["recipe"], r["seed"]), {})[(r["epoch"], r["split"], r["metric"])] = r[
            "value"
        ]
    assert by[("baseline", "0")] == by[("twin", "0")]
    assert by[("baseline", "1")] == by[("twin", "1")]
    assert by[("baseline", "0")] != by[("baseline", "1")]


def test_parallel_workers_give_the_same_numbers_as_one(tmp_path, capsys):
    args = [
        "compare",
        "--recipes",
        "baseline,dropout",
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--train-size",
        "60",
    ]
    assert run([*args, "--workers", "1", "--out", str(tmp_path / "a")], capsys)[0] == 0
    assert run([*args, "--workers", "2", "--out", str(tmp_path / "b")], capsys)[0] == 0
    a, b = read_results(tmp_path / "a"), read_results(tmp_path / "b")
    assert len(a) == len(b)
    key = lambda r: (r["recipe"], r["seed"], r["epoch"], r["split"], r["metric"])
    b_by = {key(r): float(r["value"]) for r in b}
    for r in a:
        assert float(r["value"]) == pytest.approx(b_by[key(r)], rel=1e-4, abs=1e-6)


def test_report_escapes_user_text(tmp_path, capsys):
    config = tmp_path / "study.toml"
    config.write_text(
        "seeds = 1\nepochs = 1\ntrain_size = 60\nworkers = 1\n"
        '[recipes]\nbaseline = []\n"<script>x</script>" = "l2"\n'
    )
    assert run(["compare", "--config", str(config), "--out", str(tmp_path / "o")], capsys)[0] == 0
    report = (tmp_path / "o" / "report.html").read_text()
    assert "&lt;script&gt;x&lt;/script&gt;" in report and "<script>" not in report


def test_compare_on_regression_data_leaves_label_smoothing_out(tmp_path, capsys):
    code, _stdout, err = run(
        [
            "compare",
            "--data",
            "diabetes",
            "--seeds",
            "2",
            "--epochs",
            "2",
            "--workers",
            "1",
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 0, err
    rows = read_results(tmp_path / "o")
    assert "label_smoothing" not in {r["recipe"] for r in rows}
    assert any(r["metric"] == "r2" and r["split"] == "test" for r in rows)


def _csv(tmp_path, body):
    path = tmp_path / "d.csv"
    path.write_text(body)
    return str(path)


GOOD_CSV = "a,b,y\n" + "".join(f"{i},{i * 2 % 5},{i % 2}\n" for i in range(40))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "mnist"], "The 'data' parameter of compare must be one of 'digits'"),
        (["--model", "resnet"], "The 'model' parameter of compare must be one of 'mlp', 'cnn'"),
        (["--recipes", "l2,magic"], "The 'recipes' parameter of compare must be one of 'baseline'"),
        (
            ["--seeds", "0"],
            "The 'seeds' parameter of compare must be an int in [1, 1000] or 'auto'. Got 0.",
        ),
        (["--epochs", "-3"], "The 'epochs' parameter of compare must be an int in [1, 100000]"),
        (
            ["--label-noise", "1.5"],
            "The 'label_noise' parameter of compare must be a float in [0, 1)",
        ),
        (
            ["--train-size", "5000"],
            "The 'train_size' parameter of compare must be an int in [2, 899]",
        ),
        (["--lr", "0"], "The 'lr' parameter of compare must be a float > 0. Got 0.0."),
        (["--widths", "64,x"], "The 'widths' parameter of compare must be comma-separated ints"),
        (
            ["--model", "cnn", "--data", "wine"],
            "must be 'mlp' or 'linear' for data that are not images",
        ),
        (["--seeds", "two"], "The 'seeds' parameter of compare must be an int in [1, 1000] or"),
        (["--frobnicate"], "No such option '--frobnicate'"),
    ],
)
def test_compare_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    code, _, err = run(["compare", *args, "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert err.startswith("reglab: error: ") and err.count("\n") == 1
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("body", "extra", "message"),
    [
        (
            GOOD_CSV,
            ["--target", "label"],
            "The 'target' parameter of compare must be one of 'a', 'b', 'y'. Got 'label'.",
        ),
        (GOOD_CSV.replace("\n3,", "\nthree,"), ["--target", "y"], "Column 'a' of"),
        (
            GOOD_CSV.replace("\n3,", "\nnan,"),
            ["--target", "y"],
            "has missing values: 'a' (1 row)",
        ),
        ("a,y\n1,0\n2,1\n", ["--target", "y"], "has 2 rows: too few to split"),
    ],
)
def test_compare_bad_csv_is_one_line_and_exit_2(tmp_path, capsys, body, extra, message):
    code, _, err = run(
        ["compare", "--data", _csv(tmp_path, body), *extra, "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and err.count("\n") == 1 and message in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seeds = [1,\n", "is not valid TOML"),
        ("sedes = 3\n", "unknown key 'sedes'; the known keys are data, target"),
        (
            '[recipes]\nmine = [{ type = "L2", strength = -1.0 }]\n',
            "The 'strength' parameter of L2 must be a float >= 0. Got -1.0.",
        ),
        (
            '[recipes]\nmine = [{ type = "EarlyStopping", monitor = "val_acc" }]\n',
            "Recipe 'mine': The 'monitor' parameter of EarlyStopping must be one of",
        ),
    ],
)
def test_compare_bad_toml_is_one_line_and_exit_2(tmp_path, capsys, text, message):
    config = tmp_path / "study.toml"
    config.write_text(text)
    code, _, err = run(["compare", "--config", str(config), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err


def test_compare_out_that_is_a_file_is_rejected(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = run(["compare", *TINY, "--out", str(target)], capsys)
    assert code == 2 and "must be a folder" in err


def test_recipes_lists_builtins_and_regularizer_arguments(capsys):
    code, out, _ = run(["recipes"], capsys)
    assert code == 0
    for name in (
        "augment",
        "mixup",
        "cutmix",
        "cutout",
        "ImageAugment",
        "baseline",
        "l1",
        "l2",
        "weight_decay",
        "dropout",
        "noise",
        "label_smoothing",
        "early_stopping",
        "combined",
        "EarlyStopping",
        "patience",
    ):
        assert name in out
    from reglab import Regularizer

    for name, cls in Regularizer.registry.items():
        if cls.__module__.startswith("reglab.") and name != "Chain":
            assert name in out, f"{name} missing from `reglab recipes`"


def test_every_builtin_regularizer_but_replace_norm_has_a_builtin_recipe():
    from reglab import Regularizer
    from reglab.lab.inputs.recipes import BUILTIN_RECIPES

    used = {s["type"] for _, specs in BUILTIN_RECIPES.values() for s in specs}
    builtin = {n for n, c in Regularizer.registry.items() if c.__module__.startswith("reglab.")} - {
        "Chain"
    }
    # ReplaceNorm needs a model that has norm layers, which no lab model has
    assert builtin - used == {"ReplaceNorm"}


def test_sparse_regression_example_recovers_the_informative_features(tmp_path, capsys):
    example = Path(__file__).resolve().parents[1] / "examples" / "sparse_regression.toml"
    code, stdout, err = run(
        [
            "compare",
            "--config",
            str(example),
            "--seeds",
            "2",
            "--workers",
            "1",
            "--recipes",
            "baseline,l1",
            "--out",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 0, err
    kept = {}
    for r in read_results(tmp_path):
        if r["split"] == "model" and r["metric"] in ("informative_kept", "noise_kept"):
            kept.setdefault((r["recipe"], r["metric"]), []).append(float(r["value"]))
    assert kept[("baseline", "noise_kept")] == [90.0, 90.0]
    assert kept[("l1", "informative_kept")] == [10.0, 10.0]
    assert max(kept[("l1", "noise_kept")]) <= 10
    assert "l1: keeps 10.0 informative" in stdout
    assert "Which inputs survive" in (tmp_path / "report.html").read_text()


def test_augmentation_recipes_run_on_image_data_and_fail_early_on_tables(tmp_path, capsys):
    code, _stdout, err = run(
        [
            "compare",
            "--recipes",
            "baseline,augment,mixup,cutmix,cutout",
            *TINY,
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 0, err
    trials = list(csv.DictReader((tmp_path / "o" / "trials.csv").open()))
    assert len(trials) == 10 and all(t["status"] == "completed" for t in trials)
    code, _, err = run(
        ["compare", "--data", "wine", "--recipes", "cutout", *TINY, "--out", str(tmp_path / "w")],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1
    assert "Recipe 'cutout': The 'image_shape' parameter of Cutout must give (C, H, W)" in err


def test_module_entry_point_runs(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "reglab", "compare", "--data", "nope"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert proc.returncode == 2 and proc.stderr.startswith("reglab: error: ")


@pytest.mark.slow
def test_default_study_shows_a_recipe_closing_the_gap(tmp_path):
    """The main job exactly as a newcomer runs it: `reglab compare` with no arguments."""
    proc = subprocess.run(
        [sys.executable, "-m", "reglab", "compare", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    trials = [json.loads(p.read_text()) for p in (tmp_path / "trials").glob("*.json")]
    assert len(trials) == 60 and all(t["status"] in ("completed", "stopped_early") for t in trials)

    def gap(recipe):
        values = [
            t["final"]["train"]["accuracy"] - t["final"]["test"]["accuracy"]
            for t in trials
            if t["recipe"] == recipe
        ]
        return sum(values) / len(values)

    baseline = gap("baseline")
    assert baseline > 0.15  # 30% label noise: the baseline memorizes
    assert min(gap(r) for r in {t["recipe"] for t in trials}) < baseline - 0.05
    # the default study decides: its answer names recipes that helped, and ones that
    # memorized fewer of the wrong labels than baseline (which memorizes nearly all)
    answer = proc.stdout.split("Wrote ")[1]
    assert "Helped test accuracy: " in answer and "Memorized fewer wrong labels" in answer
    memorized = [t["final"]["train"]["memorized"] for t in trials if t["recipe"] == "baseline"]
    assert min(memorized) > 0.9


def test_a_diverging_recipe_is_reported_and_the_study_carries_on(tmp_path, capsys):
    config = tmp_path / "study.toml"
    config.write_text(
        "seeds = 2\nepochs = 3\ntrain_size = 60\nworkers = 1\n"
        "divergence_threshold = 1000.0\n"
        '[recipes]\nbaseline = []\nwild = [{ type = "GaussianNoise", std = 1e6 }]\n'
    )
    code, stdout, err = run(
        ["compare", "--config", str(config), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 0, err
    assert "wild seed 0 diverged: objective" in stdout
    trials = list(csv.DictReader((tmp_path / "o" / "trials.csv").open()))
    assert {(t["recipe"], t["status"]) for t in trials} == {
        ("baseline", "completed"),
        ("wild", "diverged"),
    }
    summary = list(csv.DictReader((tmp_path / "o" / "summary.csv").open()))
    assert [row["n"] for row in summary] == ["2/2", "0/2"]
    rows = read_results(tmp_path / "o")
    assert all(float(r["value"]) == float(r["value"]) for r in rows)
    assert "diverged" in (tmp_path / "o" / "report.html").read_text()


def _statuses(folder):
    return {(t["recipe"], t["status"]) for t in csv.DictReader((folder / "trials.csv").open())}


def test_dropout_family_recipes_run_on_their_models_with_mc_dropout(tmp_path, capsys):
    cases = [
        (["--model", "cnn", "--recipes", "channel_dropout,drop_block"], "cnn"),
        (["--model", "resmlp", "--widths", "32,32,32", "--recipes", "drop_path,dropconnect"], "r"),
        (["--activation", "selu", "--recipes", "alpha_dropout,gaussian_dropout"], "selu"),
    ]
    for args, name in cases:
        code, _, err = run(["compare", *args, *TINY, "--out", str(tmp_path / name)], capsys)
        assert code == 0, err
        statuses = _statuses(tmp_path / name)
        assert {s for _, s in statuses} == {"completed"}, statuses
        metrics = {(r["recipe"], r["metric"]) for r in read_results(tmp_path / name)}
        for recipe in {r for r, _ in statuses}:
            for m in ("ece", "mc_accuracy", "mc_ece", "mc_std", "mc_loss"):
                assert (recipe, m) in metrics
        assert "MC accuracy" in (tmp_path / name / "report.html").read_text()
    code, _, err = run(
        ["compare", "--recipes", "drop_block", *TINY, "--out", str(tmp_path / "x")], capsys
    )
    assert code == 2 and err.count("\n") == 1
    assert "DropBlock matched no activation module after a convolution" in err


def test_structure_clipping_and_penalty_recipes_run(tmp_path, capsys):
    recipes = "batch_norm,layer_norm,weight_norm,spectral_norm,confidence_penalty,clip_value,agc"
    code, stdout, err = run(
        ["compare", "--recipes", recipes, *TINY, "--out", str(tmp_path)], capsys
    )
    assert code == 0, err
    assert {s for _, s in _statuses(tmp_path)} == {"completed"}
    assert "test ECE" in stdout


def test_averaging_recipes_report_averaged_and_raw_weights(tmp_path, capsys):
    study = tmp_path / "study.toml"
    study.write_text(
        "train_size = 60\nepochs = 4\nseeds = 2\nworkers = 1\n"
        '[recipes]\nbaseline = []\nema = "ema"\nswa = [{ type = "SWA", start = 2 }]\n'
    )
    code, _, err = run(["compare", "--config", str(study), "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    rows = read_results(tmp_path / "o")
    raw = {(r["recipe"], r["seed"]) for r in rows if r["split"] == "test_raw"}
    assert raw == {("ema", "0"), ("ema", "1"), ("swa", "0"), ("swa", "1")}
    values = {
        (r["recipe"], r["seed"], r["split"]): r["value"]
        for r in rows
        if r["epoch"] == "final" and r["metric"] == "loss"
    }
    # averaged and raw weights are different models
    assert values[("swa", "0", "test")] != values[("swa", "0", "test_raw")]
    report = (tmp_path / "o" / "report.html").read_text()
    assert "Weight averaging" in report and "Δ averaged − raw" in report
