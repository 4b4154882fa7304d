"""Model transforms for normalization: add or replace norm layers, weight and spectral norm.

Like the dropout transforms of :mod:`reglab.structure`, each acts once in ``transform_model``,
in place, and ``print(model)`` shows what it changed. Build the optimizer afterwards (``fit``
does): these transforms add parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrizations

from .core import Choice, ConfigError, Interval, Regularizer
from .structure import _CONV, _NORMS, LAYERS_CONSTRAINT, find_children, is_output_layer, no_match

__all__ = ["InsertNorm", "ReplaceNorm", "SpectralNorm", "WeightNorm", "make_norm"]

_KIND = Choice("batch", "layer")
_LAYERS = (nn.Linear, *_CONV)


def make_norm(kind: str, channels: int, spatial: bool) -> nn.Module:
    """A fresh norm layer over ``channels`` features.

    Args:
        kind: ``'batch'`` or ``'layer'``.
        channels: number of features (``Linear``) or channels (convolutions).
        spatial: the input has spatial dimensions ``(N, C, ...)``. Layer norm over a
            convolution's ``(C, H, W)`` is ``GroupNorm(1, C)``, which needs no spatial size.

    Returns:
        ``BatchNorm1d``/``BatchNorm2d``, ``LayerNorm`` or ``GroupNorm(1, C)``.

    Examples:
        >>> make_norm("batch", 16, spatial=True)
        BatchNorm2d(16, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels) if spatial else nn.BatchNorm1d(channels)
    return nn.GroupNorm(1, channels) if spatial else nn.LayerNorm(channels)


def _apply_norm(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook of :class:`InsertNorm`: the layer's output through its ``norm`` child."""
    return module.norm(output)


class InsertNorm(Regularizer):
    """Add a normalization layer after chosen ``Linear``/``Conv`` layers (before their
    activation, as in Ioffe and Szegedy 2015, https://arxiv.org/abs/1502.03167).

    The norm becomes a child named ``norm`` of the layer it follows, applied by a forward hook,
    so the layer's own parameter names do not change and ``print(model)`` shows it inside the
    layer: ``Linear(in_features=64, out_features=256, bias=True (norm): BatchNorm1d(256, ...))``.

    Args:
        kind: ``'batch'`` (``BatchNorm1d``/``2d``) or ``'layer'`` (``LayerNorm``; for
            convolutions ``GroupNorm(1, C)``, layer norm over channels and space).
        layers: None for every ``Linear``/``Conv1d/2d/3d`` but the model's last one (the output
            layer), or glob patterns over module names.

    Raises:
        ConfigError: for an unknown ``kind``; when no layer matched or a layer has a norm.

    Examples:
        >>> model = reglab.InsertNorm("batch").transform_model(
        ...     nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    """

    constraints = {"kind": _KIND, "layers": LAYERS_CONSTRAINT}

    def __init__(self, kind: str = "batch", *, layers: str | Sequence[str] | None = None) -> None:
        self.kind = kind

    def transform_model(self, model: nn.Module) -> nn.Module:
        layers = self._config["layers"]
        targets = [c for _, _, c, _ in find_children(model, layers) if isinstance(c, _LAYERS)]
        if layers is None:
            targets = [t for t in targets if not is_output_layer(model, t, _LAYERS)]
        if not targets:
            what = "Linear or Conv layer (the output layer is skipped by default)"
            raise no_match("InsertNorm", layers, what)
        for layer in targets:
            if hasattr(layer, "norm"):
                raise ConfigError(
                    "The 'model' parameter of InsertNorm must not already have a norm inserted "
                    f"after the chosen layers. Got {layer!r}."
                )
            spatial = isinstance(layer, _CONV)
            channels = layer.out_channels if spatial else layer.out_features
            layer.add_module("norm", make_norm(self.kind, channels, spatial))
            layer.register_forward_hook(_apply_norm)
        return model


class ReplaceNorm(Regularizer):
    """Replace a model's normalization layers (BatchNorm, LayerNorm, GroupNorm) by another kind,
    keeping their learned scale and shift.

    ``BatchNorm1d`` and ``LayerNorm`` act on ``(N, C)`` features, ``BatchNorm2d`` and
    ``GroupNorm`` on feature maps: ``'layer'`` turns ``BatchNorm2d`` into ``GroupNorm(1, C)``
    and ``'batch'`` turns ``GroupNorm`` into ``BatchNorm2d``.

    Args:
        kind: ``'batch'`` or ``'layer'``.
        layers: None for every norm layer, or glob patterns over module names.

    Raises:
        ConfigError: for an unknown ``kind``; when no norm layer matched; for a ``LayerNorm``
            over more than one dimension.

    Examples:
        >>> recipe = reglab.chain(reglab.ReplaceNorm("layer"))
    """

    constraints = {"kind": _KIND, "layers": LAYERS_CONSTRAINT}

    def __init__(self, kind: str = "layer", *, layers: str | Sequence[str] | None = None) -> None:
        self.kind = kind

    def transform_model(self, model: nn.Module) -> nn.Module:
        targets = [
            (parent, local, child)
            for parent, local, child, _ in find_children(model, self._config["layers"])
            if isinstance(child, _NORMS)
        ]
        if not targets:
            raise no_match("ReplaceNorm", self._config["layers"], "normalization layer")
        for parent, local, old in targets:
            if isinstance(old, nn.LayerNorm):
                if len(old.normalized_shape) != 1:
                    raise ConfigError(
                        "The 'model' parameter of ReplaceNorm must hold LayerNorms over one "
                        f"dimension. Got {local}: {old!r}."
                    )
                channels, spatial = old.normalized_shape[0], False
            elif isinstance(old, nn.GroupNorm):
                channels, spatial = old.num_channels, True
            else:
                channels, spatial = old.num_features, not isinstance(old, nn.BatchNorm1d)
            new = make_norm(self.kind, channels, spatial)
            with torch.no_grad():
                for name in ("weight", "bias"):
                    src = getattr(old, name, None)
                    if src is not None and getattr(new, name, None) is not None:
                        getattr(new, name).copy_(src)
            setattr(parent, local, new)
        return model


class _Reparametrize(Regularizer):
    """Apply a ``torch.nn.utils.parametrizations`` function to chosen Linear/Conv layers."""

    constraints = {"layers": LAYERS_CONSTRAINT}

    def _apply(self, layer: nn.Module) -> None:
        raise NotImplementedError

    def transform_model(self, model: nn.Module) -> nn.Module:
        name = type(self).__name__
        targets = [
            c
            for _, _, c, _ in find_children(model, self._config["layers"])
            if isinstance(c, _LAYERS)
        ]
        if not targets:
            raise no_match(name, self._config["layers"], "Linear or Conv layer")
        for layer in targets:
            if getattr(layer, "parametrizations", None) is not None:
                raise ConfigError(
                    f"The 'model' parameter of {name} must not already reparametrize the chosen "
                    f"layers' weights. Got {layer!r}."
                )
            self._apply(layer)
        return model


class WeightNorm(_Reparametrize):
    """Weight normalization ``w = g * v / ||v||`` (per output unit) on chosen layers, through
    ``torch.nn.utils.parametrizations.weight_norm``. Salimans and Kingma 2016,
    https://arxiv.org/abs/1602.07868.

    The weight becomes ``parametrizations.weight.original0`` (``g``) and ``original1``
    (``v``); penalties with the default selection act on both.

    Args:
        layers: None for every ``Linear``/``Conv`` layer, or glob patterns over module names.

    Raises:
        ConfigError: when no layer matched or one is already reparametrized.

    Examples:
        >>> recipe = reglab.chain(reglab.WeightNorm())
    """

    def __init__(self, *, layers: str | Sequence[str] | None = None) -> None:
        pass

    def _apply(self, layer: nn.Module) -> None:
        parametrizations.weight_norm(layer)


class SpectralNorm(_Reparametrize):
    """Spectral normalization ``w / sigma(w)`` on chosen layers, ``sigma`` estimated by power
    iteration in every training forward pass, through
    ``torch.nn.utils.parametrizations.spectral_norm``. Miyato et al. 2018,
    https://arxiv.org/abs/1802.05957.

    The power iteration's start vectors come from a fixed seed (not the global RNG), so a
    transformed model is reproducible.

    Args:
        n_power_iterations: power iterations per forward pass, ``>= 1``.
        layers: None for every ``Linear``/``Conv`` layer, or glob patterns over module names.

    Raises:
        ConfigError: for ``n_power_iterations < 1``; when no layer matched or one is already
            reparametrized.

    Examples:
        >>> recipe = reglab.chain(reglab.SpectralNorm())
    """

    constraints = {**_Reparametrize.constraints, "n_power_iterations": Interval(int, 1, None)}

    def __init__(
        self, n_power_iterations: int = 1, *, layers: str | Sequence[str] | None = None
    ) -> None:
        self.n_power_iterations = n_power_iterations

    def _apply(self, layer: nn.Module) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            parametrizations.spectral_norm(layer, n_power_iterations=self.n_power_iterations)
