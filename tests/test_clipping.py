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
    # without clipping the L2 gradient alone is large
    assert norm_after([reglab.L2(1.0)]) > 10


@pytest.mark.parametrize(
    "penalty", [reglab.L2(1.0), reglab.ElasticNet(1.0), reglab.L1(1.0, method="subgradient")]
)
@pytest.mark.parametrize(
    "clip", [reglab.ClipGradNorm(1.0), reglab.ClipGradValue(1.0), reglab.AdaptiveClip(0.1)]
)
def test_chain_rejects_clipping_before_a_gradient_penalty(penalty, clip):
    with pytest.raises(reglab.ConfigError, match=r"clipping after the penalties.*position 0"):
        reglab.chain(clip, penalty)
    reglab.chain(penalty, clip)  # the right order is accepted


def test_chain_accepts_clipping_before_proximal_and_decoupled_regularizers():
    # proximal L1 and weight decay do not add gradients, so their place does not matter
    reglab.chain(reglab.ClipGradNorm(1.0), reglab.L1(0.1), reglab.WeightDecay(0.1))


@pytest.mark.parametrize("value", [0.0, -1.0])
def test_clip_grad_norm_rejects_non_positive_max_norm(value):
    with pytest.raises(
        reglab.ConfigError, match="'max_norm' parameter of ClipGradNorm must be a float > 0"
    ):
        reglab.ClipGradNorm(value)


def _manual_agc(model, factor, eps=1e-3):
    for p in model.parameters():
        w_norm = p.detach().norm() if p.ndim == 1 else p.detach().norm(dim=1, keepdim=True)
        g_norm = p.grad.norm() if p.ndim == 1 else p.grad.norm(dim=1, keepdim=True)
        limit = factor * w_norm.clamp_min(eps)
        p.grad = torch.where(g_norm > limit, p.grad * limit / g_norm, p.grad)


def test_adaptive_clip_matches_the_unitwise_formula():
    ours, theirs = _with_grads(), _with_grads()
    reg = reglab.AdaptiveClip(0.05)
    reg.attach(ours)
    reg.on_after_backward()
    _manual_agc(theirs, 0.05)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    # every unit ends at or below its limit, and these gradients were large, so it clipped
    w = ours[0].weight
    ratio = ours[0].weight.grad.norm(dim=1) / w.detach().norm(dim=1)
    assert (ratio <= 0.05 + 1e-6).all()
    assert reg.logs() == {"clip_fraction": 1.0}


def test_adaptive_clip_leaves_small_gradients_alone():
    model = _with_grads()
    for p in model.parameters():
        p.grad.mul_(1e-6)
    before = [p.grad.clone() for p in model.parameters()]
    reg = reglab.AdaptiveClip(0.5)
    reg.attach(model)
    reg.on_after_backward()
    for p, g in zip(model.parameters(), before, strict=True):
        assert torch.equal(p.grad, g)
    assert reg.logs() == {"clip_fraction": 0.0}


def test_clip_grad_value_equals_torch_and_counts_steps():
    ours, theirs = _with_grads(), _with_grads()
    reg = reglab.ClipGradValue(0.5)
    reg.attach(ours)
    reg.on_after_backward()
    nn.utils.clip_grad_value_(theirs.parameters(), 0.5)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)
    reg.value = 1e6
    reg.on_after_backward()
    assert reg.logs() == {"clip_fraction": 0.5}


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: reglab.ClipGradValue(0.0), "value"),
        (lambda: reglab.AdaptiveClip(-0.1), "clip_factor"),
        (lambda: reglab.AdaptiveClip(0.1, eps=0.0), "eps"),
    ],
)
def test_clipping_rejects_non_positive_thresholds(make, argument):
    with pytest.raises(reglab.ConfigError, match=f"'{argument}' parameter .* must be a float > 0"):
        make()


def test_clip_fraction_reaches_history_through_fit():
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 2, (64,))
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    history = reglab.fit(model, (x, y), epochs=2, recipe=reglab.chain(reglab.ClipGradValue(1e-4)))
    assert history["clip_fraction"] == [1.0, 1.0]
