"""Model transforms of the dropout family: insertion points, defaults, and errors."""

import pytest
import torch
from torch import nn

import reglab
from reglab.drop import DropoutLayer


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_dropout_inserts_after_hidden_activations_only(mlp):
    names_before = [n for n, _ in mlp.named_parameters()]
    model = reglab.Dropout(0.3).transform_model(mlp)
    layers = [m for m in model.modules() if isinstance(m, DropoutLayer)]
    assert len(layers) == 2
    assert [n for n, _ in model.named_parameters()] == names_before
    assert "DropoutLayer(p=0.3)" in str(model)


def test_dropout_skips_an_output_activation_and_can_choose_layers():
    model = nn.Sequential(
        nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1), nn.Sigmoid()
    )
    reg = reglab.Dropout(0.5)
    reg.transform_model(model)
    assert len(reg.inserted) == 2
    assert isinstance(model[5], nn.Sigmoid)
    model2 = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
    reg2 = reglab.Dropout(0.5, layers="3")
    reg2.transform_model(model2)
    assert len(reg2.inserted) == 1 and isinstance(model2[1], nn.ReLU)


def test_dropout_works_on_nested_modules():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.act = nn.Linear(4, 4), nn.GELU()

        def forward(self, x):
            return self.act(self.fc(x))

    model = nn.Sequential(Block(), nn.Linear(4, 2))
    reg = reglab.Dropout(0.5)
    reg.transform_model(model)
    reg.attach(model, generator=_gen())
    assert len(reg.inserted) == 1
    model.eval()
    x = torch.randn(3, 4)
    assert torch.equal(model(x), model[1](nn.functional.gelu(model[0].fc(x))))


def test_dropout_without_activation_modules_is_a_config_error():
    with pytest.raises(
        reglab.ConfigError, match="'layers' parameter of Dropout matched no activation"
    ):
        reglab.Dropout(0.5).transform_model(nn.Sequential(nn.Linear(3, 2)))


def test_dropout_attach_before_transform_is_a_config_error(mlp):
    with pytest.raises(reglab.ConfigError, match="Dropout.transform_model"):
        reglab.Dropout(0.5).attach(mlp)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_p_outside_unit_interval(p):
    with pytest.raises(reglab.ConfigError, match=r"must be a float in \[0, 1\)"):
        reglab.Dropout(p)


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 16),
        nn.ReLU(),
        nn.Linear(16, 3),
    )


@pytest.mark.parametrize(
    ("reg", "layer_type"),
    [
        (reglab.ChannelDropout(0.2), reglab.ChannelDropoutLayer),
        (reglab.DropBlock(0.2, block_size=3), reglab.DropBlockLayer),
    ],
)
def test_spatial_dropouts_go_after_convolutions_only(reg, layer_type):
    model = reg.transform_model(_cnn())
    assert len(reg.inserted) == 2  # after both convolutions (one through BatchNorm), not the FC
    assert all(isinstance(layer, layer_type) for layer in reg.inserted)
    assert isinstance(model[7], nn.ReLU)
    assert layer_type.__name__ in str(model)
    reg.attach(model, generator=_gen())
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize(
    ("make", "layer_type"),
    [
        (reglab.GaussianDropout, reglab.GaussianDropoutLayer),
        (reglab.AlphaDropout, reglab.AlphaDropoutLayer),
    ],
)
def test_activation_dropouts_insert_after_every_hidden_activation(mlp, make, layer_type):
    reg = make(0.1)
    model = reg.transform_model(mlp)
    assert len(reg.inserted) == 2 and all(isinstance(x, layer_type) for x in reg.inserted)
    assert f"{layer_type.__name__}(p=0.1)" in str(model)


def test_dropout_family_composes_in_one_model():
    model = _cnn()
    recipe = reglab.chain(reglab.DropBlock(0.1), reglab.Dropout(0.5))
    model = recipe.transform_model(model)
    recipe.attach(model, generator=_gen())
    # DropBlock took the convolutional activations, Dropout the remaining hidden one
    assert len(recipe.regularizers[1].inserted) == 1
    assert isinstance(model[7][1], DropoutLayer)


def test_spatial_dropout_on_an_mlp_is_a_config_error(mlp):
    with pytest.raises(
        reglab.ConfigError, match="DropBlock matched no activation module after a convolution"
    ):
        reglab.DropBlock(0.1).transform_model(mlp)


def test_drop_connect_replaces_hidden_linears_and_keeps_parameters(mlp):
    params = dict(mlp.named_parameters())
    reg = reglab.DropConnect(0.4)
    model = reg.transform_model(mlp)
    assert len(reg.inserted) == 2
    assert type(model[-1]) is nn.Linear  # the output layer is left alone by default
    assert dict(model.named_parameters()).keys() == params.keys()
    assert all(params[n] is p for n, p in model.named_parameters())
    assert "DropConnectLinear(in_features=" in str(model)
    reg.attach(model, generator=_gen())
    assert all(layer.generator is not None for layer in reg.inserted)


def test_drop_connect_on_a_single_linear_layer_needs_layers():
    with pytest.raises(reglab.ConfigError, match="'layers' parameter of DropConnect matched no"):
        reglab.DropConnect(0.4).transform_model(nn.Sequential(nn.Linear(3, 2)))
    reg = reglab.DropConnect(0.4, layers="0")
    reg.transform_model(nn.Sequential(nn.Linear(3, 2)))
    assert len(reg.inserted) == 1


def test_drop_path_wraps_residual_branches_and_drops_per_sample():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 8),
        reglab.Residual(nn.Sequential(nn.Linear(8, 8), nn.ReLU())),
        reglab.Residual(nn.Sequential(nn.Linear(8, 8), nn.ReLU())),
        nn.Linear(8, 2),
    )
    reg = reglab.DropPath(0.999_999)
    reg.transform_model(model)
    reg.attach(model, generator=_gen())
    assert len(reg.inserted) == 2 and "DropPathLayer(p=0.999999)" in str(model)
    x = torch.randn(5, 4)
    # with every branch dropped the blocks are identities
    torch.testing.assert_close(model(x), model[3](model[0](x)))
    model.eval()  # in eval the blocks are x + branch(x) with the original branches
    h = model[0](x)
    h = h + model[1].branch[0](h)
    h = h + model[2].branch[0](h)
    torch.testing.assert_close(model(x), model[3](h))


def test_drop_path_needs_residual_blocks_or_named_branches(mlp):
    with pytest.raises(reglab.ConfigError, match="DropPath matched no residual branch"):
        reglab.DropPath(0.1).transform_model(mlp)
    reg = reglab.DropPath(0.1, layers="2")
    reg.transform_model(mlp)
    assert len(reg.inserted) == 1


@pytest.mark.parametrize(
    "make",
    [
        lambda: reglab.GaussianDropout(1.0),
        lambda: reglab.AlphaDropout(-0.1),
        lambda: reglab.ChannelDropout(1.5),
        lambda: reglab.DropConnect(1.0),
        lambda: reglab.DropPath(2.0),
        lambda: reglab.DropBlock(1.0),
    ],
)
def test_dropout_family_rejects_p_outside_unit_interval(make):
    with pytest.raises(
        reglab.ConfigError, match=r"'p' parameter of \w+ must be a float in \[0, 1\)"
    ):
        make()


@pytest.mark.parametrize("block_size", [0, -2, 1.5])
def test_drop_block_rejects_bad_block_size(block_size):
    with pytest.raises(reglab.ConfigError, match="'block_size' parameter of DropBlock must be"):
        reglab.DropBlock(0.1, block_size=block_size)


def test_dropout_family_trains_through_fit_and_is_reproducible():
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8).flatten(1), torch.randint(0, 3, (64,))

    def run():
        model = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), *_cnn())
        recipe = reglab.chain(reglab.DropBlock(0.2), reglab.DropConnect(0.2), reglab.Dropout(0.2))
        return reglab.fit(model, (x, y), epochs=2, recipe=recipe, seed=3)["train_loss"]

    assert run() == run()
