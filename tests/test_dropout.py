import pytest
import torch
from torch import nn

import reglab
from reglab.drop import DropoutLayer


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.7])
def test_dropout_drop_rate_and_mean_within_tolerance(p):
    x = torch.ones(200_000)
    y = reglab.dropout(x, p, generator=_gen())
    # binomial sd of the rate is sqrt(p(1-p)/n) < 0.0012: 5 sd
    assert (y == 0).float().mean().item() == pytest.approx(p, abs=0.006)
    values = torch.unique(y).tolist()
    assert values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - p)) and len(values) == 2
    assert y.mean().item() == pytest.approx(1.0, abs=0.02)


def test_dropout_is_identity_in_eval_and_at_p_zero():
    x = torch.randn(100)
    assert reglab.dropout(x, 0.5, training=False) is x
    assert torch.equal(reglab.dropout(x, 0.0, generator=_gen()), x)


def test_dropout_is_deterministic_given_a_generator():
    x = torch.randn(1000)
    assert torch.equal(
        reglab.dropout(x, 0.5, generator=_gen(1)), reglab.dropout(x, 0.5, generator=_gen(1))
    )
    assert not torch.equal(
        reglab.dropout(x, 0.5, generator=_gen(1)), reglab.dropout(x, 0.5, generator=_gen(2))
    )


def test_dropout_accepts_per_member_tensor_p():
    x = torch.ones(2, 100_000)
    p = torch.tensor([[0.0], [0.5]])
    y = reglab.dropout(x, p, generator=_gen())
    assert torch.equal(y[0], x[0])
    assert (y[1] == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_dropout_layer_module_and_repr():
    layer = DropoutLayer(0.25)
    assert "p=0.25" in repr(layer)
    layer.eval()
    x = torch.randn(10)
    assert torch.equal(layer(x), x)
    with pytest.raises(reglab.ConfigError, match="'p' parameter of DropoutLayer"):
        DropoutLayer(1.0)


def _rate(y):
    return (y == 0).float().mean().item()


def test_channel_dropout_drops_whole_channels_at_rate_p():
    x = torch.ones(400, 64, 3, 3)
    y = reglab.channel_dropout(x, 0.3, generator=_gen())
    per_channel = y.flatten(2)
    # every channel is all zeros or all 1/(1-p)
    assert torch.equal(per_channel.amin(2), per_channel.amax(2))
    assert _rate(per_channel[:, :, 0]) == pytest.approx(0.3, abs=0.01)  # sd 0.0011
    assert y.mean().item() == pytest.approx(1.0, abs=0.02)
    assert torch.equal(reglab.channel_dropout(x, 0.3, training=False), x)


def test_drop_path_keeps_or_drops_each_sample_whole():
    x = torch.ones(20_000, 5)
    y = reglab.drop_path(x, 0.25, generator=_gen())
    assert torch.equal(y.amin(1), y.amax(1))
    assert _rate(y[:, 0]) == pytest.approx(0.25, abs=0.015)  # sd 0.003
    assert y.mean().item() == pytest.approx(1.0, abs=0.03)
    assert reglab.drop_path(x, 0.25, training=False) is x


def test_gaussian_dropout_has_dropouts_mean_and_variance():
    x = torch.ones(400_000)
    y = reglab.gaussian_dropout(x, 0.5, generator=_gen())
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    assert y.var().item() == pytest.approx(0.5 / 0.5, rel=0.02)  # p/(1-p), as inverted dropout
    assert reglab.gaussian_dropout(x, 0.5, training=False) is x


def test_alpha_dropout_keeps_zero_mean_unit_variance_and_agrees_with_torch():
    x = torch.randn(400_000, generator=_gen(1))
    y = reglab.alpha_dropout(x, 0.2, generator=_gen())
    assert y.mean().item() == pytest.approx(0.0, abs=0.01)
    assert y.std().item() == pytest.approx(1.0, abs=0.01)
    torch.manual_seed(0)
    theirs = torch.nn.functional.alpha_dropout(x, 0.2, training=True)
    # both map a dropped value to the same constant a*alpha' + b
    assert torch.unique(y[y.lt(-1.0) & (x > 0)]).numel() == 1
    assert torch.unique(y[y.lt(-1.0) & (x > 0)]).item() == pytest.approx(
        torch.unique(theirs[theirs.lt(-1.0) & (x > 0)]).item(), rel=1e-5
    )


def _opening(dropped, k):
    """Morphological opening: what remains of ``dropped`` made of whole k x k squares."""
    eroded = -nn.functional.max_pool2d(-dropped, k, stride=1)
    return nn.functional.max_pool2d(nn.functional.pad(eroded, (k - 1,) * 4), k, stride=1)


@pytest.mark.parametrize("block", [1, 3, 5])
def test_drop_block_drops_about_p_in_whole_blocks(block):
    x = torch.ones(64, 8, 32, 32)
    y = reglab.drop_block(x, 0.1, block, generator=_gen())
    dropped = (y == 0).float()
    assert dropped.mean().item() == pytest.approx(0.1, abs=0.015)
    assert torch.equal(_opening(dropped, block), dropped)  # every zero lies in a whole block
    # each sample's mean is preserved exactly by the rescaling
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), torch.ones(64))
    assert reglab.drop_block(x, 0.1, block, training=False) is x


def test_drop_block_rejects_flat_input_in_one_line():
    with pytest.raises(reglab.ConfigError, match=r"'x' parameter of drop_block .* \(32, 10\)"):
        reglab.drop_block(torch.ones(32, 10), 0.1)


def test_drop_connect_masks_weights_once_per_forward():
    torch.manual_seed(0)
    linear = nn.Linear(50, 40)
    layer = reglab.DropConnectLinear.from_linear(linear, 0.5, generator=_gen())
    assert layer.weight is linear.weight and layer.bias is linear.bias
    x = torch.eye(50)  # row i of the output sees column i of the masked weights
    out = layer(x) - linear.bias
    kept = (out != 0).float()
    assert kept.mean().item() == pytest.approx(0.5, abs=0.05)
    torch.testing.assert_close(out[kept.bool()], 2 * linear.weight.T[kept.bool()])
    layer.eval()
    torch.testing.assert_close(layer(x), linear(x))
    assert "p=0.5" in repr(layer)


@pytest.mark.parametrize(
    "layer_type",
    [
        reglab.ChannelDropoutLayer,
        reglab.GaussianDropoutLayer,
        reglab.AlphaDropoutLayer,
        reglab.DropPathLayer,
        reglab.DropBlockLayer,
    ],
)
def test_dropout_modules_are_identity_in_eval_and_seeded_in_training(layer_type):
    x = torch.randn(4, 3, 8, 8)
    layer = layer_type(0.3, generator=_gen())
    assert "p=0.3" in repr(layer)
    a = layer(x)
    layer.generator = _gen()
    assert torch.equal(layer(x), a) and not torch.equal(a, x)
    layer.eval()
    assert torch.equal(layer(x), x)
    with pytest.raises(reglab.ConfigError, match=f"'p' parameter of {layer_type.__name__}"):
        layer_type(1.0)


def test_drop_block_layer_rejects_block_size_below_one():
    with pytest.raises(reglab.ConfigError, match="'block_size' parameter of DropBlockLayer"):
        reglab.DropBlockLayer(0.1, block_size=0)


def test_mc_predict_keeps_dropout_on_and_batchnorm_in_eval():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 32), nn.BatchNorm1d(32), nn.ReLU(), DropoutLayer(0.5), nn.Linear(32, 3)
    )
    model(torch.randn(64, 6))  # BatchNorm running statistics move away from their start
    stats = model[1].running_mean.clone()
    model.train()
    x = torch.randn(10, 6)
    mean, std = reglab.mc_predict(model, x, samples=400, generator=_gen())
    assert model.training and model[3].training  # modes restored
    assert torch.equal(model[1].running_mean, stats)  # eval-mode BatchNorm: stats untouched
    assert mean.shape == (10, 3) and (std > 0).all()
    torch.testing.assert_close(mean.sum(1), torch.ones(10))
    # the mean of many passes is close to the probability average computed by hand
    model[3].generator = _gen(5)
    model.eval()
    model[3].train()
    manual = torch.stack([model(x).softmax(-1) for _ in range(400)])
    torch.testing.assert_close(mean, manual.mean(0), atol=0.03, rtol=0)
    torch.testing.assert_close(std, manual.std(0), atol=0.03, rtol=0)


def test_mc_predict_is_deterministic_given_a_generator_and_raw_for_regression():
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), DropoutLayer(0.3), nn.Linear(16, 1))
    x = torch.randn(5, 4)
    a = reglab.mc_predict(model, x, samples=10, probabilities=False, generator=_gen(1))
    b = reglab.mc_predict(model, x, samples=10, probabilities=False, generator=_gen(1))
    assert torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std)
    assert a.mean.shape == (5, 1)
    assert model[2].generator is None  # the layer's own generator is put back


def test_mc_predict_without_dropout_or_with_one_sample_is_a_config_error():
    with pytest.raises(reglab.ConfigError, match="'model' parameter of mc_predict must hold"):
        reglab.mc_predict(nn.Linear(3, 2), torch.randn(2, 3))
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5))
    with pytest.raises(reglab.ConfigError, match="'samples' parameter of mc_predict"):
        reglab.mc_predict(model, torch.randn(2, 3), samples=1)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_dilate_equals_max_pooling(k):
    from reglab.drop import _dilate

    m = (torch.rand(3, 2, 9, 7, generator=_gen()) < 0.1).float()
    assert torch.equal(_dilate(m, k), nn.functional.max_pool2d(m, k, stride=1))


def test_mc_predict_refuses_softmax_of_a_single_output():
    model = reglab.Dropout(0.5).transform_model(
        torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    )
    x = torch.randn(10, 3)
    with pytest.raises(reglab.ConfigError, match="'probabilities' parameter of mc_predict must be"):
        reglab.mc_predict(model, x)
    mean, std = reglab.mc_predict(model, x, probabilities=False)
    assert mean.shape == (10, 1) and float(std.min()) > 0  # the spread is real
