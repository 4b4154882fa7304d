import math

import pytest
import torch

import reglab
from reglab.augment import random_crop, random_flip


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _attached(reg, classes=None, seed=0):
    reg.attach(None, num_classes=classes, generator=_gen(seed))
    return reg


# --- Gaussian noise and feature dropout (tables) ----------------------------------------------


def test_gaussian_noise_has_the_given_std_and_leaves_targets():
    reg = _attached(reglab.GaussianNoise(0.5))
    x, y = torch.zeros(100_000, 2), torch.arange(100_000)
    x2, y2 = reg.on_batch(x, y)
    assert x2.std().item() == pytest.approx(0.5, rel=0.01)
    assert x2.mean().item() == pytest.approx(0.0, abs=0.01)
    assert y2 is y and torch.equal(x, torch.zeros(100_000, 2))  # input not modified in place


def test_relative_gaussian_noise_scales_with_each_feature_std():
    reg = _attached(reglab.GaussianNoise(0.5, relative=True))
    scale = torch.tensor([1.0, 10.0, 100.0])
    x = torch.randn(20_000, 3, generator=_gen(1)) * scale
    noise = torch.cat([reg.on_batch(b, None)[0] - b for b in x.split(500)])
    assert torch.allclose(noise[-5000:].std(0), 0.5 * scale, rtol=0.05)


def test_gaussian_noise_is_deterministic_and_zero_std_is_identity():
    x = torch.randn(50)
    assert torch.equal(
        reglab.gaussian_noise(x, 0.3, _gen(4)), reglab.gaussian_noise(x, 0.3, _gen(4))
    )
    assert torch.equal(reglab.gaussian_noise(x, 0.0, torch.Generator()), x)


def test_feature_dropout_drops_inputs_at_its_rate():
    reg = _attached(reglab.FeatureDropout(0.25))
    x2, _ = reg.on_batch(torch.ones(400, 250), None)
    assert (x2 == 0).float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert x2.mean().item() == pytest.approx(1.0, abs=0.02)


# --- image transforms ---------------------------------------------------------------------------


def test_image_augment_preserves_shape_and_dtype_and_is_deterministic():
    make = lambda: _attached(
        reglab.ImageAugment(
            crop_padding=2, hflip=0.5, vflip=0.5, degrees=15, translate=0.1, scale=0.1, erase=0.5
        ),
        seed=3,
    )
    x = torch.randn(32, 3, 16, 16)
    a, b = make().on_batch(x, None)[0], make().on_batch(x, None)[0]
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b)
    flat = torch.randn(8, 64, dtype=torch.float64)
    out = _attached(reglab.ImageAugment(crop_padding=1, image_shape=(1, 8, 8))).on_batch(flat, None)
    assert out[0].shape == (8, 64) and out[0].dtype == torch.float64


def test_image_augment_draws_parameters_per_sample():
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(64, 1, 1, 1)
    out = _attached(reglab.ImageAugment(crop_padding=2)).on_batch(x, None)[0]
    assert len({tuple(o.flatten().tolist()) for o in out}) > 10  # not one crop for the batch


def test_image_augment_with_zero_strengths_is_the_identity():
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(_attached(reglab.ImageAugment()).on_batch(x, None)[0], x)


def test_color_jitter_keeps_rgb_in_range_and_needs_three_channels():
    reg = _attached(reglab.ImageAugment(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1))
    out = reg.on_batch(torch.rand(16, 3, 8, 8), None)[0]
    assert out.min() >= 0 and out.max() <= 1
    with pytest.raises(reglab.ConfigError, match="3 channels for color jitter"):
        reg.on_batch(torch.rand(2, 1, 8, 8), None)


def test_crop_offsets_are_uniform_and_agree_with_kornia():
    """Both crops draw every offset in [0, 2p] equally often (chi-square, 5 sd)."""
    kornia_aug = pytest.importorskip("kornia.augmentation")
    p, n = 2, 20_000
    ramp = (torch.arange(8.0)[None, :] * 10 + torch.arange(8.0)[:, None]).expand(n, 1, 8, 8)
    ours = random_crop(ramp + 100, p, _gen(0))
    torch.manual_seed(0)  # kornia draws from the global RNG
    theirs = kornia_aug.RandomCrop((8, 8), padding=p)(ramp + 100)

    def offset_counts(batch):
        # the centre pixel always comes from the image: its ramp value encodes the offset
        value = (batch[:, 0, 4, 4] - 100).round().long()
        dx, dy = value // 10 - p, value % 10 - p
        return torch.bincount(dy * 5 + dx, minlength=25).float()

    for counts in (offset_counts(ours), offset_counts(theirs)):
        expected = n / 25
        chi2 = ((counts - expected) ** 2 / expected).sum().item()
        assert chi2 < 24 + 5 * math.sqrt(48)  # 24 degrees of freedom


def test_flip_rate_agrees_with_kornia():
    kornia_aug = pytest.importorskip("kornia.augmentation")
    x = torch.arange(4.0).view(1, 1, 1, 4).repeat(20_000, 1, 1, 1)
    ours = (random_flip(x, 0.3, -1, _gen(0))[:, 0, 0, 0] == 3).float().mean().item()
    torch.manual_seed(0)
    theirs = (kornia_aug.RandomHorizontalFlip(p=0.3)(x)[:, 0, 0, 0] == 3).float().mean().item()
    assert ours == pytest.approx(0.3, abs=0.015) and theirs == pytest.approx(0.3, abs=0.015)


def test_cutout_zeroes_a_square():
    x = torch.ones(200, 1, 16, 16)
    out = _attached(reglab.Cutout(4)).on_batch(x, None)[0]
    zeros = (out == 0).flatten(1).sum(1)
    assert zeros.max() == 16 and zeros.min() >= 4  # clipped at borders, never empty


def test_random_erasing_rate_and_area():
    x = torch.ones(2000, 1, 20, 20)
    out = _attached(reglab.ImageAugment(erase=0.5)).on_batch(x, None)[0]
    erased = (out == 0).flatten(1).float().mean(1)
    assert (erased > 0).float().mean().item() == pytest.approx(0.5, abs=0.04)
    assert erased[erased > 0].min() >= 0.0 and erased.max() <= 0.4


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: reglab.ImageAugment(crop_padding=8, image_shape=(1, 8, 8)),
            "'crop_padding' parameter of ImageAugment must be an int smaller than the image "
            "(8x8). Got 8.",
        ),
        (lambda: reglab.ImageAugment(hflip=1.5), "'hflip' parameter of ImageAugment"),
        (
            lambda: reglab.ImageAugment(image_shape=(8, 8)),
            "'image_shape' parameter of ImageAugment",
        ),
        (lambda: reglab.Cutout(0), "'size' parameter of Cutout must be an int >= 1. Got 0."),
        (lambda: reglab.Mixup(-0.1), "'alpha' parameter of Mixup must be a float >= 0. Got -0.1."),
        (lambda: reglab.CutMix(-1.0), "'alpha' parameter of CutMix"),
        (lambda: reglab.GaussianNoise(-1.0), "'std' parameter of GaussianNoise"),
        (lambda: reglab.FeatureDropout(1.0), "'p' parameter of FeatureDropout"),
    ],
)
def test_bad_arguments_are_rejected(make, message):
    with pytest.raises(reglab.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_crop_larger_than_the_batch_images_is_rejected_at_the_batch():
    reg = _attached(reglab.ImageAugment(crop_padding=8))
    with pytest.raises(reglab.ConfigError, match="smaller than the image \\(8x8\\)"):
        reg.on_batch(torch.zeros(2, 1, 8, 8), None)


def test_flat_rows_need_an_image_shape():
    with pytest.raises(reglab.ConfigError, match="must give \\(C, H, W\\) for batches of shape"):
        _attached(reglab.Cutout(2)).on_batch(torch.zeros(2, 64), None)


# --- augmentation only ever sees training batches ------------------------------------------------


def test_validation_and_test_data_are_never_augmented():
    seen = []

    class Spy(reglab.Regularizer):
        def on_batch(self, x, y):
            seen.append(x.clone())
            return x, y

    g = _gen(0)
    train = (torch.rand(60, 4, generator=g) + 1, torch.randint(0, 2, (60,), generator=g))
    val = (-torch.rand(30, 4, generator=g) - 1, torch.randint(0, 2, (30,), generator=g))
    torch.manual_seed(0)
    reglab.fit(
        torch.nn.Linear(4, 2), train, val, recipe=reglab.chain(Spy()), epochs=3, batch_size=20
    )
    assert len(seen) == 9 and all((x > 0).all() for x in seen)  # training rows only
