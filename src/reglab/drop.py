"""The dropout family as pure functions and thin modules (Monte-Carlo dropout prediction with
them is in :mod:`reglab.mc_dropout`).

Every function takes ``training`` and a ``generator`` (global RNG state is never used when one is
given) and a drop probability ``p`` that is a float or a tensor broadcasting against the mask
(per-member values). The regularizers that insert these modules into a model live in
:mod:`reglab.structure`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .core import ConfigError, Interval, check_param, draw_device

__all__ = [
    "AlphaDropoutLayer",
    "ChannelDropoutLayer",
    "DropBlockLayer",
    "DropConnectLinear",
    "DropLayer",
    "DropPathLayer",
    "DropoutLayer",
    "GaussianDropoutLayer",
    "alpha_dropout",
    "channel_dropout",
    "drop_block",
    "drop_connect",
    "drop_path",
    "dropout",
    "dropout_factors_",
    "gaussian_dropout",
]

P_CONSTRAINT = Interval(float, 0, 1, "left")
BLOCK_CONSTRAINT = Interval(int, 1, None)
_SELU_ALPHA_PRIME = -1.0507009873554805 * 1.6732632423543772  # -lambda * alpha of SELU


def _check_p(owner: str, p: float | torch.Tensor, allow_one: bool) -> bool:
    """Validate a float ``p`` of the functional family as the modules do (a tensor of
    per-member values is checked where it is built: no host sync here); True when ``p`` is 1,
    which drops everything, as PyTorch does where it allows it."""
    if isinstance(p, torch.Tensor):
        return False
    ok = isinstance(p, (int, float)) and not isinstance(p, bool)
    ok = ok and (0 <= p <= 1 if allow_one else 0 <= p < 1)
    if not ok:
        raise ConfigError(
            f"The 'p' parameter of {owner} must be a float in [0, 1{']' if allow_one else ')'}. "
            f"Got {p!r}."
        )
    return p == 1


def _uniform(x: torch.Tensor, shape: tuple[int, ...], generator) -> torch.Tensor:
    """Uniform draws in ``[0, 1)`` of ``shape``, in ``x``'s dtype, on ``x``'s device (drawn on
    the generator's device)."""
    u = torch.rand(shape, generator=generator, dtype=x.dtype, device=draw_device(generator, x))
    return u.to(x.device, non_blocking=True)


def _mask(
    x: torch.Tensor, shape: tuple[int, ...], keep: float | torch.Tensor, generator
) -> torch.Tensor:
    return (_uniform(x, shape, generator) < keep).to(x.dtype)


def dropout_factors_(u: torch.Tensor, keep: float | torch.Tensor) -> torch.Tensor:
    """Inverted-dropout factors from uniform draws, in place: each ``u`` in ``[0, 1)`` becomes
    ``(u < keep) / keep``, so 0 with probability ``1 - keep`` and ``1 / keep`` otherwise.

    :func:`dropout`, :func:`channel_dropout` and :func:`drop_path` multiply their input by
    these factors; the lab's population engine calls it on the rows of many members at once
    (one ``keep`` per row), so the formula is written once.

    Args:
        u: uniform draws, overwritten.
        keep: the keep probability ``1 - p``, a float or a tensor that broadcasts against ``u``.

    Returns:
        ``u``, now the factors.

    Examples:
        >>> dropout_factors_(torch.tensor([0.1, 0.7]), 0.5)
        tensor([2., 0.])
    """
    return u.lt_(keep).div_(keep)


def dropout(
    x: torch.Tensor,
    p: float | torch.Tensor,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Inverted dropout: zero each element with probability ``p``, scale the rest by
    ``1/(1-p)`` so the expectation is unchanged; the identity when not training.

    Srivastava et al. 2014, https://jmlr.org/papers/v15/srivastava14a.html.

    Args:
        x: input of any shape.
        p: drop probability in ``[0, 1]`` (1 drops everything, as PyTorch allows); a float
            or a tensor that broadcasts against ``x``.
        training: apply dropout (True) or return ``x`` (False).
        generator: the source of randomness; global RNG state is never used when given.

    Returns:
        A tensor shaped like ``x``.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> y = dropout(torch.ones(1000), 0.5, generator=g)  # zeros and twos, mean ~1
    """
    if _check_p("dropout", p, allow_one=True) and training:
        return x * 0.0  # as torch.nn.functional.dropout(x, 1.0)
    if not training:
        return x
    keep = 1 - p
    return x * dropout_factors_(_uniform(x, x.shape, generator), keep)


def channel_dropout(
    x: torch.Tensor,
    p: float | torch.Tensor,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Spatial (channel) dropout: zero whole channels (dim 1) of each sample with probability
    ``p`` and scale the rest by ``1/(1-p)``. For ``(N, C)`` input every feature is a channel, so
    it equals :func:`dropout`.

    Tompson et al. 2015, https://arxiv.org/abs/1411.4280 (``torch.nn.Dropout2d``).

    Args:
        x: ``(N, C, ...)``.
        p: drop probability in ``[0, 1]`` (1 drops everything, as PyTorch allows); a float
            or a tensor broadcasting against ``(N, C)`` followed by singleton dimensions.
        training: apply (True) or return ``x``.
        generator: the source of randomness.

    Returns:
        A tensor shaped like ``x``; within a channel, every value is kept or dropped together.

    Examples:
        >>> y = channel_dropout(torch.ones(8, 16, 4, 4), 0.25)
    """
    if _check_p("channel_dropout", p, allow_one=True) and training:
        return x * 0.0  # as torch.nn.functional.dropout2d(x, 1.0)
    if not training:
        return x
    keep = 1 - p
    shape = tuple(x.shape[:2]) + (1,) * (x.ndim - 2)
    return x * dropout_factors_(_uniform(x, shape, generator), keep)


def gaussian_dropout(
    x: torch.Tensor,
    p: float | torch.Tensor,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian (multiplicative) dropout: ``x * (1 + sigma * z)`` with ``z ~ N(0, 1)`` and
    ``sigma = sqrt(p / (1 - p))``, the same mean and variance as inverted dropout at rate ``p``.

    Srivastava et al. 2014, section 10, https://jmlr.org/papers/v15/srivastava14a.html.

    Args:
        x: input of any shape.
        p: equivalent drop rate in ``[0, 1)``; float or broadcasting tensor.
        training: apply (True) or return ``x``.
        generator: the source of randomness.

    Returns:
        A tensor shaped like ``x``.

    Examples:
        >>> y = gaussian_dropout(torch.ones(1000), 0.5)  # mean ~1, std ~1
    """
    _check_p("gaussian_dropout", p, allow_one=False)
    if not training:
        return x
    sigma = (p / (1 - p)) ** 0.5 if isinstance(p, (int, float)) else torch.sqrt(p / (1 - p))
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=draw_device(generator, x))
    return x * z.to(x.device, non_blocking=True).mul_(sigma).add_(1)


def alpha_dropout(
    x: torch.Tensor,
    p: float | torch.Tensor,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Alpha dropout for self-normalizing (SELU) networks: dropped values are set to SELU's
    negative saturation ``alpha' = -lambda * alpha`` and an affine map ``a * x + b`` keeps zero
    mean and unit variance, with ``a = ((1 - p) * (1 + p * alpha'^2))^(-1/2)`` and
    ``b = -a * alpha' * p``.

    Klambauer et al. 2017, https://arxiv.org/abs/1706.02515 (as ``torch.nn.AlphaDropout``).

    Args:
        x: input of any shape (usually SELU activations).
        p: drop probability in ``[0, 1]`` (1 drops everything, as PyTorch allows); float or
            broadcasting tensor.
        training: apply (True) or return ``x``.
        generator: the source of randomness.

    Returns:
        A tensor shaped like ``x``.

    Examples:
        >>> y = alpha_dropout(torch.randn(1000), 0.1)  # mean ~0, std ~1
    """
    if _check_p("alpha_dropout", p, allow_one=True) and training:
        return x * 0.0  # as torch.nn.functional.alpha_dropout(x, 1.0)
    if not training:
        return x
    keep = 1 - p
    a = (keep * (1 + p * _SELU_ALPHA_PRIME**2)) ** -0.5
    b = -a * _SELU_ALPHA_PRIME * p
    m = _mask(x, x.shape, keep, generator)
    return (x * m + _SELU_ALPHA_PRIME * (1 - m)) * a + b


def drop_connect(
    weight: torch.Tensor,
    p: float | torch.Tensor,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DropConnect: inverted dropout on a layer's *weights* rather than its activations; one
    mask per call (per batch), the weights as they are in eval mode.

    Wan et al. 2013, https://proceedings.mlr.press/v28/wan13.html.

    Args:
        weight: the weight tensor.
        p: drop probability in ``[0, 1)``.
        training: apply (True) or return ``weight``.
        generator: the source of randomness.

    Returns:
        The masked weights, scaled by ``1/(1-p)``.

    Examples:
        >>> w = drop_connect(torch.ones(4, 3), 0.5)
    """
    _check_p("drop_connect", p, allow_one=False)
    return dropout(weight, p, training, generator)


def drop_path(
    x: torch.Tensor,
    p: float | torch.Tensor,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Drop path (stochastic depth): zero a residual branch's whole output for each *sample*
    with probability ``p``, scale the kept ones by ``1/(1-p)``. Use on the branch of
    ``x + branch(x)``, never on the sum.

    Huang et al. 2016, https://arxiv.org/abs/1603.09382 (as timm's ``drop_path``).

    Args:
        x: ``(N, ...)`` branch output.
        p: drop probability in ``[0, 1]`` (1 drops everything, as timm allows); float or
            tensor broadcasting against ``(N, 1, ...)``.
        training: apply (True) or return ``x``.
        generator: the source of randomness.

    Returns:
        A tensor shaped like ``x``; each sample kept or zeroed whole.

    Examples:
        >>> y = drop_path(torch.ones(16, 8), 0.2)
    """
    if _check_p("drop_path", p, allow_one=True) and training:
        return x * 0.0  # every branch dropped, as timm does
    if not training:
        return x
    keep = 1 - p
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return x * dropout_factors_(_uniform(x, shape, generator), keep)


def _dilate(m: torch.Tensor, k: int) -> torch.Tensor:
    """``max_pool2d(m, k, stride=1)`` as two separable running maxima: 3-4x faster on CPU,
    where max-pooling also computes indices."""
    rows = m.shape[-2] - k + 1
    out = m[..., :rows, :]
    for i in range(1, k):
        out = torch.maximum(out, m[..., i : i + rows, :])
    cols = out.shape[-1] - k + 1
    res = out[..., :cols]
    for i in range(1, k):
        res = torch.maximum(res, out[..., i : i + cols])
    return res


def drop_block(
    x: torch.Tensor,
    p: float | torch.Tensor,
    block_size: int = 3,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DropBlock: zero contiguous ``block_size x block_size`` squares of each feature map.

    Block corners are drawn with rate ``gamma = p / bs^2 * H W / ((H - bs + 1)(W - bs + 1))``
    over the positions where a whole block fits, so about a fraction ``p`` of the units is
    dropped (a little less where blocks overlap); the kept units are scaled so that each
    sample's mean is preserved. ``block_size`` larger than the map is cut to the map.

    Ghiasi et al. 2018, https://arxiv.org/abs/1810.12890.

    Args:
        x: ``(N, C, H, W)`` feature maps.
        p: target drop fraction in ``[0, 1)``; float or tensor broadcasting against
            ``(N, C, H, W)``.
        block_size: side of the square blocks, ``>= 1``.
        training: apply (True) or return ``x``.
        generator: the source of randomness.

    Returns:
        A tensor shaped like ``x``.

    Raises:
        ConfigError: for input that is not 4-D.

    Examples:
        >>> y = drop_block(torch.ones(2, 4, 16, 16), 0.1, block_size=5)
    """
    _check_p("drop_block", p, allow_one=False)
    if not training:
        return x
    if x.ndim != 4:
        raise ConfigError(
            "The 'x' parameter of drop_block must be (N, C, H, W) feature maps. "
            f"Got shape {tuple(x.shape)}."
        )
    n, c, h, w = x.shape
    bs = min(block_size, h, w)
    gamma = p / bs**2 * (h * w) / ((h - bs + 1) * (w - bs + 1))
    corners = _mask(x, (n, c, h - bs + 1, w - bs + 1), gamma, generator)
    keep = 1 - _dilate(F.pad(corners, (bs - 1,) * 4), bs)
    scale = keep[0].numel() / keep.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1)
    return x * keep.mul_(scale)


# --------------------------------------------------------------------------- modules


class DropLayer(nn.Module):
    """The base of the modules around the functions above: ``p`` and an optional generator.

    ``multiplicative`` says that the output is ``x`` times a random factor that depends on
    ``x``'s shape but not on its values, so ``layer(torch.ones(shape))`` is that factor (the
    population engine draws it per member this way)."""

    multiplicative: ClassVar[bool] = True

    def __init__(self, p: float | torch.Tensor = 0.5, generator: torch.Generator | None = None):
        super().__init__()
        check_param(type(self).__name__, "p", p, P_CONSTRAINT)
        self.p = p
        self.generator = generator

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DropoutLayer(DropLayer):
    """A module around :func:`dropout`: inverted dropout with probability ``p`` in training,
    the identity in eval mode. ``generator`` may be set after construction (the inserting
    regularizer's ``attach`` does); when None, draws come from the global RNG like
    ``torch.nn.Dropout``.

    Examples:
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), DropoutLayer(0.2), nn.Linear(8, 2))
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training, self.generator)


class ChannelDropoutLayer(DropLayer):
    """A module around :func:`channel_dropout` (whole channels of each sample).

    Examples:
        >>> layer = ChannelDropoutLayer(0.1)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_dropout(x, self.p, self.training, self.generator)


class GaussianDropoutLayer(DropLayer):
    """A module around :func:`gaussian_dropout` (multiplicative ``N(1, p/(1-p))`` noise).

    Examples:
        >>> layer = GaussianDropoutLayer(0.3)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gaussian_dropout(x, self.p, self.training, self.generator)


class AlphaDropoutLayer(DropLayer):
    """A module around :func:`alpha_dropout`, for SELU networks.

    Examples:
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.SELU(), AlphaDropoutLayer(0.05))
    """

    multiplicative: ClassVar[bool] = False  # dropped units go to SELU's saturation, then affine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return alpha_dropout(x, self.p, self.training, self.generator)


class DropPathLayer(DropLayer):
    """A module around :func:`drop_path`; put it at the end of a residual branch.

    Examples:
        >>> branch = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), DropPathLayer(0.1))
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training, self.generator)


class DropBlockLayer(DropLayer):
    """A module around :func:`drop_block`, for ``(N, C, H, W)`` feature maps.

    Examples:
        >>> layer = DropBlockLayer(0.1, block_size=3)
    """

    def __init__(
        self,
        p: float | torch.Tensor = 0.1,
        block_size: int = 3,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(p, generator)
        check_param("DropBlockLayer", "block_size", block_size, BLOCK_CONSTRAINT)
        self.block_size = block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_block(x, self.p, self.block_size, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}, block_size={self.block_size}"


class DropConnectLinear(nn.Linear):
    """An ``nn.Linear`` whose weights go through :func:`drop_connect` in training.

    Built from an existing layer with :meth:`from_linear`, it *shares* that layer's ``weight``
    and ``bias`` parameters, so parameter names and an optimizer built earlier stay valid.

    Examples:
        >>> layer = DropConnectLinear.from_linear(nn.Linear(8, 4), p=0.5)
    """

    p: float | torch.Tensor = 0.5
    generator: torch.Generator | None = None

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, p: float | torch.Tensor, generator: torch.Generator | None = None
    ) -> DropConnectLinear:
        """A DropConnect layer sharing ``linear``'s parameters."""
        check_param("DropConnectLinear", "p", p, P_CONSTRAINT)
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight = linear.weight
        layer.bias = linear.bias
        layer.p, layer.generator = p, generator
        layer.train(linear.training)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = drop_connect(self.weight, self.p, self.training, self.generator)
        return F.linear(x, w, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", p={self.p}"
