"""Monte-Carlo dropout: predictions with the dropout family kept on at inference."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .core import ConfigError, Interval, check_param
from .drop import DropConnectLinear, DropLayer

__all__ = ["STOCHASTIC", "MCPrediction", "mc_predict"]


#: Modules that :func:`mc_predict` keeps stochastic at inference.
STOCHASTIC = (DropLayer, DropConnectLinear, nn.modules.dropout._DropoutNd)


class MCPrediction(NamedTuple):
    """What :func:`mc_predict` returns: the mean and the standard deviation over samples."""

    mean: torch.Tensor
    std: torch.Tensor


@torch.no_grad()
def mc_predict(
    model: nn.Module,
    x: torch.Tensor,
    samples: int = 30,
    *,
    probabilities: bool = True,
    generator: torch.Generator | None = None,
) -> MCPrediction:
    """Monte-Carlo dropout: predict ``samples`` times with the dropout family switched on and
    everything else (BatchNorm statistics included) in eval mode; return the mean prediction and
    its spread. Gal and Ghahramani 2016, https://arxiv.org/abs/1506.02142.

    Args:
        model: a model holding dropout modules (reglab's, ``DropConnectLinear`` or
            ``torch.nn.Dropout*``); its training modes are restored afterwards.
        x: the inputs.
        samples: number of stochastic forward passes, ``>= 2``.
        probabilities: apply softmax to each pass (classification); False averages the raw
            outputs (regression).
        generator: randomness for reglab's dropout modules (``torch.nn.Dropout`` draws from the
            global RNG).

    Returns:
        :class:`MCPrediction` ``(mean, std)``, each shaped like one model output.

    Raises:
        ConfigError: for ``samples < 2``, a model without dropout modules, or
            ``probabilities=True`` on a model with a single output.

    Examples:
        >>> mean, std = reglab.mc_predict(model, x_test, samples=50)
        >>> uncertain = std.gather(1, mean.argmax(1, keepdim=True))
    """
    check_param("mc_predict", "samples", samples, Interval(int, 2, None))
    stochastic = [m for m in model.modules() if isinstance(m, STOCHASTIC)]
    if not stochastic:
        raise ConfigError(
            "The 'model' parameter of mc_predict must hold dropout modules (e.g. inserted by "
            "reglab.Dropout). Got a model without any, whose predictions would not vary."
        )
    modes = [(m, m.training) for m in model.modules()]
    generators = [(m, getattr(m, "generator", None)) for m in stochastic]
    try:
        model.eval()
        for m in stochastic:
            m.train()
            if generator is not None and hasattr(m, "generator"):
                m.generator = generator
        total = sq = None
        for _ in range(samples):
            out = model(x)
            if probabilities and out.shape[-1] == 1:
                raise ConfigError(
                    "The 'probabilities' parameter of mc_predict must be False for a model with "
                    "one output (a softmax over one logit is always 1, so the spread would be 0; "
                    "for a binary classifier apply torch.sigmoid to the mean yourself). Got True."
                )
            out = out.softmax(-1) if probabilities else out
            total = out.clone() if total is None else total.add_(out)
            sq = out * out if sq is None else sq.add_(out * out)
    finally:
        for m, mode in modes:
            m.training = mode
        for m, g in generators:
            if hasattr(m, "generator"):
                m.generator = g
    mean = total / samples
    var = (sq / samples - mean * mean).clamp_min_(0) * (samples / (samples - 1))
    return MCPrediction(mean, var.sqrt())
