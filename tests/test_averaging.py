"""EMA and SWA: the averages against hand computations, the swap, state_dict, BatchNorm update."""

import pytest
import torch
from torch import nn

import reglab


def _linear():
    torch.manual_seed(0)
    return nn.Linear(3, 2)


def _set(model, value):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_ema_follows_the_warmup_formula_and_swaps_in_at_fit_end():
    model = _linear()
    _set(model, 0.0)
    ema = reglab.EMA(0.9)
    ema.attach(model)
    expected = None
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0]):
        _set(model, value)
        ema.on_after_step()
        d = min(0.9, (1 + step) / (10 + step))
        expected = value if expected is None else d * expected + (1 - d) * value
    ema.on_fit_end()
    assert ema.averaged_in
    torch.testing.assert_close(model.weight, torch.full((2, 3), expected))
    ema.swap()  # back to the raw weights
    assert torch.equal(model.weight, torch.full((2, 3), 5.0)) and not ema.averaged_in


def test_ema_without_warmup_uses_the_decay_from_the_start():
    model = _linear()
    _set(model, 0.0)
    ema = reglab.EMA(0.5, warmup=False)
    ema.attach(model)
    _set(model, 4.0)
    ema.on_after_step()  # the first update copies: 4, not 0.5 * 0 + 0.5 * 4
    _set(model, 2.0)
    ema.on_after_step()
    ema.on_fit_end()
    torch.testing.assert_close(model.bias, torch.full((2,), 3.0))  # 4 -> 3


def test_ema_without_warmup_equals_averaged_model_buffers_included():
    """docs/conventions.md: EMA(decay, warmup=False) is AveragedModel with the EMA multi_avg_fn
    and use_buffers=True. PyTorch copies the weights at the first update; reglab averaged from
    the weights at attach."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    theirs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.8), use_buffers=True)
    ema = reglab.EMA(0.8, warmup=False)
    ema.attach(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(1)
    for _ in range(7):
        x, y = torch.randn(32, 4, generator=g) * 2, torch.randint(0, 2, (32,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        ema.on_after_step()
        theirs.update_parameters(model)
    ema.on_fit_end()
    ours = dict(model.named_parameters()) | dict(model.named_buffers())
    reference = dict(theirs.module.named_parameters()) | dict(theirs.module.named_buffers())
    floating = [k for k, v in ours.items() if v.is_floating_point()]
    assert "1.running_mean" in floating and "1.running_var" in floating
    for k in floating:
        torch.testing.assert_close(ours[k], reference[k], rtol=1e-6, atol=1e-7)


def test_swa_is_the_mean_of_epoch_end_weights_from_start_on():
    model = _linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    swa = reglab.SWA(start=3, lr=0.01)
    swa.attach(model, opt)
    for epoch, value in enumerate([1.0, 2.0, 3.0, 4.0, 8.0], start=1):
        _set(model, value)
        swa.on_epoch_end({"epoch": epoch})
        assert opt.param_groups[0]["lr"] == (0.01 if epoch >= 2 else 0.1)
    assert swa.logs() == {"averaged_updates": 3.0}
    swa.on_fit_end()
    torch.testing.assert_close(model.weight, torch.full((2, 3), 5.0))  # mean of 3, 4, 8


def test_swa_that_never_started_leaves_the_model_alone():
    model = _linear()
    before = model.weight.clone()
    swa = reglab.SWA(start=10)
    swa.attach(model)
    swa.on_epoch_end({"epoch": 1})
    swa.on_fit_end()
    assert torch.equal(model.weight, before) and not swa.averaged_in


def test_swa_recomputes_batchnorm_statistics_for_the_averaged_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    x, y = torch.randn(256, 4) * 3 + 1, torch.randint(0, 2, (256,))
    swa = reglab.SWA(start=2)
    reglab.fit(model, (x, y), epochs=4, recipe=reglab.chain(swa))
    assert swa.updates == 3 and swa.averaged_in
    # after the update, BatchNorm holds the statistics of the averaged first layer's outputs
    with torch.no_grad():
        h = model[0](x)
    torch.testing.assert_close(model[1].running_mean, h.mean(0), atol=1e-4, rtol=1e-4)
    # the mean of the batches' (unbiased) variances, close to the variance of all of them
    torch.testing.assert_close(model[1].running_var, h.var(0), atol=0, rtol=0.05)


@pytest.mark.parametrize("make", [lambda: reglab.EMA(0.9), lambda: reglab.SWA(start=1)])
def test_averaging_state_dict_round_trips(make):
    model = _linear()
    reg = make()
    reg.attach(model)
    for value in (1.0, 2.0, 6.0):
        _set(model, value)
        reg.on_after_step()
        reg.on_epoch_end({"epoch": int(value)})
    state = reg.state_dict()
    other = make()
    other.attach(_linear())
    other.load_state_dict(state)
    assert other.updates == reg.updates
    for a, b in zip(other.state_dict()["averaged"], state["averaged"], strict=True):
        assert torch.equal(a, b)
    assert make().get_config() == reg.get_config()  # arguments stay as given
    with pytest.raises(reglab.ConfigError, match="from the same model"):
        wrong = make()
        wrong.attach(nn.Linear(5, 5))
        wrong.load_state_dict(state)


def test_averaging_before_attach_is_a_config_error():
    with pytest.raises(reglab.ConfigError, match="EMA.state_dict must be attached"):
        reglab.EMA(0.9).state_dict()


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: reglab.EMA(1.0), "decay"),
        (lambda: reglab.EMA(0.0), "decay"),
        (lambda: reglab.EMA(0.9, warmup="yes"), "warmup"),
        (lambda: reglab.SWA(start=0), "start"),
        (lambda: reglab.SWA(start=5, lr=0.0), "lr"),
        (lambda: reglab.SWA(start=5, bn_samples=0), "bn_samples"),
    ],
)
def test_averaging_rejects_bad_arguments(make, argument):
    with pytest.raises(reglab.ConfigError, match=f"'{argument}' parameter of"):
        make()


def test_ema_smooths_noisy_sgd_towards_the_optimum():
    # SGD with a large step rattles around the least-squares solution; the average sits closer
    torch.manual_seed(0)
    x = torch.randn(512, 5)
    w = torch.randn(5, 1)
    y = x @ w + 0.5 * torch.randn(512, 1)
    solution = torch.linalg.lstsq(x, y).solution.T

    def error(recipe):
        model = nn.Linear(5, 1, bias=False)
        reglab.fit(
            model, (x, y), epochs=30, recipe=recipe, optimizer="sgd", lr=0.05, batch_size=8, seed=1
        )
        return (model.weight - solution).norm().item()

    assert error(reglab.chain(reglab.EMA(0.99))) < 0.5 * error(None)
