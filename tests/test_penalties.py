import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Lasso, Ridge
from sklearn.preprocessing import StandardScaler
from torch import nn

import reglab


def _linear(w: list[float]) -> nn.Module:
    model = nn.Linear(len(w), 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([w]))
        model.bias.fill_(5.0)  # never penalized by default
    return model


def test_l2_penalty_value_closed_form():
    model = _linear([1.0, -2.0, 3.0])
    reg = reglab.L2(0.1)
    reg.attach(model)
    assert reg.penalty() == pytest.approx(0.1 / 2 * 14)
    keras = reglab.L2(0.1, convention="keras")
    keras.attach(model)
    assert keras.penalty() == pytest.approx(0.1 * 14)


def test_l1_penalty_value_closed_form():
    model = _linear([1.0, -2.0, 3.0])
    reg = reglab.L1(0.1, method="subgradient")
    reg.attach(model)
    assert reg.penalty() == pytest.approx(0.6)


@pytest.mark.parametrize(("convention", "factor"), [("reglab", 1.0), ("keras", 2.0)])
def test_l2_adds_its_exact_gradient(convention, factor):
    model = _linear([1.0, -2.0, 3.0])
    reg = reglab.L2(0.1, convention=convention)
    reg.attach(model)
    model.weight.grad = torch.tensor([[0.5, 0.5, 0.5]])
    model.bias.grad = torch.tensor([0.5])
    reg.on_after_backward()
    expected = torch.tensor([[0.5, 0.5, 0.5]]) + factor * 0.1 * torch.tensor([[1.0, -2.0, 3.0]])
    assert torch.allclose(model.weight.grad, expected)
    assert model.bias.grad.item() == 0.5


def test_l2_equals_sgd_weight_decay_over_training():
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    y = x.sum(1, keepdim=True)
    params = []
    for use_reglab in (True, False):
        torch.manual_seed(3)
        model = nn.Linear(5, 1, bias=False)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=0.0 if use_reglab else 0.3)
        reg = reglab.L2(0.3)
        reg.attach(model, opt)
        for _ in range(20):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            if use_reglab:
                reg.on_after_backward()
            opt.step()
        params.append(model.weight.detach())
    assert torch.allclose(params[0], params[1], atol=1e-6)


def test_l1_subgradient_adds_strength_times_sign():
    model = _linear([1.0, -2.0, 0.0])
    reg = reglab.L1(0.1, method="subgradient")
    reg.attach(model)
    model.weight.grad = torch.zeros(1, 3)
    reg.on_after_backward()
    assert torch.allclose(model.weight.grad, torch.tensor([[0.1, -0.1, 0.0]]))


def test_l1_proximal_step_is_soft_thresholding_with_the_learning_rate():
    model = _linear([1.0, -0.04, 0.02, -3.0])
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    reg = reglab.L1(0.1)
    reg.attach(model, opt)
    model.weight.grad = torch.zeros(1, 4)
    model.bias.grad = torch.zeros(1)
    reg.on_after_backward()  # no gradient term in proximal mode
    assert torch.equal(model.weight.grad, torch.zeros(1, 4))
    opt.step()
    reg.on_after_step()  # threshold lr * strength = 0.05
    assert torch.allclose(model.weight, torch.tensor([[0.95, 0.0, 0.0, -2.95]]))
    assert (model.weight == 0).sum() == 2  # exact zeros
    assert model.bias.item() == 5.0


def test_l1_proximal_follows_a_changed_learning_rate():
    model = _linear([1.0])
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    reg = reglab.L1(0.1)
    reg.attach(model, opt)
    opt.param_groups[0]["lr"] = 1.0
    reg.on_after_step()
    assert model.weight.item() == pytest.approx(0.9)


def test_l1_proximal_needs_an_optimizer():
    with pytest.raises(reglab.ConfigError, match="'optimizer' parameter of L1.attach"):
        reglab.L1(0.1).attach(_linear([1.0]))


def test_weight_decay_equals_adamw():
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))
    y = x[:, :1] * 2
    weights = []
    for use_reglab in (True, False):
        torch.manual_seed(3)
        model = nn.Linear(5, 1)
        if use_reglab:
            opt = torch.optim.Adam(model.parameters(), lr=0.01)
            reg = reglab.WeightDecay(0.5, params="all")
            reg.attach(model, opt)
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.5)
        for _ in range(30):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            if use_reglab:
                reg.on_after_backward()
            opt.step()
        weights.append(torch.cat([p.detach().ravel() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-6)
    assert reglab.WeightDecay(0.5).penalty() == 0.0


@pytest.mark.parametrize(
    "make", [lambda: reglab.L1(-0.1), lambda: reglab.L2(-1.0), lambda: reglab.WeightDecay(-0.5)]
)
def test_negative_strength_is_rejected(make):
    with pytest.raises(reglab.ConfigError, match="must be a float >= 0. Got -"):
        make()


def test_unknown_convention_and_method_are_rejected():
    with pytest.raises(
        reglab.ConfigError,
        match="'convention' parameter of L2 must be one of 'reglab', 'keras'. Got 'tf'.",
    ):
        reglab.L2(0.1, convention="tf")
    with pytest.raises(reglab.ConfigError, match="'method' parameter of L1"):
        reglab.L1(0.1, method="ista")


def test_penalty_selection_matching_nothing_fails_at_attach():
    with pytest.raises(reglab.ConfigError, match="'params' parameter of L2 matched no"):
        reglab.L2(0.1, params="conv.*").attach(_linear([1.0]))


# --- agreement with scikit-learn on the same standardized data -------------------------------


@pytest.fixture(scope="module")
def diabetes():
    x, y = load_diabetes(return_X_y=True)
    x = StandardScaler().fit_transform(x)
    y = (y - y.mean()) / y.std()
    return x, y


def _full_batch(x, y, reg, steps):
    """Full-batch (proximal) gradient descent on mean squared error, float64, step 1/L."""
    xt, yt = torch.tensor(x), torch.tensor(y)[:, None]
    step = 1 / (2 * np.linalg.eigvalsh(x.T @ x / len(x)).max())
    model = nn.Linear(x.shape[1], 1).double()
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    opt = torch.optim.SGD(model.parameters(), lr=step)
    reg.attach(model, opt)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(xt), yt).backward()
        reg.on_after_backward()
        opt.step()
        reg.on_after_step()
    return model.weight.detach().numpy().ravel()


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_l1_matches_sklearn_lasso(diabetes, alpha):
    x, y = diabetes
    expected = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(x, y).coef_
    ours = _full_batch(x, y, reglab.L1(2 * alpha), steps=3000)  # Lasso alpha = s / 2
    assert np.array_equal(ours == 0, expected == 0)
    assert (expected == 0).sum() >= 2
    assert np.abs(ours - expected).max() <= 1e-3 * np.abs(expected).max()


@pytest.mark.parametrize("alpha", [1.0, 50.0])
def test_l2_matches_sklearn_ridge(diabetes, alpha):
    x, y = diabetes
    expected = Ridge(alpha=alpha, tol=1e-12).fit(x, y).coef_
    ours = _full_batch(x, y, reglab.L2(2 * alpha / len(x)), steps=3000)  # Ridge alpha = n s / 2
    assert np.abs(ours - expected).max() <= 1e-3 * np.abs(expected).max()


def test_weight_decay_on_float64_matches_adamw_to_float64_precision():
    x = torch.randn(32, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    weights = []
    for use_reglab in (True, False):
        torch.manual_seed(3)
        model = nn.Linear(4, 1).double()
        if use_reglab:
            opt = torch.optim.Adam(model.parameters(), lr=0.01)
            reg = reglab.WeightDecay(0.3, params="all")
            reg.attach(model, opt)
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.3)
        for _ in range(10):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            if use_reglab:
                reg.on_after_backward()
            opt.step()
        weights.append(torch.cat([p.detach().ravel() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], rtol=0, atol=1e-12)
