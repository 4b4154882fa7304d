import pytest
import torch

import reglab


def test_gaussian_noise_has_the_given_std_and_leaves_targets():
    reg = reglab.GaussianNoise(0.5)
    reg.attach(None, generator=torch.Generator().manual_seed(0))
    x, y = torch.zeros(100_000, 2), torch.arange(100_000)
    x2, y2 = reg.on_batch(x, y)
    assert x2.std().item() == pytest.approx(0.5, rel=0.01)
    assert x2.mean().item() == pytest.approx(0.0, abs=0.01)
    assert y2 is y and torch.equal(x, torch.zeros(100_000, 2))  # input not modified in place


def test_gaussian_noise_is_deterministic_and_zero_std_is_identity():
    x = torch.randn(50)
    a = reglab.gaussian_noise(x, 0.3, torch.Generator().manual_seed(4))
    b = reglab.gaussian_noise(x, 0.3, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert torch.equal(reglab.gaussian_noise(x, 0.0, torch.Generator()), x)


def test_gaussian_noise_rejects_negative_std():
    with pytest.raises(reglab.ConfigError, match="'std' parameter of GaussianNoise"):
        reglab.GaussianNoise(-1.0)
