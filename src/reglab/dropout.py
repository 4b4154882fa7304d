"""The dropout family: pure functions, thin modules, and the regularizers that insert them."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch
from torch import nn

from .core import ConfigError, Interval, Predicate, Regularizer, check_param

__all__ = ["ACTIVATIONS", "Dropout", "DropoutLayer", "dropout"]

#: Module types after which :class:`Dropout` inserts dropout by default.
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

_P = Interval(float, 0, 1, "left")


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
        p: drop probability in ``[0, 1)``; a float or a tensor that broadcasts against ``x``.
        training: apply dropout (True) or return ``x`` (False).
        generator: the source of randomness; global RNG state is never used when given.

    Returns:
        A tensor shaped like ``x``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> y = dropout(torch.ones(1000), 0.5, generator=g)  # zeros and twos, mean ~1
    """
    if not training:
        return x
    keep = 1 - p
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x * (u < keep).to(x.dtype).div_(keep)


class DropoutLayer(nn.Module):
    """A module around :func:`dropout`: inverted dropout with probability ``p`` in training,
    the identity in eval mode. ``generator`` may be set after construction (``Dropout.attach``
    does); when None, dropout draws from the global RNG like ``torch.nn.Dropout``.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), DropoutLayer(0.2), nn.Linear(8, 2))
    """

    def __init__(
        self, p: float | torch.Tensor = 0.5, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()

        check_param("DropoutLayer", "p", p, _P)
        self.p = p
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _AfterActivation(nn.Sequential):
    """An activation followed by the dropout that :class:`Dropout` inserted."""


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


class Dropout(Regularizer):
    """Insert inverted dropout (:func:`dropout`) after the activations of a model.

    ``transform_model`` wraps each chosen activation module ``act`` as
    ``Sequential(act, DropoutLayer(p))`` in place, so parameter names and any optimizer built
    earlier stay valid, and ``print(model)`` shows each insertion. An activation that is the last
    layer of a top-level ``nn.Sequential`` (an output activation) is left alone. Activations
    called as functions in ``forward`` cannot be found: use :class:`DropoutLayer` there.

    Args:
        p: drop probability in ``[0, 1)``.
        layers: ``None`` for every activation module (types in :data:`ACTIVATIONS`), or glob
            patterns over module names (``'2'``, ``'encoder.*'``) choosing which of them.

    Raises:
        ConfigError: for ``p`` outside ``[0, 1)``; from ``transform_model`` when no activation
            matched.

    Example:
        >>> model = reglab.Dropout(0.3).transform_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(),
        ...                                                           nn.Linear(8, 2)))
    """

    constraints = {
        "p": _P,
        "layers": Predicate(_layers_spec, "None or glob patterns over module names"),
    }

    def __init__(self, p: float, *, layers: str | Sequence[str] | None = None) -> None:
        self.p = p
        self.inserted: list[DropoutLayer] = []

    def transform_model(self, model: nn.Module) -> nn.Module:
        patterns = self._config["layers"]
        patterns = [patterns] if isinstance(patterns, str) else patterns
        targets = []
        for name, module in model.named_modules():
            if isinstance(module, _AfterActivation):
                continue
            for child_name, child in module.named_children():
                full = f"{name}.{child_name}" if name else child_name
                if not isinstance(child, ACTIVATIONS):
                    continue
                if patterns is not None and not any(
                    fnmatch.fnmatchcase(full, pt) for pt in patterns
                ):
                    continue
                is_output = (
                    module is model and isinstance(model, nn.Sequential) and child is model[-1]
                )
                if not is_output:
                    targets.append((module, child_name, child))
        if not targets:
            raise ConfigError(
                f"The 'layers' parameter of Dropout matched no activation module of the model. "
                f"Got {self._config['layers']!r}; activations are found among modules of types "
                f"{', '.join(t.__name__ for t in ACTIVATIONS[:6])}, ..."
            )
        for parent, child_name, child in targets:
            layer = DropoutLayer(self.p)
            self.inserted.append(layer)
            setattr(parent, child_name, _AfterActivation(child, layer))
        return model

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None) -> None:
        if not self.inserted:
            raise ConfigError(
                "The 'model' parameter of Dropout.attach must be a model returned by "
                "Dropout.transform_model. Got a model with no dropout inserted."
            )
        for layer in self.inserted:
            layer.generator = generator
