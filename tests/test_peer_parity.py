"""Arguments and conventions the peers enforce (issue 26 §4, the parts built so far): no
infinite strengths, the functional dropout family validating ``p`` as PyTorch does, and a flip
given as a bool."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import reglab


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize(
    "make",
    [reglab.L1, reglab.L2, reglab.WeightDecay, reglab.MaxNorm, reglab.ClipGradNorm,
     reglab.GaussianNoise, reglab.LabelSmoothing, reglab.Dropout],
    ids=lambda f: f.__name__,
)  # fmt: skip
def test_infinite_and_nan_values_are_refused_in_one_line(make, value):
    with pytest.raises(reglab.ConfigError, match=r"parameter of \w+ must be a float") as error:
        make(value)
    assert "\n" not in str(error.value)


def test_a_p_norm_may_still_be_the_max_norm():
    assert reglab.ClipGradNorm(1.0, norm_type=math.inf).norm_type == math.inf


@pytest.mark.parametrize(
    ("function", "bad"),
    [(reglab.dropout, 1.1), (reglab.dropout, -0.1), (reglab.channel_dropout, 2.0),
     (reglab.alpha_dropout, math.nan), (reglab.drop_path, -1.0), (reglab.gaussian_dropout, 1.0),
     (reglab.drop_connect, 1.0)],
)  # fmt: skip
def test_functional_dropout_validates_p_as_its_module_does(function, bad):
    x = torch.ones(4, 3, 5, 5)
    with pytest.raises(reglab.ConfigError, match=f"'p' parameter of {function.__name__}"):
        function(x, bad)


def test_functional_dropout_with_p_one_drops_everything_as_pytorch_does():
    x = torch.randn(4, 3, 5, 5)
    assert torch.equal(reglab.dropout(x, 1.0), F.dropout(x, 1.0))
    assert torch.equal(reglab.channel_dropout(x, 1.0), F.dropout2d(x, 1.0))
    assert torch.equal(reglab.alpha_dropout(x, 1.0), F.alpha_dropout(x, 1.0, True))
    assert torch.equal(reglab.drop_path(x, 1.0), torch.zeros_like(x))
    assert reglab.dropout(x, 1.0, training=False) is x


def test_image_augment_takes_a_flip_as_a_bool():
    x = torch.arange(8.0).view(1, 1, 2, 4)
    always = reglab.ImageAugment(hflip=True)
    assert torch.equal(always.on_batch(x, torch.tensor([0]))[0], x.flip(-1))
    assert reglab.ImageAugment.from_config(always.get_config()).get_config()["hflip"] is True
    never = reglab.ImageAugment(vflip=False)
    assert torch.equal(never.on_batch(x, torch.tensor([0]))[0], x)
    with pytest.raises(reglab.ConfigError, match="must be a float in \\[0, 1\\] or a bool"):
        reglab.ImageAugment(hflip=1.5)
