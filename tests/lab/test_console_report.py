"""The console and the report a practitioner reads (issue 18, the parts built so far)."""

import math

import pytest

from reglab.cli import cli
from reglab.lab.reports.report import effect_points, plot_effects
from reglab.lab.reports.stats import Estimate, Paired, RecipeSummary


def _summary():
    own = {"test_accuracy": Estimate(0.80, 0.05, 3), "gap": Estimate(0.2, 0.05, 3)}
    return [
        RecipeSummary("baseline", 3, 3, own),
        RecipeSummary(
            "dropout",
            3,
            3,
            {"test_accuracy": Estimate(0.83, 0.09, 3), "gap": Estimate(0.1, 0.04, 3)},
            {
                "test_accuracy": Paired(Estimate(0.031, 0.012, 3), 0.01, 0.02),
                "gap": Paired(Estimate(-0.1, 0.2, 3), 0.3, 0.3),
            },
        ),
    ]


def test_effect_points_are_paired_differences_not_each_recipes_own_interval():
    points = effect_points(_summary(), "test_accuracy")
    # dropout's own interval (0.83 ± 0.09) overlaps baseline; its paired difference does not
    assert points == [("dropout", 0.031, 0.012, True)]
    assert effect_points(_summary(), "gap") == [("dropout", -0.1, 0.2, False)]
    assert effect_points(_summary(), "test_accuracy", baseline="none") == points


def test_plot_effects_draws_a_png(tmp_path):
    plot_effects(_summary(), "classification", tmp_path / "e.png")
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"


def test_help_shows_every_command_description_whole():
    from click.testing import CliRunner

    text = CliRunner().invoke(cli, ["--help"], terminal_width=80).output
    commands = text.split("Commands:")[1]
    assert "..." not in commands
    assert "Train a model under recipes and seeds; report what each one does." in commands


@pytest.fixture(scope="module")
def breast_cancer_run(tmp_path_factory):
    from rich.console import Console

    from reglab.lab import compare

    out = tmp_path_factory.mktemp("bc")
    console = Console(record=True, width=100)
    run = compare(
        data="breast_cancer",
        recipes=["baseline", "early_stopping"],
        seeds=2,
        epochs=12,
        workers=1,
        out=out,
        console=console,
    )
    return run, console.export_text(), out


def test_compare_says_what_it_wrote_and_what_the_train_size_became(breast_cancer_run):
    _, text, _ = breast_cancer_run
    for name in ("results.csv", "report.html", "plots/", "trials/", "reglab-study.json"):
        assert name in text.split("Wrote")[1]
    assert "breast_cancer has 284 training samples" in text and "all 284 are used" in text
    first = text.strip().splitlines()[0]
    assert "30% label noise" in first and len(first) <= 100
    assert "up to 4 trials at a time per worker" in text


def test_population_trials_report_their_own_seconds(breast_cancer_run):
    run, _, _ = breast_cancer_run
    seconds = {(r["recipe"], r["seed"]): r["seconds"] for r in run.results}
    assert all(s > 0 and math.isfinite(s) for s in seconds.values())
    assert len(set(seconds.values())) == len(seconds)  # not one total split evenly


def test_report_says_label_noise_is_on_at_the_top(breast_cancer_run):
    _, _, out = breast_cancer_run
    page = (out / "report.html").read_text()
    warning = page.index("Label noise is on: 30% of the training labels")
    assert warning < page.index("<h2>Comparison</h2>")
    assert "difference from baseline" in page
