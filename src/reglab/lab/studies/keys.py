"""A trial's identity: :class:`Trial` (a recipe at a seed under a study's
:class:`TrialSettings`) and its key, the hash a finished trial's file and its checkpoints are
tagged with. Both the planning (:mod:`reglab.lab.studies.study`) and the checkpoints read it;
it imports neither.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ... import __version__
from .store import NOT_IN_KEY, safe_name

__all__ = ["Trial", "TrialSettings"]


class TrialSettings(Mapping[str, Any]):
    """The settings that shape every trial of a study (data, model, training, device), in the
    one form they travel in from the plan to a worker: a read-only mapping
    (``settings["epochs"]``, ``settings.get("deterministic")``), hashable and comparable by
    value, so a :class:`Trial` carries it as it is. :func:`reglab.lab.studies.seams.trial_settings`
    makes it from a :class:`~reglab.lab.studies.config.StudyConfig`.

    Args:
        values: each setting's plain value (numbers, strings, lists, tables, None).

    Examples:
        >>> TrialSettings({"epochs": 150, "lr": 1e-3})["epochs"]
        150
    """

    __slots__ = ("_pairs", "_values")

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)
        self._pairs = tuple(sorted((k, json.dumps(v)) for k, v in self._values.items()))

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __hash__(self) -> int:
        return hash(self._pairs)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TrialSettings):
            return self._pairs == other._pairs
        return NotImplemented

    def __repr__(self) -> str:
        return f"TrialSettings({self._values!r})"

    def __getstate__(self) -> tuple:
        return self._values, self._pairs

    def __setstate__(self, state: tuple) -> None:
        self._values, self._pairs = state

    def pairs(self) -> tuple[tuple[str, str], ...]:
        """``(name, JSON text of the value)``, sorted by name: what a trial's key hashes."""
        return self._pairs


@dataclass(frozen=True)
class Trial:
    """One recipe at one seed, with everything a worker process needs. ``batched`` says whether
    the population engine can train it (decided once, when the study is planned); it is not
    part of the key."""

    recipe: str
    spec: tuple  # JSON text of the regularizer specs, to keep the dataclass hashable
    seed: int
    settings: TrialSettings
    batched: bool = True

    @property
    def key(self) -> str:
        """A hash of the configuration of this trial (and reglab's version): every setting but
        those that cannot change its numbers (:data:`NOT_IN_KEY`)."""
        shaping = [kv for kv in self.settings.pairs() if kv[0] not in NOT_IN_KEY]
        payload = json.dumps([self.recipe, self.spec, self.seed, shaping, __version__])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def filename(self) -> str:
        return f"{safe_name(self.recipe)}__seed{self.seed}.json"
