import pytest
import torch
from torch import nn

import reglab
from reglab.lab.reports.calibration import (
    calibration_bins,
    expected_calibration_error,
    raw_weight_metrics,
    uncertainty_figures,
)


def test_ece_closed_form():
    # confidences 0.9 (right), 0.6 (wrong), 0.8 and 0.8 (one right): bins (0.8,0.867],
    # (0.533,0.6], (0.733,0.8] with 15 bins; |1-0.9| + |0-0.6| + |1-1.6| over 4
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.2, 0.8]])
    y = torch.tensor([0, 1, 0, 0])
    assert expected_calibration_error(probs, y) == pytest.approx((0.1 + 0.6 + 0.6) / 4)
    bins = calibration_bins(probs, y)
    assert sum(bins["counts"]) == 4 and bins["counts"][11] == 2  # 0.8 lies in (11/15, 12/15]
    assert bins["correct"][11] == 1.0 and bins["confidence"][11] == pytest.approx(1.6)


def test_ece_is_zero_when_confidence_matches_accuracy():
    probs = torch.tensor([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probs, torch.tensor([0, 0, 0, 1])) == pytest.approx(0.0)


def test_uncertainty_figures_add_mc_dropout_only_for_models_with_dropout():
    torch.manual_seed(0)
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    plain = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    metrics, bins = uncertainty_figures(plain, (x, y), "classification", seed=0)
    assert set(metrics) == {"ece"} and sum(bins["counts"]) == 50
    dropped = reglab.Dropout(0.5).transform_model(plain)
    metrics, _ = uncertainty_figures(dropped, (x, y), "classification", seed=0)
    assert {"ece", "mc_accuracy", "mc_ece", "mc_std", "mc_loss"} <= set(metrics)
    assert metrics["mc_std"] > 0
    assert metrics == uncertainty_figures(dropped, (x, y), "classification", seed=0)[0]
    regressor = reglab.Dropout(0.5).transform_model(
        nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    )
    reg, _ = uncertainty_figures(regressor, (x, torch.randn(50)), "regression", seed=0)
    assert set(reg) == {"mc_loss", "mc_std"}


def test_raw_weight_metrics_evaluates_raw_weights_and_swaps_back():
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    ema = reglab.EMA(0.9)
    recipe = reglab.chain(ema)
    assert raw_weight_metrics(recipe, model, (x, y), "classification") is None
    reglab.fit(model, (x, y), epochs=3, recipe=recipe)
    averaged = model[0].weight.clone()
    raw = raw_weight_metrics(recipe, model, (x, y), "classification")
    assert torch.equal(model[0].weight, averaged) and ema.averaged_in
    ema.swap()
    assert raw == reglab.evaluate(model, (x, y))


def test_mc_rows_keeps_the_passes_within_a_tenth_of_training():
    from reglab.lab.reports.calibration import MC_SAMPLES, mc_rows

    # the default study (digits, 300 training rows, 150 epochs): its whole test set
    assert mc_rows(n_test=539, n_train=300, n_val=359, epochs=150) == 539
    # 100,000 training rows for 3 epochs: 4,400 of 60,000 test rows, 10% of the training
    rows = mc_rows(n_test=60_000, n_train=100_000, n_val=40_000, epochs=3)
    assert rows == 4_400
    assert rows * MC_SAMPLES == pytest.approx(0.1 * 3 * (4 * 100_000 + 40_000))
    assert mc_rows(60_000, 1_000, 400, 1) == 1_000  # never fewer than 1,000 rows
    assert mc_rows(600_000, 1_000_000, 400_000, 50) == 10_000  # never more than 10,000


def test_uncertainty_figures_on_a_sample_are_stratified_deterministic_and_cost_what_they_say():
    from reglab.lab.reports.calibration import MC_SAMPLES, mc_sample

    torch.manual_seed(0)
    x = torch.randn(3000, 4)
    y = (torch.arange(3000) % 10 < 7).long()  # 70% class 1
    model = reglab.Dropout(0.5).transform_model(
        nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    )
    rows_seen = []
    model[0].register_forward_hook(lambda m, inputs, out: rows_seen.append(len(inputs[0])))
    metrics, bins = uncertainty_figures(model, (x, y), "classification", seed=3, rows=500)
    assert sum(bins["counts"]) == 3000  # calibration on every row
    assert rows_seen == [3000] + [500] * MC_SAMPLES  # one pass for ECE, then 30 on the sample
    chosen = mc_sample(y, 500, "classification", seed=3)
    assert len(chosen) == 500 and (y[chosen] == 0).sum() == 150  # the classes' shares kept
    assert torch.equal(chosen, mc_sample(y, 500, "classification", seed=3))
    assert not torch.equal(chosen, mc_sample(y, 500, "classification", seed=4))
    again, _ = uncertainty_figures(model, (x, y), "classification", seed=3, rows=500)
    assert again == metrics  # the same seed, the same figures
    everything, _ = uncertainty_figures(model, (x, y), "classification", seed=3)
    assert everything["ece"] == metrics["ece"] and everything["mc_std"] != metrics["mc_std"]


def test_uncertainty_report_says_which_rows_the_mc_figures_used():
    from reglab.lab.reports.calibration import uncertainty_html

    final = {"test": {"ece": 0.1, "mc_accuracy": 0.8, "mc_ece": 0.1, "mc_loss": 0.5, "mc_std": 0.2}}
    results = [
        {"recipe": "dropout", "seed": s, "final": final, "mc_sample": {"rows": 4400, "of": 60000}}
        for s in range(2)
    ]
    text = uncertainty_html(results, "classification")
    assert "a stratified sample of 4,400 of the 60,000 test rows" in text
    whole = [{**r, "mc_sample": {"rows": 539, "of": 539}} for r in results]
    assert "stratified sample" not in uncertainty_html(whole, "classification")
