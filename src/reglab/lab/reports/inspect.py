"""What a trained model looks like: sparsity and norms per layer, and which inputs it still uses."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...selection import select_params
from ..inputs.data import Dataset

__all__ = ["layer_label", "model_figures"]


def _input_weight(model: nn.Module, n_features: int) -> torch.Tensor | None:
    """The first selected 2-D weight that reads the raw features (an MLP's or linear model's
    first layer); None for models that start otherwise (a CNN)."""
    for w in select_params(model).params:
        return w if w.ndim == 2 and w.shape[1] == n_features else None
    return None


def layer_label(k: int, shape: torch.Size) -> str:
    """A weight's name for a reader: ``layer 1 (64→256)`` for a linear layer's ``(out, in)``
    weight, ``layer 2 (16→32, 3×3)`` for a convolution's, ``layer 3 (shape)`` otherwise."""
    if len(shape) == 2:
        return f"layer {k} ({shape[1]}→{shape[0]})"
    if len(shape) == 4:
        return f"layer {k} ({shape[1]}→{shape[0]}, {shape[2]}×{shape[3]})"
    return f"layer {k} ({'×'.join(map(str, shape))})"


@torch.no_grad()
def model_figures(model: nn.Module, data: Dataset) -> dict[str, Any]:
    """Figures of the weights of the default selection (weights, not biases or norms).

    Returns:
        ``figures``: ``zero_fraction`` (exactly-zero weights) and ``weight_l2`` over all of them,
        the same per tensor as ``zero_fraction[<name>]`` and ``weight_l2[<name>]``, and, when the
        first layer reads the raw features, ``features_kept`` (inputs with any non-zero weight)
        and ``features_total``, and, for data with known informative features,
        ``informative_kept`` and ``noise_kept``; ``features`` and ``dropped``: the names of the
        inputs still used and of those no longer used (when there are at most 200);
        ``histogram``: counts of all weights in 60 bins over ``[-bound, bound]``; ``layers``:
        each weight's name for a reader (:func:`layer_label`).
    """
    selection = select_params(model)
    figures: dict[str, float] = {}
    flat = torch.cat([w.detach().reshape(-1) for w in selection.params])
    figures["zero_fraction"] = float((flat == 0).double().mean())
    figures["weight_l2"] = float(flat.double().norm())
    layers = {}
    for k, (name, w) in enumerate(zip(selection.names, selection.params, strict=True), 1):
        figures[f"zero_fraction[{name}]"] = float((w == 0).double().mean())
        figures[f"weight_l2[{name}]"] = float(w.double().norm())
        layers[name] = layer_label(k, w.shape)
    out: dict[str, Any] = {"figures": figures, "layers": layers}
    first = _input_weight(model, data.n_features)
    if first is not None:
        kept = (first != 0).any(dim=0)
        figures["features_kept"] = float(kept.sum())
        if data.informative is not None:
            informative = torch.zeros_like(kept)
            informative[data.informative] = True
            figures["informative_kept"] = float((kept & informative).sum())
            figures["noise_kept"] = float((kept & ~informative).sum())
        figures["features_total"] = float(data.n_features)
        if data.n_features <= 200 and len(data.feature_names) == data.n_features:
            out["features"] = [data.feature_names[i] for i in kept.nonzero().ravel().tolist()]
            dropped = (~kept).nonzero().ravel().tolist()
            out["dropped"] = [data.feature_names[i] for i in dropped]
    bound = float(flat.abs().max()) or 1.0
    counts = torch.histc(flat.float(), bins=60, min=-bound, max=bound)
    out["histogram"] = {"bound": [bound], "counts": counts.tolist()}
    return out
