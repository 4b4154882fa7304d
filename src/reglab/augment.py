"""Batch transforms at the ``on_batch`` hook: they see training batches only, never validation or
test data. Mixing (mixup, cutmix) is in :mod:`reglab.mixing`.

Every random choice is drawn per sample from a ``torch.Generator`` (``attach`` passes one), so a
seed gives the same augmented batches, and no global RNG state is touched. Image transforms take
``(B, C, H, W)`` tensors, or flat ``(B, C*H*W)`` rows with ``image_shape=(C, H, W)`` (the lab's
image data are flat).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .core import ConfigError, Interval, Predicate, Regularizer, draw_device
from .drop import dropout

__all__ = [
    "Cutout",
    "FeatureDropout",
    "GaussianNoise",
    "ImageAugment",
    "color_jitter",
    "cutout",
    "gaussian_noise",
    "random_affine",
    "random_crop",
    "random_erase",
    "random_flip",
]


def _draw_int(high: int, n: int, g: torch.Generator | None, x: torch.Tensor) -> torch.Tensor:
    """``n`` integers uniform in ``[0, high)`` on ``x``'s device."""
    k = torch.randint(0, high, (n,), generator=g, device=draw_device(g, x))
    return k.to(x.device, non_blocking=True)


def _uniform(
    n: int, low: float, high: float, g: torch.Generator | None, x: torch.Tensor
) -> torch.Tensor:
    u = torch.rand(n, generator=g, device=draw_device(g, x)).to(x.device, non_blocking=True)
    return u * (high - low) + low


def gaussian_noise(
    x: torch.Tensor, std: float | torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``x + std * N(0, 1)``, elementwise, drawn from ``generator``.

    Adding input noise is equivalent to Tikhonov regularization for small noise
    (Bishop 1995, https://doi.org/10.1162/neco.1995.7.1.108).

    Examples:
        >>> gaussian_noise(torch.zeros(3), 0.1, torch.Generator().manual_seed(0))
    """
    noise = torch.randn(
        x.shape, generator=generator, dtype=x.dtype, device=draw_device(generator, x)
    )
    return x + noise.to(x.device, non_blocking=True).mul_(std)


def _check_crop(padding: int, h: int, w: int) -> None:
    if padding >= min(h, w):
        raise ConfigError(
            f"The 'crop_padding' parameter of ImageAugment must be an int smaller than the "
            f"image ({h}x{w}). Got {padding}."
        )


_TABLE_LIMIT = 1 << 22  # entries of a precomputed index table (32 MB of int64)


@functools.lru_cache(maxsize=32)
def _crop_indices(
    h: int, w: int, padding: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """For the ``(2p+1)**2`` windows of a padded image: the flat start of each, the top-left
    window's flat indices, and (when small enough) every window's indices as one table."""
    padded_w, k = w + 2 * padding, 2 * padding + 1
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    window = (rows[:, None] * padded_w + cols[None, :]).view(1, -1)
    offsets = torch.arange(k, device=device)
    starts = (offsets[:, None] * padded_w + offsets[None, :]).view(-1, 1)
    table = starts + window if k * k * h * w <= _TABLE_LIMIT else None
    return starts, table, window


def random_crop(
    x: torch.Tensor, padding: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pad each image by ``padding`` zeros on every side and cut an ``H x W`` window at a random
    offset drawn per sample (the CIFAR-style crop); ``padding=0`` is the identity.

    One ``gather`` over the padded batch, no per-sample loop (measured 6x faster than advanced
    indexing, and as fast as kornia's RandomCrop).

    Examples:
        >>> random_crop(torch.rand(8, 3, 32, 32), 4, torch.Generator().manual_seed(0)).shape
        torch.Size([8, 3, 32, 32])
    """
    if padding == 0:
        return x
    b, c, h, w = x.shape
    _check_crop(padding, h, w)
    starts, table, window = _crop_indices(h, w, padding, x.device)
    padded = F.pad(x, (padding, padding, padding, padding)).view(b, c, -1)
    choice = _draw_int(len(starts), b, generator, x)  # uniform over offsets
    rows = table[choice] if table is not None else starts[choice] + window
    return padded.gather(2, rows[:, None, :].expand(b, c, h * w)).view(b, c, h, w)


def random_flip(
    x: torch.Tensor, p: float, dim: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Flip each image along ``dim`` (-1 horizontal, -2 vertical) with probability ``p``."""
    flip = _uniform(x.shape[0], 0.0, 1.0, generator, x) < p
    return torch.where(flip[:, None, None, None], x.flip(dim), x)


def random_affine(
    x: torch.Tensor,
    degrees: float,
    translate: float,
    scale: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Rotate by ``U(-degrees, degrees)``, shift by ``U(-translate, translate)`` of the size,
    and zoom by ``U(1 - scale, 1 + scale)``, per sample, with bilinear resampling and zero fill
    (PyTorch's ``affine_grid``/``grid_sample``)."""
    b = x.shape[0]
    angle = _uniform(b, -degrees, degrees, generator, x) * math.pi / 180
    zoom = _uniform(b, 1 - scale, 1 + scale, generator, x)
    shift = _uniform(2 * b, -translate, translate, generator, x).view(b, 2) * 2  # grid units
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def color_jitter(
    x: torch.Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample brightness (added, ``U(-b, b)``), contrast and saturation (factors
    ``U(1-c, 1+c)``), and hue (shift ``U(-h, h)`` of a turn) with kornia's ``enhance`` ops.
    Needs RGB images in ``[0, 1]`` (kornia clips to that range).

    Raises:
        ConfigError: for images without 3 channels.
    """
    import kornia.enhance as enhance

    if x.shape[1] != 3:
        raise ConfigError(
            "The 'image_shape' parameter of ImageAugment must have 3 channels for "
            f"color jitter (RGB). Got {x.shape[1]} channels."
        )
    b = x.shape[0]
    x = enhance.adjust_brightness(x, _uniform(b, -brightness, brightness, generator, x))
    x = enhance.adjust_contrast(x, _uniform(b, 1 - contrast, 1 + contrast, generator, x))
    x = enhance.adjust_saturation(x, _uniform(b, 1 - saturation, 1 + saturation, generator, x))
    return enhance.adjust_hue(x, _uniform(b, -hue, hue, generator, x) * 2 * math.pi)


def _box_mask(
    h: int, w: int, top: torch.Tensor, left: torch.Tensor, bh: torch.Tensor, bw: torch.Tensor
) -> torch.Tensor:
    """(B, 1, H, W) masks, True inside each sample's box (boxes may run off the image)."""
    rows = torch.arange(h, device=top.device)[None, :]
    cols = torch.arange(w, device=top.device)[None, :]
    inside_r = (rows >= top[:, None]) & (rows < (top + bh)[:, None])
    inside_c = (cols >= left[:, None]) & (cols < (left + bw)[:, None])
    return (inside_r[:, :, None] & inside_c[:, None, :])[:, None]


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a ``size x size`` square centred at a random pixel of each image; squares near a
    border are clipped (DeVries & Taylor 2017, https://arxiv.org/abs/1708.04552)."""
    b, _, h, w = x.shape
    cy = _draw_int(h, b, generator, x)
    cx = _draw_int(w, b, generator, x)
    side = torch.full((b,), size, device=x.device)
    mask = _box_mask(h, w, cy - size // 2, cx - size // 2, side, side)
    return x.masked_fill(mask, 0.0)


def random_erase(
    x: torch.Tensor,
    p: float,
    generator: torch.Generator | None = None,
    area: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """With probability ``p`` per image, zero a rectangle of ``U(area)`` of the image with a
    log-uniform aspect ratio in ``ratio``, placed inside the image (Zhong et al. 2020,
    https://arxiv.org/abs/1708.04896)."""
    b, _, h, w = x.shape
    frac = _uniform(b, *area, generator, x)
    aspect = torch.exp(_uniform(b, math.log(ratio[0]), math.log(ratio[1]), generator, x))
    bh = (torch.sqrt(frac * h * w * aspect)).round().clamp(1, h).long()
    bw = (torch.sqrt(frac * h * w / aspect)).round().clamp(1, w).long()
    top = (_uniform(b, 0.0, 1.0, generator, x) * (h - bh + 1)).long()
    left = (_uniform(b, 0.0, 1.0, generator, x) * (w - bw + 1)).long()
    on = (_uniform(b, 0.0, 1.0, generator, x) < p)[:, None, None, None]
    return x.masked_fill(_box_mask(h, w, top, left, bh, bw) & on, 0.0)


def _shape(value: object) -> bool:
    return value is None or (
        isinstance(value, Sequence)
        and len(value) == 3
        and all(isinstance(v, int) and v >= 1 for v in value)
    )


_IMAGE_SHAPE = Predicate(_shape, "None or (channels, height, width)")
_PROB = Interval(float, 0, 1)
#: A flip: a probability in [0, 1], or a bool (True is 1.0, always; False is 0.0).
_FLIP = Predicate(lambda v: isinstance(v, bool) or _PROB.check(v), "a float in [0, 1] or a bool")
_NONNEG = Interval(float, 0, None)


class _Random(Regularizer):
    """Shared: keep the generator that ``attach`` passes, for every random draw."""

    _generator: torch.Generator | None = None

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None) -> None:
        self._generator = generator


class _ImageTransform(_Random):
    """Shared: flat rows to images and back."""

    def _as_images(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            return x
        shape = self._config["image_shape"]
        if shape is None or x.ndim != 2 or x.shape[1] != math.prod(shape):
            raise ConfigError(
                f"The 'image_shape' parameter of {type(self).__name__} must give (C, H, W) for "
                f"batches of shape {tuple(x.shape)}. Got {shape!r}."
            )
        return x.view(x.shape[0], *shape)

    def on_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = self._transform(self._as_images(x))
        return images.reshape(x.shape), y

    def _transform(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class ImageAugment(_ImageTransform):
    """Per-sample image augmentation from named operations with strengths; 0 turns one off.

    In order: random crop with ``crop_padding`` (:func:`random_crop`), horizontal and vertical
    flips with probabilities ``hflip``/``vflip`` (:func:`random_flip`), an affine transform with
    ``degrees``, ``translate`` (fraction of the size) and ``scale`` (:func:`random_affine`),
    color jitter for RGB images in [0, 1] (:func:`color_jitter`), and random erasing with
    probability ``erase`` (:func:`random_erase`). Every sample draws its own parameters
    (torchvision's v2 transforms draw one set per batch). With all strengths 0 it is the
    identity.

    Args:
        crop_padding: pixels of zero padding before the crop, ``>= 0``.
        hflip: horizontal flip probability in ``[0, 1]``; ``True`` means 1.0 (always flip),
            ``False`` 0.0.
        vflip: vertical flip probability, as ``hflip``.
        degrees: rotation range in degrees, ``>= 0``.
        translate: translation range as a fraction of the size, in ``[0, 1)``.
        scale: scaling range, in ``[0, 1)``.
        brightness: color jitter range, ``>= 0``.
        contrast: color jitter range, ``>= 0``.
        saturation: color jitter range, ``>= 0``.
        hue: color jitter range, in ``[0, 0.5]``.
        erase: random-erasing probability in ``[0, 1]``.
        image_shape: ``(C, H, W)`` when batches come as flat rows (the lab sets it).

    Raises:
        ConfigError: for a value out of range; on the first batch, flat rows without
            ``image_shape`` or color jitter on images without 3 channels.

    Examples:
        >>> recipe = reglab.chain(reglab.ImageAugment(crop_padding=4, hflip=0.5, erase=0.25))
    """

    constraints = {
        "crop_padding": Interval(int, 0, None),
        "hflip": _FLIP,
        "vflip": _FLIP,
        "degrees": Interval(float, 0, 180),
        "translate": Interval(float, 0, 1, "left"),
        "scale": Interval(float, 0, 1, "left"),
        "brightness": _NONNEG,
        "contrast": _NONNEG,
        "saturation": _NONNEG,
        "hue": Interval(float, 0, 0.5),
        "erase": _PROB,
        "image_shape": _IMAGE_SHAPE,
    }

    def __init__(
        self,
        *,
        crop_padding: int = 0,
        hflip: float = 0.0,
        vflip: float = 0.0,
        degrees: float = 0.0,
        translate: float = 0.0,
        scale: float = 0.0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
        erase: float = 0.0,
        image_shape: Sequence[int] | None = None,
    ) -> None:
        c = self._config
        if image_shape is not None:
            _check_crop(crop_padding, image_shape[1], image_shape[2])
        # The pipeline is fixed here, from the configuration: no per-batch branching on values.
        ops: list = []
        if c["crop_padding"] > 0:
            ops.append(lambda x, g: random_crop(x, c["crop_padding"], g))
        hflip, vflip = float(c["hflip"]), float(c["vflip"])  # True is 1.0
        if hflip > 0:
            ops.append(lambda x, g: random_flip(x, hflip, -1, g))
        if vflip > 0:
            ops.append(lambda x, g: random_flip(x, vflip, -2, g))
        if any(c[k] > 0 for k in ("degrees", "translate", "scale")):
            ops.append(lambda x, g: random_affine(x, c["degrees"], c["translate"], c["scale"], g))
        if any(c[k] > 0 for k in ("brightness", "contrast", "saturation", "hue")):
            ops.append(
                lambda x, g: color_jitter(
                    x, c["brightness"], c["contrast"], c["saturation"], c["hue"], g
                )
            )
        if c["erase"] > 0:
            ops.append(lambda x, g: random_erase(x, c["erase"], g))
        self._ops = ops

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        for op in self._ops:
            x = op(x, self._generator)
        return x


class Cutout(_ImageTransform):
    """Zero a ``size x size`` square at a random place in every training image (:func:`cutout`;
    DeVries & Taylor 2017, https://arxiv.org/abs/1708.04552).

    Args:
        size: side of the square in pixels, ``>= 1``.
        image_shape: ``(C, H, W)`` when batches come as flat rows (the lab sets it).

    Raises:
        ConfigError: for a size below 1.

    Examples:
        >>> recipe = reglab.chain(reglab.Cutout(8))
    """

    constraints = {"size": Interval(int, 1, None), "image_shape": _IMAGE_SHAPE}

    def __init__(self, size: int, *, image_shape: Sequence[int] | None = None) -> None:
        self.size = size

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        return cutout(x, self.size, self._generator)


class GaussianNoise(_Random):
    """Add Gaussian noise ``N(0, std**2)`` to every training input (not to targets).

    With ``relative=True`` the noise of each feature is ``std`` times that feature's standard
    deviation in the training data, estimated from every batch seen so far (Welford's running
    estimate; exact after one epoch). The lab standardizes features on the training split, so
    there the two are the same.

    Args:
        std: noise standard deviation, ``>= 0``; a float or a tensor that broadcasts.
        relative: scale by each feature's training standard deviation.

    Raises:
        ConfigError: for a negative ``std``.

    Examples:
        >>> recipe = reglab.chain(reglab.GaussianNoise(0.1, relative=True))
    """

    constraints = {"std": _NONNEG, "relative": Predicate(lambda v: isinstance(v, bool), "a bool")}

    def __init__(self, std: float, *, relative: bool = False) -> None:
        self.std, self.relative = std, relative
        self._count, self._mean, self._m2 = 0, None, None

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None) -> None:
        super().attach(model, optimizer, num_classes=num_classes, generator=generator)
        self._count, self._mean, self._m2 = 0, None, None  # a new fit starts a new estimate

    def _feature_std(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.detach().reshape(x.shape[0], -1).double()
        n, mean = batch.shape[0], batch.mean(0)
        m2 = ((batch - mean) ** 2).sum(0)
        if self._mean is None:
            self._count, self._mean, self._m2 = n, mean, m2
        else:  # Chan et al.'s parallel update of Welford's running moments
            total = self._count + n
            delta = mean - self._mean
            self._mean = self._mean + delta * n / total
            self._m2 = self._m2 + m2 + delta**2 * self._count * n / total
            self._count = total
        std = (self._m2 / max(self._count - 1, 1)).sqrt()
        return std.to(x.dtype).view(x.shape[1:])

    def on_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        std = self.std * self._feature_std(x) if self.relative else self.std
        return gaussian_noise(x, std, self._generator), y

    def state_dict(self) -> dict[str, Any]:
        """The running feature moments of ``relative`` noise (count, mean, sum of squares)."""
        return {"count": self._count, "mean": self._mean, "m2": self._m2}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._count, self._mean, self._m2 = int(state["count"]), state["mean"], state["m2"]
        if self._generator is not None and self._mean is not None:
            device = self._generator.device
            self._mean, self._m2 = self._mean.to(device), self._m2.to(device)


class FeatureDropout(_Random):
    """Input feature dropout: zero each input value with probability ``p`` and scale the rest by
    ``1/(1-p)`` (inverted dropout on the inputs, :func:`reglab.dropout`), for tabular data.

    Args:
        p: drop probability in ``[0, 1)``.

    Raises:
        ConfigError: for ``p`` outside ``[0, 1)``.

    Examples:
        >>> recipe = reglab.chain(reglab.FeatureDropout(0.1))
    """

    constraints = {"p": Interval(float, 0, 1, "left")}

    def __init__(self, p: float) -> None:
        self.p = p

    def on_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return dropout(x, self.p, True, self._generator), y
