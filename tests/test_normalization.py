"""Norm layers inserted or replaced; weight and spectral norm."""

import pytest
import torch
from torch import nn

import reglab


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    )


def test_insert_batch_norm_after_hidden_layers_keeps_names_and_normalizes():
    model = _mlp()
    names = [n for n, _ in model.named_parameters()]
    reglab.InsertNorm("batch").transform_model(model)
    assert isinstance(model[0].norm, nn.BatchNorm1d) and isinstance(model[2].norm, nn.BatchNorm1d)
    assert not hasattr(model[4], "norm")  # the output layer is left alone
    new = [n for n, _ in model.named_parameters()]
    assert names == [n for n in new if ".norm." not in n]
    assert "(norm): BatchNorm1d(16" in str(model)
    model.train()
    h = model[0](torch.randn(256, 6) * 5 + 3)
    # the layer's output is normalized: each feature has mean 0 and std 1 over the batch
    torch.testing.assert_close(h.mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(h.std(0, unbiased=False), torch.ones(16), atol=1e-3, rtol=0)


def test_insert_layer_norm_uses_group_norm_for_convolutions():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 36, 8),
        nn.ReLU(),
        nn.Linear(8, 2),
    )
    reglab.InsertNorm("layer").transform_model(model)
    assert isinstance(model[0].norm, nn.GroupNorm) and model[0].norm.num_groups == 1
    assert isinstance(model[3].norm, nn.LayerNorm)
    h = model[3](torch.randn(2, 4 * 36))
    torch.testing.assert_close(h.mean(1), torch.zeros(2), atol=1e-5, rtol=0)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 2)


def test_insert_norm_survives_deepcopy_and_state_dict():
    import copy

    model = reglab.InsertNorm("batch").transform_model(_mlp())
    clone = copy.deepcopy(model)
    clone.load_state_dict(model.state_dict())
    model.eval(), clone.eval()
    x = torch.randn(4, 6)
    torch.testing.assert_close(clone(x), model(x))
    assert "0.norm.running_mean" in model.state_dict()


def test_insert_norm_twice_and_no_match_are_config_errors():
    model = reglab.InsertNorm().transform_model(_mlp())
    with pytest.raises(reglab.ConfigError, match="must not already have a norm"):
        reglab.InsertNorm().transform_model(model)
    with pytest.raises(reglab.ConfigError, match="'layers' parameter of InsertNorm matched no"):
        reglab.InsertNorm(layers="nothing.*").transform_model(_mlp())
    with pytest.raises(reglab.ConfigError, match="'kind' parameter of InsertNorm must be one of"):
        reglab.InsertNorm("group")


def test_replace_norm_swaps_kinds_and_keeps_affine_parameters():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 36, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, 2),
    )
    with torch.no_grad():
        model[5].weight.fill_(2.0)
    reglab.ReplaceNorm("layer").transform_model(model)
    assert isinstance(model[1], nn.GroupNorm) and isinstance(model[5], nn.LayerNorm)
    assert torch.equal(model[5].weight, torch.full((8,), 2.0))
    reglab.ReplaceNorm("batch").transform_model(model)
    assert isinstance(model[1], nn.BatchNorm2d) and isinstance(model[5], nn.BatchNorm1d)
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 2)
    with pytest.raises(reglab.ConfigError, match="ReplaceNorm matched no normalization layer"):
        reglab.ReplaceNorm("batch").transform_model(_mlp())


def test_weight_norm_reparametrizes_and_keeps_the_function():
    model = _mlp()
    x = torch.randn(5, 6)
    before = model(x)
    reglab.WeightNorm().transform_model(model)
    torch.testing.assert_close(model(x), before)
    names = [n for n, _ in model.named_parameters()]
    assert "0.parametrizations.weight.original0" in names
    assert "ParametrizedLinear" in str(model)
    g = model[0].parametrizations.weight.original0
    v = model[0].parametrizations.weight.original1
    torch.testing.assert_close(model[0].weight, g * v / v.norm(dim=1, keepdim=True))
    with pytest.raises(reglab.ConfigError, match="must not already reparametrize"):
        reglab.WeightNorm().transform_model(model)


def test_spectral_norm_bounds_the_largest_singular_value_and_is_reproducible():
    def transformed():
        model = _mlp()
        with torch.no_grad():
            model[2].weight.mul_(10)
        return reglab.SpectralNorm(n_power_iterations=5).transform_model(model)

    model = transformed()
    model.train()
    for _ in range(10):  # power iterations run in training forward passes
        model(torch.randn(2, 6))
    sigma = torch.linalg.matrix_norm(model[2].weight.detach(), ord=2)
    assert sigma.item() == pytest.approx(1.0, abs=1e-3)
    other = transformed()
    assert torch.equal(
        other[2].parametrizations.weight[0]._u, transformed()[2].parametrizations.weight[0]._u
    )
    with pytest.raises(reglab.ConfigError, match="'n_power_iterations' parameter of SpectralNorm"):
        reglab.SpectralNorm(0)


def test_norm_transforms_train_through_fit():
    torch.manual_seed(0)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    for reg in (reglab.InsertNorm("batch"), reglab.WeightNorm(), reglab.SpectralNorm()):
        history = reglab.fit(_mlp(), (x, y), epochs=3, recipe=reglab.chain(reg), lr=1e-2)
        assert history.status == "completed"
        assert history["train_loss"][-1] < history["train_loss"][0]
