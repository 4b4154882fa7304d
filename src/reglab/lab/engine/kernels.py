"""Batched penalty kernels for the population engine: per-member strengths as tensors.

A population holds each parameter as one ``(K, ...)`` tensor. The penalties whose strengths are
single numbers (:class:`reglab.L1`, :class:`reglab.L2`, :class:`reglab.ElasticNet` and
:class:`reglab.WeightDecay`) then run as one in-place operation per parameter name, with a
``(K, 1, ...)`` tensor of per-member coefficients (0, or a factor of 1, for members without
them), instead of one call per member:

- ``on_after_backward``: ``w *= 1 - lr * rate`` (weight decay), then
  ``grad += l2 * w + l1_subgradient * sign(w)``;
- ``on_after_step``: ``w <- w - clamp(w, -t, t)`` with ``t = lr * l1`` (the proximal L1 step).

These are the same formulas, in the same order, as the regularizers' own hooks; strengths of the
same kind on the same parameter add up (two soft-thresholdings compose into one with the summed
threshold; weight-decay factors multiply).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...core import Regularizer
from ...proximal import soft_threshold_

__all__ = ["Kernels", "split_kernels"]

_PARAM_HOOKS = ("on_after_backward", "on_after_step")


def kernel_rank(reg: Regularizer) -> int | None:
    """Where a regularizer runs among the kernels (0: weight decay, 1: elementwise penalties),
    or None when it must run as its own hooks (no :class:`~reglab.core.ElementwiseTerms`:
    tensor strengths, other kinds)."""
    terms = reg.elementwise_terms()
    if terms is None:
        return None
    return 0 if terms.decay is not None else 1


class Kernels:
    """Per-member coefficient tables over the stacked parameters ``P`` (name -> ``(K, ...)``).

    Args:
        P: the population's stacked parameters.
        lr: the learning rate (the proximal threshold and decay factor use it).
    """

    def __init__(self, P: dict[str, nn.Parameter], lr: float) -> None:
        self.P, self.lr = P, lr
        self.size = len(next(iter(P.values())))
        self.tables: dict[str, dict[str, list[float]]] = {
            "decay": {},
            "l2": {},
            "l1_grad": {},
            "threshold": {},
        }

    def _add(self, table: str, names: list[str], k: int, value: float, multiply: bool = False):
        for n in names:
            start = 1.0 if multiply else 0.0
            row = self.tables[table].setdefault(n, [start] * self.size)
            row[k] = row[k] * value if multiply else row[k] + value

    def add(self, k: int, reg: Regularizer) -> None:
        """Fold member ``k``'s regularizer (attached to its shadow model) into the tables."""
        terms = reg.elementwise_terms()
        names = list(terms.names)
        if terms.decay is not None:
            self._add("decay", names, k, 1 - self.lr * terms.decay, multiply=True)
            return
        if terms.l2 is not None:
            self._add("l2", names, k, terms.l2)
        if terms.l1 is not None:
            table = "threshold" if terms.proximal else "l1_grad"
            scale = self.lr if terms.proximal else 1.0
            self._add(table, names, k, terms.l1 * scale)

    def finish(self, rows: list[int] | None = None) -> None:
        """Turn the tables into broadcasting tensors over runs of consecutive rows that use
        them (the population orders members by recipe, so a recipe's members form one run);
        rows outside every run are not touched.

        Args:
            rows: the member of each row of the stacked parameters (default: member ``i`` in
                row ``i``); called again when the population drops finished members' rows.
        """
        rows = list(range(self.size)) if rows is None else rows
        self.runs: dict[str, list[tuple[str, slice, torch.Tensor]]] = {}
        for table, values in self.tables.items():
            neutral = 1.0 if table == "decay" else 0.0
            self.runs[table] = []
            for n, by_member in values.items():
                row = [by_member[k] for k in rows]
                p = self.P[n]
                shape = (-1, *[1] * (p.ndim - 1))
                for start, stop in _runs([v != neutral for v in row]):
                    coef = torch.tensor(row[start:stop], dtype=p.dtype, device=p.device)
                    self.runs[table].append((n, slice(start, stop), coef.view(shape)))

    @torch.no_grad()
    def after_backward(self) -> None:
        for n, rows, factor in self.runs["decay"]:
            self.P[n][rows].mul_(factor)
        for n, rows, c in self.runs["l2"]:
            self.P[n].grad[rows].addcmul_(self.P[n][rows], c)
        for n, rows, c in self.runs["l1_grad"]:
            self.P[n].grad[rows].addcmul_(torch.sign(self.P[n][rows]), c)

    @torch.no_grad()
    def after_step(self) -> None:
        for n, rows, t in self.runs["threshold"]:
            soft_threshold_(self.P[n].data[rows], t)


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True in ``flags``."""
    runs, start = [], None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i))
            start = None
    return runs


def split_kernels(recipe: Any, kernels: Kernels, k: int) -> dict[str, list[Regularizer]]:
    """Hand member ``k``'s kernel-able regularizers to ``kernels``; return the rest of its
    parameter and gradient hooks, in chain order, to run on its shadow model.

    Kernels run before the per-member hooks of the same point, in rank order, so a regularizer
    becomes a kernel only while that keeps the chain's order: after a per-member parameter hook,
    or after a kernel of a higher rank, everything stays a per-member hook.
    """
    hooks: dict[str, list[Regularizer]] = {h: [] for h in _PARAM_HOOKS}
    kernel_ok, last = True, -1
    for reg in recipe.regularizers:
        rank = kernel_rank(reg)
        if kernel_ok and rank is not None and rank >= last:
            kernels.add(k, reg)
            last = rank
            continue
        touches = [h for h in _PARAM_HOOKS if reg.implements(h)]
        for h in touches:
            hooks[h].append(reg)
        if touches:
            kernel_ok = False
    return hooks
