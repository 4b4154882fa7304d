"""Models for the lab: the built-in MLP, residual MLP, small CNN and linear model, and a user's
own factory (``package.module:function`` or ``file.py:function``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ...core import Choice, ConfigError, Interval, Predicate, check_param
from ...structure import Residual
from .user import first_line, load_function

__all__ = ["MODELS", "build_model", "model_from_factory"]

MODELS = {
    "mlp": "fully connected network; hidden widths, activation and init are settings",
    "cnn": "two 3x3 convolutions, max-pooling and a hidden layer; needs image data (digits)",
    "linear": "linear (regression) or logistic (classification) model",
    "resmlp": "MLP whose hidden layers after the first are residual blocks (for DropPath); "
    "equal hidden widths",
}
_ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "selu": nn.SELU,
}
_INITS = ("he", "xavier", "orthogonal", "torch")


def _init_weights(model: nn.Module, init: str, activation: str) -> None:
    relu_like = ("relu", "gelu", "silu", "elu", "leaky_relu")
    gain_name = "relu" if activation in relu_like else "selu" if activation == "selu" else "tanh"
    for module in model.modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        if init == "he" and activation == "selu":  # LeCun normal, as self-normalizing nets need
            nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
        elif init == "he":
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif init == "xavier":
            nn.init.xavier_uniform_(module.weight, gain=nn.init.calculate_gain(gain_name))
        elif init == "orthogonal":
            nn.init.orthogonal_(
                module.weight.view(module.weight.shape[0], -1),
                gain=nn.init.calculate_gain(gain_name),
            )
        if init != "torch" and module.bias is not None:
            nn.init.zeros_(module.bias)


def _widths(value: object) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in value)
    )


def build_model(
    name: str,
    in_features: int,
    out_features: int,
    *,
    seed: int = 0,
    widths: Sequence[int] = (256, 256),
    activation: str = "relu",
    init: str = "he",
    image_shape: tuple[int, int, int] | None = None,
) -> nn.Module:
    """Build a lab model with weights drawn from ``seed`` (global RNG state is left as it was).

    Args:
        name: ``'mlp'``, ``'resmlp'``, ``'cnn'`` or ``'linear'``.
        in_features: number of (flattened) input features.
        out_features: classes, or 1 for regression.
        seed: the initial weights depend on it alone.
        widths: hidden widths of the MLP (empty: no hidden layer).
        activation: one of relu, gelu, tanh, silu, elu, leaky_relu, selu.
        init: ``'he'`` (LeCun normal for selu), ``'xavier'``, ``'orthogonal'`` or ``'torch'``
            (PyTorch's default); biases start at zero except with ``'torch'``.
        image_shape: ``(C, H, W)`` of the flattened inputs; required by ``'cnn'``.

    Returns:
        An ``nn.Sequential`` that takes ``(B, in_features)`` inputs.

    Raises:
        ConfigError: for an unknown name, activation or init, bad widths, ``'cnn'``
            without image data, or ``'resmlp'`` with unequal or no hidden widths.
    """
    check_param("compare", "model", name, Choice(*MODELS))
    check_param("compare", "activation", activation, Choice(*_ACTIVATIONS))
    check_param("compare", "init", init, Choice(*_INITS))
    check_param("compare", "widths", widths, Predicate(_widths, "a list of ints >= 1"))
    check_param("compare", "seed", seed, Interval(int, 0, None))
    act = _ACTIVATIONS[activation]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "linear":
            model = nn.Sequential(nn.Linear(in_features, out_features))
        elif name == "mlp":
            layers: list[nn.Module] = []
            width = in_features
            for w in widths:
                layers += [nn.Linear(width, w), act()]
                width = w
            model = nn.Sequential(*layers, nn.Linear(width, out_features))
        elif name == "resmlp":
            if not widths or len(set(widths)) != 1:
                raise ConfigError(
                    "The 'widths' parameter of compare must be one or more equal widths for "
                    f"'resmlp' (residual blocks keep the width). Got {list(widths)!r}."
                )
            w = widths[0]
            blocks = [Residual(nn.Sequential(nn.Linear(w, w), act())) for _ in widths[1:]]
            model = nn.Sequential(
                nn.Linear(in_features, w), act(), *blocks, nn.Linear(w, out_features)
            )
        else:
            if image_shape is None:
                raise ConfigError(
                    "The 'model' parameter of compare must be 'mlp' or 'linear' "
                    "for data that are not images. Got 'cnn'."
                )
            c, h, w = image_shape
            model = nn.Sequential(
                nn.Unflatten(1, (c, h, w)),
                nn.Conv2d(c, 16, 3, padding=1),
                act(),
                nn.Conv2d(16, 32, 3, padding=1),
                act(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(32 * (h // 2) * (w // 2), 128),
                act(),
                nn.Linear(128, out_features),
            )
        _init_weights(model, init, activation)
    return model


def model_from_factory(
    spec: str,
    input_shape: Sequence[int],
    num_outputs: int,
    *,
    seed: int = 0,
    model_args: dict[str, Any] | None = None,
) -> nn.Module:
    """A user's model: ``function(input_shape, num_outputs, **model_args)`` with torch seeded
    from ``seed`` (global RNG state is left as it was), so every recipe of a seed starts from the
    same initial weights.

    Args:
        spec: ``'package.module:function'``, ``'path/to/file.py:function'`` or a ``python:``
            token (see :mod:`reglab.lab.inputs.user`).
        input_shape: the shape of one input as the model receives it (``(features,)`` for
            tables and the built-in data, ``(C, H, W)`` for an image folder).
        num_outputs: classes, or 1 for regression.
        seed: the initial weights depend on it alone.
        model_args: keyword arguments for the function.

    Returns:
        The ``nn.Module`` the function returned.

    Raises:
        ConfigError: the function cannot be loaded, raises, or returns something that is not
            an ``nn.Module``.

    Examples:
        >>> model_from_factory("examples/residual_cnn.py:residual_cnn", (1, 16, 16), 10)
    """
    factory = load_function(spec, "model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = factory(tuple(input_shape), num_outputs, **(model_args or {}))
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"The model factory {spec!r} raised {type(exc).__name__}: {first_line(exc)} "
                "(called with "
                f"input_shape={tuple(input_shape)}, num_outputs={num_outputs}, "
                f"model_args={model_args or {}})."
            ) from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"The model factory {spec!r} must return a torch.nn.Module. Got a "
            f"{type(model).__name__}."
        )
    return model
