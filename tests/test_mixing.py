import pytest
import torch
import torch.nn.functional as F

import reglab
from reglab.mixing import beta_sample


def _attached(reg, classes=5, seed=0):
    reg.attach(None, num_classes=classes, generator=torch.Generator().manual_seed(seed))
    return reg


def test_mixup_mixes_inputs_and_targets_with_the_same_lambda():
    x = torch.eye(4)[:, :, None].repeat(1, 1, 3)  # sample i is the i-th basis direction
    y = torch.arange(4)
    xm, ym = _attached(reglab.Mixup(1.0), classes=4).on_batch(x, y)
    assert torch.allclose(ym.sum(1), torch.ones(4))
    assert torch.allclose(xm[:, :, 0], ym)  # inputs and targets mixed identically


def test_mixup_per_sample_lambdas_differ():
    x, y = torch.randn(64, 3), torch.randint(0, 5, (64,))
    _, ym = _attached(reglab.Mixup(1.0, per_sample=True)).on_batch(x, y)
    assert len({round(v, 6) for v in ym.max(1).values.tolist()}) > 10


def test_mixing_at_alpha_zero_is_the_identity_on_inputs():
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 5, (8,))
    for reg in (reglab.Mixup(0.0), reglab.CutMix(0.0)):
        xm, ym = _attached(reg).on_batch(x, y)
        assert torch.equal(xm, x) and torch.equal(ym, F.one_hot(y, 5).float())


def test_cutmix_targets_follow_the_pasted_area():
    a, b = torch.zeros(1, 1, 10, 10), torch.ones(1, 1, 10, 10)
    x, y = torch.cat([a, b]), torch.tensor([0, 1])
    xm, ym = _attached(reglab.CutMix(1.0, per_sample=True), classes=2, seed=5).on_batch(x, y)
    for i in range(2):
        from_other = (xm[i] != x[i]).float().mean().item()
        assert ym[i, 1 - y[i]].item() == pytest.approx(from_other)  # the correct lambda
    assert torch.allclose(ym.sum(1), torch.ones(2))


def test_mixed_soft_targets_pass_through_label_smoothing_and_the_loss():
    x, y = torch.randn(16, 3), torch.randint(0, 5, (16,))
    recipe = reglab.chain(reglab.Mixup(0.4), reglab.LabelSmoothing(0.1))
    recipe.attach(None, num_classes=5, generator=torch.Generator().manual_seed(0))
    _, soft = recipe.on_batch(x, y)
    assert torch.allclose(soft.sum(1), torch.ones(16)) and soft.min() >= 0.1 / 5 - 1e-7
    assert torch.isfinite(F.cross_entropy(torch.randn(16, 5), soft))


def test_mixing_is_deterministic_given_the_generator():
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 5, (32,))
    for make in (lambda: reglab.Mixup(0.3), lambda: reglab.CutMix(1.0)):
        a, b = _attached(make(), seed=7).on_batch(x, y), _attached(make(), seed=7).on_batch(x, y)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_beta_sample_mean_and_reproducibility():
    draws = beta_sample(0.4, 20_000, torch.Generator().manual_seed(0))
    assert draws.mean().item() == pytest.approx(0.5, abs=0.01)
    assert torch.equal(draws, beta_sample(0.4, 20_000, torch.Generator().manual_seed(0)))


def test_mixing_needs_classes():
    with pytest.raises(reglab.ConfigError, match="'num_classes' parameter of Mixup"):
        reglab.Mixup(0.2).attach(None)
