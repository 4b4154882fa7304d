import pytest
import torch
from torch import nn

import reglab


def _with_grads(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 5), nn.Linear(5, 2))
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 3
    return model


def test_clip_grad_norm_equals_torch():
    ours, theirs = _with_grads(), _with_grads()
    reg = reglab.ClipGradNorm(1.0)
    reg.attach(ours)
    reg.on_after_backward()
    nn.utils.clip_grad_norm_(theirs.parameters(), 1.0)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)
    total = torch.cat([p.grad.ravel() for p in ours.parameters()]).norm()
    assert total.item() == pytest.approx(1.0, rel=1e-5)
    assert reg.logs() == {"clip_fraction": 1.0}


def test_clip_fraction_counts_clipped_steps():
    model = _with_grads()
    reg = reglab.ClipGradNorm(1e6)
    reg.attach(model)
    reg.on_after_backward()
    reg.max_norm = 1e-3
    reg.on_after_backward()
    assert reg.logs() == {"clip_fraction": 0.5}


def test_penalty_gradients_before_clipping_are_clipped_too():
    def norm_after(order):
        model = _with_grads()
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(100)  # a large L2 gradient
        recipe = reglab.chain(*order)
        recipe.attach(model)
        recipe.on_after_backward()
        return torch.cat([p.grad.ravel() for p in model.parameters()]).norm().item()

    assert norm_after([reglab.L2(1.0), reglab.ClipGradNorm(1.0)]) == pytest.approx(1.0, rel=1e-5)
    assert norm_after([reglab.ClipGradNorm(1.0), reglab.L2(1.0)]) > 10


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_clip_grad_norm_rejects_non_positive_max_norm(value):
    with pytest.raises(
        reglab.ConfigError, match="'max_norm' parameter of ClipGradNorm must be a float > 0"
    ):
        reglab.ClipGradNorm(value)
