import re

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes
from sklearn.linear_model import ElasticNet, Lasso, Ridge, lasso_path
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


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_weight_decay_equals_adamw(dtype, tolerance):
    x = torch.randn(64, 5, dtype=dtype, generator=torch.Generator().manual_seed(0))
    y = x[:, :1] * 2
    weights = []
    for use_reglab in (True, False):
        torch.manual_seed(3)
        model = nn.Linear(5, 1).to(dtype)
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
    assert torch.allclose(weights[0], weights[1], rtol=0, atol=tolerance)
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


def _standardized(x, y):
    return StandardScaler().fit_transform(x), (y - y.mean()) / y.std()


@pytest.fixture(scope="module")
def datasets():
    """Two regression sets: diabetes (correlated features, condition number ~470) and the lab's
    sparse_regression (100 features, 10 informative), with the full-batch steps each needs."""
    from reglab.lab.inputs.data import _builtin

    raw = _builtin("sparse_regression")
    return {
        "diabetes": (*_standardized(*load_diabetes(return_X_y=True)), 3000),
        "sparse": (*_standardized(raw.x, raw.y), 800),
    }


def _full_batch(x, y, reg, steps, model=None):
    """Full-batch (proximal) gradient descent on mean squared error, float64, step 1/L;
    continues from ``model`` when given (a warm start)."""
    xt, yt = torch.tensor(x), torch.tensor(y)[:, None]
    step = 1 / (2 * np.linalg.eigvalsh(x.T @ x / len(x)).max())
    if model is None:
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
    return model


def _coef(model):
    return model.weight.detach().numpy().ravel()


def _close(ours, expected):
    return np.abs(ours - expected).max() <= 1e-3 * np.abs(expected).max()


@pytest.mark.parametrize("name", ["diabetes", "sparse"])
@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_l1_matches_sklearn_lasso(datasets, name, alpha):
    x, y, steps = datasets[name]
    expected = Lasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(x, y).coef_
    ours = _coef(_full_batch(x, y, reglab.L1(2 * alpha), steps))  # Lasso alpha = s / 2
    assert np.array_equal(ours == 0, expected == 0)
    assert (expected == 0).sum() >= 2
    assert _close(ours, expected)


@pytest.mark.parametrize("name", ["diabetes", "sparse"])
@pytest.mark.parametrize("alpha", [1.0, 50.0])
def test_l2_matches_sklearn_ridge(datasets, name, alpha):
    x, y, steps = datasets[name]
    expected = Ridge(alpha=alpha, tol=1e-12).fit(x, y).coef_
    ours = _coef(_full_batch(x, y, reglab.L2(2 * alpha / len(x)), steps))  # alpha = n s / 2
    assert _close(ours, expected)


@pytest.mark.parametrize("name", ["diabetes", "sparse"])
@pytest.mark.parametrize(("alpha", "ratio"), [(0.02, 0.5), (0.05, 0.2)])
def test_elastic_net_matches_sklearn(datasets, name, alpha, ratio):
    x, y, steps = datasets[name]
    expected = ElasticNet(alpha=alpha, l1_ratio=ratio, tol=1e-12, max_iter=100_000).fit(x, y)
    ours = _coef(_full_batch(x, y, reglab.ElasticNet(2 * alpha, ratio), steps))
    assert np.array_equal(ours == 0, expected.coef_ == 0)
    assert _close(ours, expected.coef_)


def test_l1_strength_sweep_reproduces_lasso_path_nonzeros(datasets):
    x, y, _ = datasets["sparse"]
    alphas, coefs, _ = lasso_path(
        x, y, alphas=np.geomspace(0.3, 0.003, 8), tol=1e-12, max_iter=100_000
    )
    model, found, expected = None, [], []
    for i, alpha in enumerate(alphas):  # warm start from the previous strength, as glmnet
        model = _full_batch(x, y, reglab.L1(2 * alpha), 600, model)
        found.append(int((_coef(model) != 0).sum()))
        expected.append(int((coefs[:, i] != 0).sum()))
    assert found == expected
    assert expected[0] < expected[-1]


def test_elastic_net_extremes_are_l1_and_l2():
    def one_step(reg):
        model = _linear([1.0, -0.3, 0.02])
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        reg.attach(model, opt)
        model.weight.grad = torch.full((1, 3), 0.1)
        model.bias.grad = torch.zeros(1)
        reg.on_after_backward()
        opt.step()
        reg.on_after_step()
        return model.weight.detach().clone()

    assert torch.equal(one_step(reglab.ElasticNet(0.2, 1.0)), one_step(reglab.L1(0.2)))
    assert torch.allclose(one_step(reglab.ElasticNet(0.2, 0.0)), one_step(reglab.L2(0.2)))


def test_elastic_net_penalty_closed_form():
    model = _linear([1.0, -2.0])
    reg = reglab.ElasticNet(0.4, 0.25)
    reg.attach(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert reg.penalty() == pytest.approx(0.4 * (0.25 * 3 + 0.75 / 2 * 5))


def test_group_lasso_penalty_and_block_soft_thresholding():
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0], [0.3, 0.4]]))
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    reg = reglab.GroupLasso(1.0)
    reg.attach(layer, opt)
    assert reg.penalty() == pytest.approx(2**0.5 * (5.0 + 0.5))
    reg.on_after_step()  # threshold lr * s * sqrt(2) = 0.7071
    expected_row = torch.tensor([3.0, 4.0]) * (1 - 0.5 * 2**0.5 / 5.0)
    assert torch.allclose(layer.weight[0], expected_row)
    assert torch.equal(layer.weight[1], torch.zeros(2))  # the whole unit is exactly zero


def test_group_lasso_switches_off_whole_units_in_training(toy_data):
    train, val = toy_data
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3))
    recipe = reglab.chain(reglab.GroupLasso(0.5))
    history = reglab.fit(model, train, val, recipe=recipe, epochs=40, lr=0.01)
    rows = history.model[0].weight.detach()
    dead = (rows == 0).all(dim=1)
    assert dead.sum() >= 5  # whole hidden units pruned
    assert ((rows == 0) == dead[:, None]).all()  # zeros come by whole rows only
    assert history["val_accuracy"][-1] > 0.75  # the network still works


def test_max_norm_rescales_only_units_above_the_bound():
    conv = nn.Conv2d(1, 3, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.stack([torch.full((1, 2, 2), v) for v in (0.1, 1.0, 5.0)]))
    reg = reglab.MaxNorm(1.0)
    reg.attach(conv)
    before = conv.weight.detach().clone()
    reg.on_after_step()
    norms = conv.weight.detach().flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.tensor([0.2, 1.0, 1.0]))
    assert torch.equal(conv.weight[0], before[0])
    assert reg.penalty() == 0.0


def test_proximal_l1_gives_exact_zeros_with_adam_and_subgradient_does_not(toy_data):
    (x, y), _ = toy_data
    zeros = {}
    for method in ("proximal", "subgradient"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 3))
        history = reglab.fit(
            model,
            (x, y),
            recipe=reglab.chain(reglab.L1(0.5, method=method)),
            epochs=30,
            optimizer="adam",
            lr=0.01,
        )
        weights = reglab.select_params(history.model).params
        zeros[method] = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros["proximal"] > 0.3
    assert zeros["subgradient"] == 0.0


def test_acts_on_reports_the_selection():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    reg = reglab.MaxNorm(2.0)
    reg.attach(model)
    assert reg.acts_on() == "MaxNorm acts on 2 tensors, 48 elements"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: reglab.ElasticNet(0.1, 1.5),
            "'l1_ratio' parameter of ElasticNet must be a float in [0, 1]. Got 1.5.",
        ),
        (lambda: reglab.ElasticNet(-0.1), "'strength' parameter of ElasticNet"),
        (lambda: reglab.GroupLasso(-1.0), "'strength' parameter of GroupLasso"),
        (
            lambda: reglab.MaxNorm(0.0),
            "'max_norm' parameter of MaxNorm must be a float > 0. Got 0.0.",
        ),
        (lambda: reglab.MaxNorm(-2.0), "'max_norm' parameter of MaxNorm"),
    ],
)
def test_family_bad_arguments_are_rejected(make, message):
    with pytest.raises(reglab.ConfigError, match=re.escape(message)):
        make()
