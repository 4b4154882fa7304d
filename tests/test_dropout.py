import pytest
import torch
from torch import nn

import reglab
from reglab.dropout import DropoutLayer


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
