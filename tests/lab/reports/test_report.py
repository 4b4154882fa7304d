"""The console and the report a practitioner reads (issue 18, the parts built so far)."""

import math
import re

import pytest

from reglab.cli import cli
from reglab.lab.reports.plots import effect_points, plot_effects
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
    assert points == [("dropout", 0.031, pytest.approx(0.019), pytest.approx(0.043), True)]
    assert effect_points(_summary(), "gap") == [
        ("dropout", -0.1, pytest.approx(-0.3), pytest.approx(0.1), False)
    ]
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
        recipes=["baseline", "early_stopping", "dropout"],
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
    assert "Train accuracy and the gap use the labels trained on" in " ".join(text.split())
    assert "up to 6 trials at a time per worker" in text
    # where the data went: seed 0's split of 569 samples (30% test, 20% validation)
    assert "train 284, val 114, test 171" in first


@pytest.mark.parametrize(
    ("model", "recipes", "engine_says", "then"),
    [
        (
            "mlp",
            ["baseline", "l2", "batch_norm"],
            "up to 4 trials at a time per worker (batch_norm: one at a time)",
            "Not batched: batch_norm (the model has buffers",
        ),
        (
            "user_inputs:batchnorm_mlp",
            ["baseline", "l2"],
            "one trial at a time per worker",
            "Not batched: baseline, l2 (the model has buffers",
        ),
    ],
)
def test_the_console_says_one_engine_line_that_is_what_happens(
    tmp_path, model, recipes, engine_says, then
):
    """It said "up to 6 trials at a time per worker" and then "trained one trial at a time"."""
    from rich.console import Console

    from reglab.lab.studies.compare import compare

    console = Console(record=True, width=100)
    compare(
        data="wine", model=model, recipes=recipes, seeds=2, epochs=2, workers=1,
        out=tmp_path, console=console,
    )  # fmt: skip
    text = " ".join(console.export_text().split())
    assert engine_says in text and then in text
    assert ("up to" in text) == engine_says.startswith("up to")


def test_population_trials_report_their_own_seconds(breast_cancer_run):
    run, _, _ = breast_cancer_run
    seconds = {(r["recipe"], r["seed"]): r["seconds"] for r in run.results}
    assert all(s > 0 and math.isfinite(s) for s in seconds.values())
    assert len(set(seconds.values())) == len(seconds)  # not one total split evenly


def test_report_says_label_noise_is_on_at_the_top(breast_cancer_run):
    _, _, out = breast_cancer_run
    page = (out / "report.html").read_text()
    warning = page.index("Label noise is on: 30% of the training labels")
    assert "measured on the labels the model was trained on" in page
    assert "<th>train acc (clean labels)</th>" in page and "<th>memorized</th>" in page
    assert warning < page.index("<h2>Comparison</h2>")
    assert "difference from baseline" in page


def test_report_splits_the_answer_from_the_details_and_marks_what_does_not_apply(
    breast_cancer_run,
):
    _, _, out = breast_cancer_run
    page = (out / "report.html").read_text()
    headline = page.split("<table>")[1].split("</table>")[0]
    assert "<th>test acc</th>" in headline and "Δ test acc vs baseline" in headline
    assert "<th>train acc</th>" in headline and "<th>memorized</th>" in headline
    assert "‖w‖₂" not in headline and "clean labels" not in headline
    details = page.split("<h2>Details</h2>")[1].split("</table>")[0]
    assert "<th>train acc (clean labels)</th>" in details and "<th>epochs</th>" in details
    assert "<td>—</td>" in headline  # baseline has no difference from itself
    column = re.findall(r"<th>(.*?)</th>", details).index("epochs")
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in details.split("<tr>")[2:]]
    epochs = [row[column] for row in cells]
    assert epochs and all(re.fullmatch(r"\d+ ± \d+", e) for e in epochs), epochs
    assert "<td></td>" not in page.split("<h2>Trials</h2>")[0]


def test_report_skips_the_sparsity_chart_when_nothing_is_zero(breast_cancer_run):
    run, _, out = breast_cancer_run
    assert all(r["model"]["zero_fraction"] == 0 for r in run.results)
    page = (out / "report.html").read_text()
    assert "No recipe has a weight that is exactly zero: nothing to show." in page
    assert not (out / "plots" / "sparsity.png").exists()
    assert "<code>train_size</code> = 284" in page  # the value used, not None


_CHECK = """<script>window.addEventListener('load', () => {
  const images = [...document.images];
  document.body.setAttribute('data-check', JSON.stringify({
    width: document.documentElement.scrollWidth,
    images: images.length,
    broken: images.filter(i => !i.complete || i.naturalWidth === 0).length}));
});</script>"""


def test_report_of_the_default_panel_fits_1400_px_in_a_real_browser(tmp_path, chromium):
    import html
    import json
    import subprocess

    from rich.console import Console

    from reglab.lab import DEFAULT_PANEL, compare

    out = tmp_path / "panel"
    compare(recipes=list(DEFAULT_PANEL), seeds=2, epochs=3, workers=1, out=out,
            console=Console(quiet=True))  # fmt: skip
    page = tmp_path / "page.html"
    page.write_text((out / "report.html").read_text() + _CHECK)
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    found = re.search(r'data-check="([^"]*)"', dom)
    assert found, dom[-500:]
    check = json.loads(html.unescape(found.group(1)))
    assert check["width"] <= 1400, f"the page scrolls sideways: {check['width']} px"
    assert check["images"] >= 4 and check["broken"] == 0, check


def test_layer_labels_and_recipes_read_as_a_person_would_write_them(breast_cancer_run):
    import tomllib

    import torch

    from reglab.lab.reports.inspect import layer_label
    from reglab.serialize import recipes_toml

    assert layer_label(1, torch.Size([256, 64])) == "layer 1 (64→256)"
    assert layer_label(2, torch.Size([32, 16, 3, 3])) == "layer 2 (16→32, 3×3)"
    run, _, out = breast_cancer_run
    assert run.results[0]["layers"]["0.weight"] == "layer 1 (30→256)"
    table = recipes_toml(run.recipes)
    assert tomllib.loads(table)["recipes"] == run.recipes  # valid TOML, the same recipes
    page = (out / "report.html").read_text()
    assert "dropout = [{ type = &quot;Dropout&quot;, p = 0.5 }]" in page
    assert "Every recipe uses all 30 inputs" in page


def test_figures_that_do_not_apply_show_a_dash(breast_cancer_run):
    _, _, out = breast_cancer_run
    page = (out / "report.html").read_text()
    uncertainty = page.split("<h2>Calibration and uncertainty</h2>")[1].split("</table>")[0]
    baseline_row = uncertainty.split("<td>baseline</td>")[1].split("</tr>")[0]
    assert baseline_row.count("<td>—</td>") == 4  # MC accuracy, ECE, loss, spread: no dropout


def test_clean_training_labels_differ_exactly_where_the_noise_went():
    from reglab.lab.inputs.data import load_dataset

    data = load_dataset("digits", seed=0, train_size=300, label_noise=0.3)
    x, clean = data.source("train_clean")
    same_x, noisy = data.source("train")
    assert x is same_x and data.noisy
    assert int((clean != noisy).sum()) == data.notes["noisy_labels"] == 90
    quiet = load_dataset("digits", seed=0, train_size=300, label_noise=0.0)
    assert not quiet.noisy and quiet.source("train_clean")[1] is quiet.y_train


def test_gap_uses_the_labels_the_model_was_trained_on(breast_cancer_run):
    from reglab.lab.reports.results import per_trial_figures

    run, _, _ = breast_cancer_run
    for r in run.results:
        figures = per_trial_figures([r], "classification")[0]
        final = r["final"]
        assert figures["gap"] == final["train"]["accuracy"] - final["test"]["accuracy"]
        assert figures["train_clean_accuracy"] == final["train_clean"]["accuracy"]
        assert figures["memorized"] == final["train"]["memorized"]
        assert 0 <= figures["memorized"] <= 1


def test_write_plots_in_a_second_process_writes_the_same_files(breast_cancer_run, tmp_path):
    from reglab.lab.engine.workers import ready, start_server
    from reglab.lab.reports.plots import write_plots
    from reglab.lab.reports.results import comparison

    run = breast_cancer_run[0]
    summary = comparison(run.results, run.task, "baseline")
    here = write_plots(run.results, summary, run.task, tmp_path / "here")
    start_server()
    assert ready()
    there = write_plots(run.results, summary, run.task, tmp_path / "there", parallel=True)
    assert sorted(here) == sorted(there) == ["curves", "effects", "reliability", "weights"]
    for name in here:
        assert here[name].read_bytes() == there[name].read_bytes(), name
