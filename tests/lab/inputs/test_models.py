import pytest
import torch

import reglab
from reglab import ConfigError
from reglab.lab.inputs.models import build_model


@pytest.mark.parametrize("init", ["he", "xavier", "orthogonal", "torch"])
def test_same_seed_gives_same_weights_and_leaves_global_rng_alone(init):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("mlp", 5, 3, seed=4, init=init)
    assert torch.equal(torch.rand(1), expected_next)
    b = build_model("mlp", 5, 3, seed=4, init=init)
    c = build_model("mlp", 5, 3, seed=5, init=init)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_model_shapes():
    assert build_model("mlp", 5, 3, widths=[7])(torch.zeros(2, 5)).shape == (2, 3)
    assert build_model("linear", 5, 1)(torch.zeros(2, 5)).shape == (2, 1)
    assert build_model("cnn", 64, 10, image_shape=(1, 8, 8))(torch.zeros(2, 64)).shape == (2, 10)


def test_he_init_has_the_right_scale():
    model = build_model("mlp", 1000, 2, widths=[1000])
    assert model[0].weight.std().item() == pytest.approx((2 / 1000) ** 0.5, rel=0.02)
    assert torch.equal(model[0].bias, torch.zeros(1000))


def test_cnn_needs_images_and_names_are_checked():
    with pytest.raises(
        ConfigError,
        match="'model' parameter of compare must be 'mlp' or 'linear' for data that are not images",
    ):
        build_model("cnn", 30, 2)
    with pytest.raises(
        ConfigError,
        match="'model' parameter of compare must be one of 'mlp', 'cnn', 'linear', 'resmlp'. "
        "Got 'resnet'.",
    ):
        build_model("resnet", 30, 2)
    with pytest.raises(ConfigError, match="'widths' parameter of compare must be a list of ints"):
        build_model("mlp", 30, 2, widths=[0])


def test_resmlp_has_residual_blocks_and_needs_equal_widths():
    model = build_model("resmlp", 10, 3, widths=(16, 16, 16))
    blocks = [m for m in model.modules() if isinstance(m, reglab.Residual)]
    assert len(blocks) == 2 and model(torch.randn(4, 10)).shape == (4, 3)
    with pytest.raises(reglab.ConfigError, match="'widths' parameter of compare must be one or"):
        build_model("resmlp", 10, 3, widths=(16, 32))


def test_selu_uses_lecun_normal_init():
    model = build_model("mlp", 400, 3, widths=(400,), activation="selu", seed=1)
    assert isinstance(model[1], torch.nn.SELU)
    assert model[0].weight.std().item() == pytest.approx(400**-0.5, rel=0.02)
