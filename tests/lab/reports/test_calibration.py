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
