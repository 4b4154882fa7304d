import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import reglab


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def test_fit_records_clean_metrics_per_epoch(toy_data):
    train, val = toy_data
    history = reglab.fit(_model(), train, val, epochs=3)
    assert history.status == "completed" and history.epochs_run == 3
    assert {
        "epoch",
        "objective",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "penalty",
        "lr",
        "seconds",
    } <= set(history.epochs[0])
    final = reglab.evaluate(history.model, val)
    assert history["val_loss"][-1] == pytest.approx(final["loss"])
    assert history["val_accuracy"][-1] == pytest.approx(final["accuracy"])


def test_fit_is_deterministic_for_a_seed(toy_data):
    train, val = toy_data
    recipe = lambda: reglab.chain(reglab.Dropout(0.3), reglab.GaussianNoise(0.2))
    runs = [reglab.fit(_model(), train, val, recipe=recipe(), epochs=4, seed=s) for s in (7, 7, 8)]
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h.epochs]
    assert strip(runs[0]) == strip(runs[1])
    assert strip(runs[0]) != strip(runs[2])


def test_fit_penalty_is_logged(toy_data):
    train, val = toy_data
    history = reglab.fit(_model(), train, val, recipe=reglab.chain(reglab.L2(0.1)), epochs=1)
    weights = reglab.select_params(history.model).params
    expected = 0.05 * sum(float((w.detach() ** 2).sum()) for w in weights)
    assert history["penalty"][-1] == pytest.approx(expected, rel=1e-5)


def test_fit_history_says_what_each_penalty_acts_on(toy_data):
    train, val = toy_data
    recipe = reglab.chain(reglab.L1(0.1), reglab.Dropout(0.1), reglab.MaxNorm(1.0, params="0.*"))
    history = reglab.fit(_model(), train, val, recipe=recipe, epochs=1)
    assert history.acts_on == [
        "L1 acts on 2 tensors, 144 elements",
        "MaxNorm acts on 2 tensors, 112 elements",
    ]


def test_fit_stops_early_and_says_why(toy_data):
    train, val = toy_data
    stopper = reglab.EarlyStopping("val_loss", patience=0, min_delta=10.0)
    history = reglab.fit(_model(), train, val, recipe=reglab.chain(stopper), epochs=50)
    assert history.status == "stopped_early" and history.epochs_run == 2  # epoch 1 sets the best
    assert "did not improve" in history.message


def test_fit_diverged_run_has_status_and_no_nan(toy_data):
    train, val = toy_data
    x, y = train
    history = reglab.fit(_model(), (x * 1e6, y), val, optimizer="sgd", lr=1e6, epochs=20)
    assert history.status == "diverged"
    assert "became" in history.message
    assert all(math.isfinite(v) for e in history.epochs for v in e.values())


def test_fit_regression_reports_r2_and_accepts_a_dataloader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(200, generator=g)
    loader = DataLoader(
        TensorDataset(x[:150], y[:150]),
        batch_size=25,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    torch.manual_seed(0)
    history = reglab.fit(nn.Linear(3, 1), loader, (x[150:], y[150:]), epochs=60, lr=0.05)
    assert history.task == "regression"
    assert history["val_r2"][-1] > 0.95


def test_fit_with_an_optimizer_factory_and_an_instance(toy_data):
    train, val = toy_data
    h1 = reglab.fit(
        _model(), train, val, epochs=2, optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1)
    )
    model = _model()
    h2 = reglab.fit(
        model, train, val, epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.1)
    )
    assert h1["val_loss"] == pytest.approx(h2["val_loss"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "'epochs' parameter of fit must be an int >= 1. Got 0."),
        ({"lr": -1.0}, "'lr' parameter of fit must be a float > 0"),
        ({"batch_size": 0}, "'batch_size' parameter of fit"),
        (
            {"optimizer": "lbfgs"},
            "'optimizer' parameter of fit must be one of 'adam', 'adamw', 'sgd'",
        ),
        ({"recipe": [reglab.L2(0.1)]}, "'recipe' parameter of fit must be a Regularizer"),
    ],
)
def test_fit_rejects_bad_arguments(toy_data, kwargs, message):
    train, val = toy_data
    with pytest.raises(reglab.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        reglab.fit(_model(), train, val, **kwargs)


def test_fit_rejects_mismatched_data():
    with pytest.raises(
        reglab.ConfigError, match="'train' parameter of fit must hold as many targets as inputs"
    ):
        reglab.fit(_model(), (torch.zeros(5, 6), torch.zeros(4, dtype=torch.long)))


def test_history_unknown_key_lists_keys(toy_data):
    train, val = toy_data
    history = reglab.fit(_model(), train, val, epochs=1)
    with pytest.raises(KeyError, match="'val_acc'.*'val_accuracy'"):
        history["val_acc"]


def test_fit_divergence_threshold_stops_with_the_reason(toy_data):
    train, val = toy_data
    history = reglab.fit(_model(), train, val, epochs=5, divergence_threshold=0.01)
    assert history.status == "diverged" and history.epochs_run == 0
    assert (
        history.message.startswith("objective ")
        and "divergence_threshold=0.01 at epoch 1" in history.message
    )
    with pytest.raises(reglab.ConfigError, match="'divergence_threshold' parameter of fit"):
        reglab.fit(_model(), train, val, divergence_threshold=-1.0)
