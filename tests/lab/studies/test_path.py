"""`reglab path`: the grid, the one-standard-error choice, warm starts, outputs, bad input."""

import csv

import pytest

from reglab.lab.studies.dimensions import Dimension
from reglab.lab.studies.path import PathConfig, PathRun, choose, edge_note, grid

SMALL = ["--train-size", "60", "--batch-size", "16", "--workers", "1"]


def test_grid_runs_from_strong_to_weak_on_a_log_scale():
    values = grid(Dimension("strength", 0, "strength", 1e-4, 1.0, True, False), 5)
    assert values == pytest.approx([1.0, 1e-1, 1e-2, 1e-3, 1e-4])
    patience = grid(Dimension("patience", 0, "patience", 2, 32, True, True), 5)
    assert patience == [32, 16, 8, 4, 2]


def test_choose_picks_the_best_and_the_strongest_within_one_standard_error():
    rows = [
        {"strength": s, "val_loss": v}
        for s, values in ((1.0, (1.10, 1.00)), (0.1, (1.05, 0.95)), (0.01, (1.30, 1.20)))
        for v in values
    ]
    choice = choose(rows)
    # means 1.05, 1.00, 1.25; the best's standard error is 0.05, so 1.0 (mean 1.05) qualifies
    assert choice["best"] == 0.1
    assert choice["one_se"] == 1.0
    assert choice["stats"][0.1] == pytest.approx((1.0, 0.05))
    rows[0]["val_loss"] = 1.2  # mean 1.15: outside, so the best is the choice
    assert choose(rows)["one_se"] == 0.1


@pytest.mark.parametrize(
    ("best", "one_se", "expected"),
    [
        (0.1, 0.1, "The best strength is the strongest tried (0.1): widen the range, the best "
         "strength may lie beyond 0.1."),
        (0.01, 0.1, "The one-standard-error choice is the strongest tried (0.1): widen the "
         "range, the best strength may lie beyond 0.1."),
        (1e-4, 1e-4, "The best strength is the weakest tried (0.0001): widen the range, the "
         "best strength may lie below 0.0001."),
        (1e-3, 1e-2, None),
    ],
)  # fmt: skip
def test_edge_note_says_when_the_choice_is_an_end_of_the_grid(best, one_se, expected):
    assert edge_note({"best": best, "one_se": one_se}, 0.1, 1e-4) == expected


def test_path_report_says_to_widen_the_range_when_the_strongest_end_wins(tmp_path):
    from reglab.lab.studies.path_report import write_path_outputs

    config = PathConfig("l2", "strength=1e-4:1e-1", seeds=2, points=2)
    rows = [
        {"strength": s, "seed": seed, "val_loss": loss, "train_loss": loss, "zero_fraction": 0.0,
         "weight_l2": 1.0}
        for s, losses in ((0.1, (0.5, 0.6)), (1e-4, (0.9, 1.0)))
        for seed, loss in enumerate(losses)
    ]  # fmt: skip
    run = PathRun(config, rows, choose(rows), 1.0)
    assert run.edge is not None and run.edge.endswith("may lie beyond 0.1.")
    report = write_path_outputs(run, tmp_path)["path_report.html"].read_text()
    assert "widen the range, the best strength may lie beyond 0.1." in report


def test_path_writes_csv_plot_report_and_warm_starts_help(tmp_path, cli):
    args = ["path", "--recipe", "l1", "--param", "strength=1e-3:3e-2", "--points", "3"]
    args += ["--seeds", "2", "--epochs", "12", *SMALL]
    code, out, err = cli([*args, "--out", str(tmp_path / "warm")])
    assert code == 0, err
    assert "best" in out and "1-SE" in out
    warm = list(csv.DictReader((tmp_path / "warm" / "path.csv").open()))
    assert len(warm) == 6
    assert [float(r["strength"]) for r in warm[:3]] == pytest.approx([3e-2, 5.477e-3, 1e-3], 1e-3)
    assert [int(r["epochs"]) for r in warm[:3]] == [12, 4, 4]  # later points: a third
    assert (tmp_path / "warm" / "plots" / "path.png").is_file()
    assert "one-standard-error" in (tmp_path / "warm" / "path_report.html").read_text()
    code, _, err = cli([*args, "--cold", "--out", str(tmp_path / "cold")])
    assert code == 0, err
    cold = list(csv.DictReader((tmp_path / "cold" / "path.csv").open()))
    assert [int(r["epochs"]) for r in cold[:3]] == [12, 12, 12]
    for w, c in zip(warm, cold, strict=True):
        if float(w["strength"]) < 3e-2:  # a warm start begins where the previous fit ended
            assert float(w["first_train_loss"]) < 0.7 * float(c["first_train_loss"])
        else:
            assert w["first_train_loss"] == c["first_train_loss"]


def test_path_warm_starts_a_study_file_recipe_that_adds_parameters(tmp_path, cli):
    # InsertNorm gives the model new parameters: each later point starts from the previous
    # fit's weights in that structure, norm included (it used to stop with an error)
    config = tmp_path / "study.toml"
    config.write_text(
        'epochs = 9\n[recipes]\nbn_l2 = [{type = "InsertNorm", kind = "batch"}, '
        '{type = "L2", strength = 0.01}]\n'
    )
    args = ["path", "--config", str(config), "--recipe", "bn_l2", "--param", "strength=1e-3:1e-1"]
    args += ["--points", "2", "--seeds", "1", *SMALL]
    rows = {}
    for mode in ("warm", "cold"):
        extra = ["--cold"] if mode == "cold" else []
        code, _, err = cli([*args, *extra, "--out", str(tmp_path / mode)])
        assert code == 0, err
        rows[mode] = list(csv.DictReader((tmp_path / mode / "path.csv").open()))
    assert [int(r["epochs"]) for r in rows["warm"]] == [9, 3]  # the file's epochs, then a third
    assert rows["warm"][0]["first_train_loss"] == rows["cold"][0]["first_train_loss"]
    warm, cold = (float(rows[m][1]["first_train_loss"]) for m in ("warm", "cold"))
    assert warm < 0.7 * cold


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--param", "strength=1e-3:1", "--points", "1"], "'points' parameter of path"),
        (["--param", "strength=0:1:linear"], "must be a log-scale range"),
        (["--param", "alpha=1e-3:1"], "tunable argument of recipe 'l1' (L1.strength, strength)"),
    ],
)
def test_path_bad_input_is_one_line(tmp_path, cli, extra, message):
    code, _, err = cli(["path", "--recipe", "l1", *extra, "--out", str(tmp_path / "p")])
    assert code == 2 and err.count("\n") == 1
    assert message in err
