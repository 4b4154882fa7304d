"""Soft targets and output penalties: label smoothing, the confidence penalty."""

from __future__ import annotations

import torch

from .core import ConfigError, Interval, Regularizer

__all__ = [
    "ConfidencePenalty",
    "LabelSmoothing",
    "confidence_penalty",
    "resolve_num_classes",
    "smooth_labels",
    "soft_targets",
]


def soft_targets(
    y: torch.Tensor, num_classes: int, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Class probabilities with the classes on dim 1, as ``torch.nn.functional.cross_entropy``
    takes them: one-hot ``(B, K)`` for class indices ``(B,)``, and ``(B, K, d1, ...)`` for dense
    class indices ``(B, d1, ...)`` (segmentation), in ``dtype`` (default PyTorch's default
    dtype); class probabilities (floating-point, e.g. from mixup) pass through, cast to
    ``dtype`` when one is given."""
    if y.is_floating_point() and y.ndim >= 2:
        return y if dtype is None else y.to(dtype)
    onehot = torch.nn.functional.one_hot(y.long(), num_classes)
    return onehot.movedim(-1, 1).to(dtype or torch.get_default_dtype())


def resolve_num_classes(owner: str, given: int | None, from_attach: int | None) -> int:
    """The number of classes a regularizer was given, else the one ``attach`` passed.

    Raises:
        ConfigError: when neither is known (e.g. a regression task).
    """
    classes = given or from_attach
    if classes is None:
        raise ConfigError(
            f"The 'num_classes' parameter of {owner} must be an int >= 2 (given here or by a "
            "classification task at attach). Got None."
        )
    return classes


def smooth_labels(
    y: torch.Tensor,
    eps: float | torch.Tensor,
    num_classes: int,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Smoothed class probabilities: ``(1 - eps) * onehot(y) + eps / num_classes``.

    ``y`` may hold class indices (shape ``(B,)``, or ``(B, d1, ...)`` for dense outputs; the
    result is then ``(B, K, d1, ...)``, classes on dim 1) or class probabilities (shape
    ``(B, K, ...)``, e.g. from mixup); rows of the result sum to 1. With ``ignore_index``, the
    positions holding it get all-zero rows and the others are scaled by (positions) / (positions
    kept), so that ``cross_entropy``'s mean over every position is the mean over the kept ones:
    ``torch.nn.CrossEntropyLoss(label_smoothing=eps, ignore_index=ignore_index)`` exactly (when
    every position is ignored the loss is 0, where PyTorch's is NaN). Szegedy et al. 2016,
    https://arxiv.org/abs/1512.00567.

    Args:
        y: class indices or class probabilities.
        eps: smoothing in ``[0, 1]``.
        num_classes: ``K``.
        ignore_index: a class index that marks positions to leave out, or None.

    Returns:
        Soft targets for ``torch.nn.functional.cross_entropy``.

    Examples:
        >>> smooth_labels(torch.tensor([0]), 0.1, 2)
        tensor([[0.9500, 0.0500]])
    """
    if ignore_index is None or y.is_floating_point():
        return soft_targets(y, num_classes) * (1 - eps) + eps / num_classes
    kept = y != ignore_index
    smoothed = soft_targets(torch.where(kept, y, 0), num_classes) * (1 - eps) + eps / num_classes
    scale = kept.numel() / kept.sum().clamp(min=1)  # a tensor: no host sync
    return smoothed * (kept * scale).unsqueeze(1).to(smoothed.dtype)


class LabelSmoothing(Regularizer):
    """Train on ``(1 - eps) * onehot(y) + eps / K`` instead of hard labels.

    With hard labels and cross-entropy this equals
    ``torch.nn.CrossEntropyLoss(label_smoothing=eps, ignore_index=ignore_index)``, for logits
    ``(N, C)`` with targets ``(N,)`` and for dense logits ``(N, C, d1, ...)`` with targets
    ``(N, d1, ...)`` (:func:`smooth_labels`). Soft targets are smoothed the same way.

    Args:
        eps: smoothing in ``[0, 1]``.
        num_classes: ``K``; taken from ``attach`` (the lab and ``fit`` pass it) when None.
        ignore_index: a target value whose positions do not count, as in
            ``CrossEntropyLoss``; None for none.

    Raises:
        ConfigError: for ``eps`` outside ``[0, 1]``; at ``attach``, no number of classes.

    Examples:
        >>> recipe = reglab.chain(reglab.LabelSmoothing(0.1))
    """

    constraints = {
        "eps": Interval(float, 0, 1),
        "num_classes": Interval(int, 2, None, allow_none=True),
        "ignore_index": Interval(int, allow_none=True),
    }

    def __init__(
        self, eps: float, *, num_classes: int | None = None, ignore_index: int | None = None
    ) -> None:
        self.eps, self.ignore_index = eps, ignore_index
        self._classes = num_classes

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None) -> None:
        self._classes = resolve_num_classes(
            "LabelSmoothing", self._config["num_classes"], num_classes
        )

    def on_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, smooth_labels(y, self.eps, self._classes, self.ignore_index)


def confidence_penalty(logits: torch.Tensor) -> torch.Tensor:
    """The mean negative entropy of the predicted distributions, ``-mean_i H(softmax(z_i))``,
    with ``H(p) = -sum_k p_k log p_k``: lowest (``-log K``) for uniform predictions, 0 for
    one-hot ones. Pereyra et al. 2017, https://arxiv.org/abs/1701.06548.

    Args:
        logits: ``(B, K)`` unnormalized scores.

    Returns:
        A scalar tensor, differentiable.

    Examples:
        >>> confidence_penalty(torch.zeros(1, 4))  # uniform: -log 4
        tensor(-1.3863)
    """
    log_p = torch.log_softmax(logits, dim=-1)
    return (log_p.exp() * log_p).sum(-1).mean()


class ConfidencePenalty(Regularizer):
    """Penalize confident output distributions: ``loss + beta * (-H(softmax(logits)))``, the
    batch mean of the negative entropy (:func:`confidence_penalty`). Pereyra et al. 2017,
    https://arxiv.org/abs/1701.06548. Works on the raw model output, so it needs a classifier
    whose output is logits.

    Args:
        beta: strength, ``>= 0``; Pereyra et al. use 0.1 to 2.

    Raises:
        ConfigError: for ``beta < 0``.

    Examples:
        >>> recipe = reglab.chain(reglab.ConfidencePenalty(0.5))
    """

    constraints = {"beta": Interval(float, 0, None)}

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def on_loss(self, loss: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return loss + self.beta * confidence_penalty(output)
