"""Model transforms: insert the dropout family into an existing model.

Each regularizer here changes a model once, in ``transform_model``, in place: it works on the
lab's models, on a user's ``nn.Sequential`` and on nested ``nn.Module``s, and ``print(model)``
shows every module it added. Inserted layers wrap the module they follow, so parameters keep
their objects (an optimizer built earlier stays valid). Layers are chosen by glob patterns over
module names (``layers='encoder.*'``) or, by default, by their type and place. Normalization and
weight reparametrization live in :mod:`reglab.normalization`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

import torch
from torch import nn

from .core import ConfigError, Predicate, Regularizer
from .drop import (
    BLOCK_CONSTRAINT,
    P_CONSTRAINT,
    AlphaDropoutLayer,
    ChannelDropoutLayer,
    DropBlockLayer,
    DropConnectLinear,
    DropLayer,
    DropoutLayer,
    DropPathLayer,
    GaussianDropoutLayer,
)

__all__ = [
    "ACTIVATIONS",
    "AlphaDropout",
    "ChannelDropout",
    "DropBlock",
    "DropConnect",
    "DropPath",
    "Dropout",
    "GaussianDropout",
    "Residual",
    "find_children",
    "is_output_layer",
    "no_match",
]

#: Module types after which the dropout regularizers insert by default.
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardswish,
    nn.Hardtanh,
)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _layers_spec(value: object) -> bool:
    return (
        value is None
        or isinstance(value, str)
        or (
            isinstance(value, Sequence)
            and len(value) > 0
            and all(isinstance(v, str) for v in value)
        )
    )


LAYERS_CONSTRAINT = Predicate(_layers_spec, "None or glob patterns over module names")


class Inserted(nn.Sequential):
    """A module followed by what a reglab transform inserted after it (shown by ``print``)."""


class Residual(nn.Module):
    """``x + branch(x)``: a residual block whose ``branch`` :class:`DropPath` finds by default.

    Args:
        branch: the residual branch; its output must have the input's shape.

    Examples:
        >>> block = Residual(nn.Sequential(nn.Linear(16, 16), nn.ReLU()))
    """

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def find_children(
    model: nn.Module, layers: str | Sequence[str] | None
) -> Iterator[tuple[nn.Module, str, nn.Module, str]]:
    """``(parent, local name, child, full name)`` for every module of ``model`` (not inside an
    :class:`Inserted` wrapper) whose full name matches one of the glob patterns ``layers``
    (every module when None)."""
    patterns = [layers] if isinstance(layers, str) else layers
    for name, module in model.named_modules():
        if isinstance(module, Inserted):
            continue
        for local, child in module.named_children():
            full = f"{name}.{local}" if name else local
            if patterns is None or any(fnmatch.fnmatchcase(full, p) for p in patterns):
                yield module, local, child, full


def no_match(owner: str, layers: object, what: str) -> ConfigError:
    """The error of a model transform whose ``layers`` chose nothing: names ``what`` it wanted."""
    return ConfigError(
        f"The 'layers' parameter of {owner} matched no {what} of the model. Got {layers!r}."
    )


def is_output_layer(model: nn.Module, module: nn.Module, types: tuple[type, ...]) -> bool:
    """Whether ``module`` is the last module of ``types`` in ``model`` (its output layer)."""
    last = [m for m in model.modules() if isinstance(m, types)][-1:]
    return module in last


def _follows_conv(parent: nn.Module, local: str) -> bool:
    """Whether ``parent.local`` comes right after a convolution (perhaps through a norm layer)
    in an ``nn.Sequential``."""
    if not isinstance(parent, nn.Sequential):
        return False
    before = list(parent._modules.values())[: list(parent._modules).index(local)]
    while before and isinstance(before[-1], _NORMS):
        before.pop()
    return bool(before) and isinstance(before[-1], _CONV)


class _Inserting(Regularizer):
    """Base of the transforms that add stochastic layers; ``attach`` hands them the generator."""

    def __init__(self) -> None:
        self.inserted: list[nn.Module] = []

    def _replace(
        self,
        model: nn.Module,
        targets: list[tuple[nn.Module, str, nn.Module]],
        what: str,
        make: Callable[[nn.Module], tuple[nn.Module, nn.Module]],
    ) -> nn.Module:
        """Put ``make(child)[0]`` in each target's place and keep ``make(child)[1]``, the new
        stochastic layer; no targets is a ConfigError naming ``what`` was looked for."""
        if not targets:
            raise no_match(type(self).__name__, self._config["layers"], what)
        for parent, local, child in targets:
            new, layer = make(child)
            self.inserted.append(layer)
            setattr(parent, local, new)
        return model

    def _new_layer(self) -> nn.Module:
        raise NotImplementedError

    def _wrap(self, child: nn.Module) -> tuple[nn.Module, nn.Module]:
        """``child`` followed by a new layer: ``(Inserted(child, layer), layer)``."""
        layer = self._new_layer()
        return Inserted(child, layer), layer

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None) -> None:
        name = type(self).__name__
        if not self.inserted:
            raise ConfigError(
                f"The 'model' parameter of {name}.attach must be a model returned by "
                f"{name}.transform_model. Got a model with nothing inserted."
            )
        for layer in self.inserted:
            layer.generator = generator


class _AfterActivation(_Inserting):
    """Insert ``layer_type(p)`` after chosen activation modules."""

    layer_type: ClassVar[type[DropLayer]]
    #: Default targets: 'hidden' = every activation but an output one; 'conv' = activations
    #: right after a convolution in an ``nn.Sequential``.
    default: ClassVar[str] = "hidden"
    constraints = {"p": P_CONSTRAINT, "layers": LAYERS_CONSTRAINT}

    def __init__(self, p: float, *, layers: str | Sequence[str] | None = None) -> None:
        super().__init__()
        self.p = p

    def _new_layer(self) -> nn.Module:
        return self.layer_type(self.p)

    def _default_target(self, model: nn.Module, parent: nn.Module, local: str) -> bool:
        if self.default == "conv":
            return _follows_conv(parent, local)
        is_output = (
            parent is model
            and isinstance(model, nn.Sequential)
            and (local == list(model._modules)[-1])
        )
        return not is_output

    def transform_model(self, model: nn.Module) -> nn.Module:
        layers = self._config["layers"]
        targets = [
            (parent, local, child)
            for parent, local, child, _ in find_children(model, layers)
            if isinstance(child, ACTIVATIONS)
            and (layers is not None or self._default_target(model, parent, local))
        ]
        conv = " after a convolution" if self.default == "conv" else ""
        return self._replace(model, targets, "activation module" + conv, self._wrap)


class Dropout(_AfterActivation):
    """Insert inverted dropout (:func:`reglab.dropout`) after the activations of a model.

    Each chosen activation ``act`` becomes ``Inserted(act, DropoutLayer(p))`` in place. An
    activation that is the last layer of a top-level ``nn.Sequential`` (an output activation)
    is left alone. Activations called as functions in ``forward`` cannot be found: use
    :class:`reglab.DropoutLayer` there. Srivastava et al. 2014,
    https://jmlr.org/papers/v15/srivastava14a.html.

    Args:
        p: drop probability in ``[0, 1)``.
        layers: None for every hidden activation module (types in :data:`ACTIVATIONS`), or glob
            patterns over module names (``'2'``, ``'encoder.*'``) choosing which of them.

    Raises:
        ConfigError: for ``p`` outside ``[0, 1)``; from ``transform_model`` when no activation
            matched.

    Examples:
        >>> model = reglab.Dropout(0.3).transform_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(),
        ...                                                           nn.Linear(8, 2)))
    """

    layer_type = DropoutLayer


class GaussianDropout(_AfterActivation):
    """Insert Gaussian dropout (:func:`reglab.gaussian_dropout`, multiplicative noise
    ``N(1, p/(1-p))``) after the hidden activations, as :class:`Dropout` does.

    Args:
        p: equivalent drop rate in ``[0, 1)``.
        layers: None (every hidden activation) or glob patterns over module names.

    Raises:
        ConfigError: for ``p`` outside ``[0, 1)``; when no activation matched.

    Examples:
        >>> recipe = reglab.chain(reglab.GaussianDropout(0.3))
    """

    layer_type = GaussianDropoutLayer


class AlphaDropout(_AfterActivation):
    """Insert alpha dropout (:func:`reglab.alpha_dropout`) after the hidden activations: the
    dropout of self-normalizing networks, meant for SELU activations.

    Args:
        p: drop probability in ``[0, 1)``; Klambauer et al. suggest 0.05 or 0.1.
        layers: None (every hidden activation) or glob patterns over module names.

    Raises:
        ConfigError: for ``p`` outside ``[0, 1)``; when no activation matched.

    Examples:
        >>> recipe = reglab.chain(reglab.AlphaDropout(0.05))
    """

    layer_type = AlphaDropoutLayer


class ChannelDropout(_AfterActivation):
    """Insert spatial (channel) dropout (:func:`reglab.channel_dropout`) after the activations
    that follow a convolution: whole feature maps are dropped.

    Args:
        p: drop probability of a channel, in ``[0, 1)``.
        layers: None (activations right after a ``Conv1d/2d/3d``, possibly through a norm
            layer, in an ``nn.Sequential``) or glob patterns over module names.

    Raises:
        ConfigError: for ``p`` outside ``[0, 1)``; when no activation matched.

    Examples:
        >>> recipe = reglab.chain(reglab.ChannelDropout(0.1))
    """

    layer_type = ChannelDropoutLayer
    default = "conv"


class DropBlock(_AfterActivation):
    """Insert DropBlock (:func:`reglab.drop_block`) after the activations that follow a 2-D
    convolution: contiguous ``block_size x block_size`` squares of feature maps are dropped.
    Ghiasi et al. 2018, https://arxiv.org/abs/1810.12890.

    Args:
        p: fraction of units to drop, in ``[0, 1)``.
        block_size: side of the blocks, ``>= 1`` (1 is dropout with per-sample rescaling).
        layers: None (activations right after a convolution in an ``nn.Sequential``) or glob
            patterns over module names; chosen modules must output ``(N, C, H, W)``.

    Raises:
        ConfigError: for ``p`` outside ``[0, 1)`` or ``block_size < 1``; when no activation
            matched.

    Examples:
        >>> recipe = reglab.chain(reglab.DropBlock(0.1, block_size=3))
    """

    constraints = {**_AfterActivation.constraints, "block_size": BLOCK_CONSTRAINT}
    default = "conv"

    def __init__(
        self, p: float, block_size: int = 3, *, layers: str | Sequence[str] | None = None
    ) -> None:
        super().__init__(p, layers=layers)
        self.block_size = block_size

    def _new_layer(self) -> nn.Module:
        return DropBlockLayer(self.p, self.block_size)


class DropConnect(_Inserting):
    """Replace chosen ``nn.Linear`` layers by :class:`reglab.DropConnectLinear`: their weights
    get a fresh inverted-dropout mask at every forward pass in training (one mask per batch).
    The new layers share the old ones' parameters. Wan et al. 2013,
    https://proceedings.mlr.press/v28/wan13.html.

    Args:
        p: drop probability of a weight, in ``[0, 1)``.
        layers: None for every ``nn.Linear`` but the model's last one (the output layer), or
            glob patterns over module names.

    Raises:
        ConfigError: for ``p`` outside ``[0, 1)``; when no linear layer matched.

    Examples:
        >>> recipe = reglab.chain(reglab.DropConnect(0.3))
    """

    constraints = {"p": P_CONSTRAINT, "layers": LAYERS_CONSTRAINT}

    def __init__(self, p: float, *, layers: str | Sequence[str] | None = None) -> None:
        super().__init__()
        self.p = p

    def transform_model(self, model: nn.Module) -> nn.Module:
        layers = self._config["layers"]
        targets = [
            (parent, local, child)
            for parent, local, child, _ in find_children(model, layers)
            if isinstance(child, nn.Linear) and not isinstance(child, DropConnectLinear)
        ]
        if layers is None:
            targets = [t for t in targets if not is_output_layer(model, t[2], (nn.Linear,))]
        what = "nn.Linear layer (the output layer is skipped by default)"
        return self._replace(model, targets, what, self._swap)

    def _swap(self, child: nn.Module) -> tuple[nn.Module, nn.Module]:
        layer = DropConnectLinear.from_linear(child, self.p)
        return layer, layer


class DropPath(_Inserting):
    """Stochastic depth: add :class:`reglab.DropPathLayer` at the end of residual branches, so
    ``x + branch(x)`` becomes ``x + drop_path(branch(x))``, the whole branch dropped per sample.
    Huang et al. 2016, https://arxiv.org/abs/1603.09382.

    Args:
        p: drop probability of a branch, in ``[0, 1)``.
        layers: None for the ``branch`` of every :class:`Residual` block, or glob patterns
            naming the residual branches of your own blocks (``'blocks.*.mlp'``).

    Raises:
        ConfigError: for ``p`` outside ``[0, 1)``; when no branch matched.

    Examples:
        >>> recipe = reglab.chain(reglab.DropPath(0.1))  # on a model built from reglab.Residual
    """

    constraints = {"p": P_CONSTRAINT, "layers": LAYERS_CONSTRAINT}

    def __init__(self, p: float, *, layers: str | Sequence[str] | None = None) -> None:
        super().__init__()
        self.p = p

    def transform_model(self, model: nn.Module) -> nn.Module:
        layers = self._config["layers"]
        targets = [
            (parent, local, child)
            for parent, local, child, _ in find_children(model, layers)
            if layers is not None or (isinstance(parent, Residual) and local == "branch")
        ]
        what = "residual branch (reglab.Residual's branch by default)"
        return self._replace(model, targets, what, self._wrap)

    def _new_layer(self) -> nn.Module:
        return DropPathLayer(self.p)
