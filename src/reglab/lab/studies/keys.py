"""A trial's identity: :class:`Trial` (a recipe at a seed under a study's settings) and its
key, the hash a finished trial's file and its checkpoints are tagged with. Both the planning
(:mod:`reglab.lab.studies.study`) and the checkpoints read it; it imports neither.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ... import __version__
from .store import NOT_IN_KEY, safe_name

__all__ = ["Trial"]


@dataclass(frozen=True)
class Trial:
    """One recipe at one seed, with everything a worker process needs. ``batched`` says whether
    the population engine can train it (decided once, when the study is planned); it is not
    part of the key."""

    recipe: str
    spec: tuple  # JSON text of the regularizer specs, to keep the dataclass hashable
    seed: int
    settings: tuple  # sorted (key, value) pairs of the study settings that shape a trial
    batched: bool = True

    @property
    def key(self) -> str:
        """A hash of the configuration of this trial (and reglab's version): every setting but
        those that cannot change its numbers (:data:`NOT_IN_KEY`)."""
        shaping = [kv for kv in self.settings if kv[0] not in NOT_IN_KEY]
        payload = json.dumps([self.recipe, self.spec, self.seed, shaping, __version__])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def filename(self) -> str:
        return f"{safe_name(self.recipe)}__seed{self.seed}.json"
