"""Where a study keeps the checkpoints of its running trials and populations.

``<out>/checkpoints/`` holds one :class:`reglab.Checkpoint` per running trial
(``<recipe>__seed<k>.pt``, tagged with the trial's configuration hash) and one per population
(``population-<hash>.pt``, tagged with the hash of its trials' keys, beside a
``population-<hash>.json`` that lists those keys). A rerun forms the populations named there
again, with the same members, before it groups the remaining trials, so each resumes from its
checkpoint. A checkpoint is removed as soon as the results of its trials are written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ... import __version__
from ...checkpoint import Checkpoint
from .config import DEFAULT_EVERY
from .keys import Trial
from .store import NOT_IN_KEY, safe_name, write_atomic

__all__ = ["DEFAULT_EVERY", "Checkpoints"]


def _population_tag(keys: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(keys)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoints:
    """A study's checkpoint folder and how often its runs save (picklable, for workers).

    Args:
        folder: the folder (``<out>/checkpoints``); created on the first save.
        every: seconds between two saves of one run (0: every epoch).
    """

    folder: str
    every: float = DEFAULT_EVERY

    def run(
        self, name: str, settings: Mapping[str, Any], *shaping: Any, keep: bool = True
    ) -> Checkpoint:
        """The checkpoint ``<name>.pt`` of a run of ``tune`` or ``path``, tagged with a hash of
        everything that shapes its numbers: the study settings (but those that cannot change a
        number), ``shaping`` and reglab's version."""
        kept = {k: v for k, v in settings.items() if k not in NOT_IN_KEY}
        described = json.dumps([kept, *shaping, __version__], default=repr)
        tag = hashlib.sha256(described.encode()).hexdigest()[:16]
        path = Path(self.folder) / f"{safe_name(name)}.pt"
        return Checkpoint(path, every=self.every, tag=tag, keep=keep)

    def trial(self, trial: Trial) -> Checkpoint:
        """The checkpoint of one trial trained alone."""
        stem = Path(trial.filename).stem
        path = Path(self.folder) / f"{stem}.pt"
        return Checkpoint(path, every=self.every, tag=trial.key, keep=True)

    def population(self, trials: Sequence[Trial]) -> Checkpoint:
        """The checkpoint of the population of ``trials`` (in the order given)."""
        tag = _population_tag([t.key for t in trials])
        path = Path(self.folder) / f"population-{tag}.pt"
        return Checkpoint(path, every=self.every, tag=tag, keep=True)

    def announce(self, trials: Sequence[Trial]) -> None:
        """Record that ``trials`` train as one population, so a rerun forms it again."""
        folder = Path(self.folder)
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
        keys = [t.key for t in trials]
        path = folder / f"population-{_population_tag(keys)}.json"
        with contextlib.suppress(OSError):  # without it a rerun only loses the head start
            write_atomic(path, json.dumps({"keys": keys}))

    def populations(self) -> list[list[str]]:
        """The trial keys of every population announced in this folder, oldest first."""
        found = []
        files = sorted(Path(self.folder).glob("population-*.json"), key=_mtime)
        for path in files:
            try:
                keys = json.loads(path.read_text())["keys"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if isinstance(keys, list) and all(isinstance(k, str) for k in keys):
                found.append(keys)
        return found

    def forget_population(self, keys: Sequence[str]) -> None:
        """Remove the checkpoint (and its parts) of the population of the trials with ``keys``
        (in order), and its announcement."""
        tag = _population_tag(keys)
        Checkpoint(Path(self.folder) / f"population-{tag}.pt", tag=tag).remove()
        path = Path(self.folder) / f"population-{tag}.json"
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)

    def forget_trial(self, trial: Trial) -> None:
        """Remove one trial's checkpoint and its kept result."""
        self.trial(trial).remove()
        self.forget_result(Path(trial.filename).stem)

    def keep_result(self, trial: Trial | str, result: Any) -> None:
        """Keep a finished result (JSON-ready) beside the checkpoints until it is stored
        (a shared study's database may be out of reach): ``<name>.result.json``. ``trial`` is a
        study trial or the name of a tune or path run."""
        path = self._result_path(trial)
        with contextlib.suppress(OSError):  # without it an outage may cost a retraining
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps({"tag": self._result_tag(trial), "result": result}))

    def kept_result(self, trial: Trial | str) -> Any | None:
        """The result :meth:`keep_result` kept for ``trial``, or None."""
        try:
            kept = json.loads(self._result_path(trial).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(kept, dict) or kept.get("tag") != self._result_tag(trial):
            return None
        return kept.get("result")

    def forget_result(self, trial: Trial | str) -> None:
        """Remove the result kept for ``trial`` (it is stored)."""
        with contextlib.suppress(OSError):
            self._result_path(trial).unlink(missing_ok=True)

    def _result_path(self, trial: Trial | str) -> Path:
        stem = trial if isinstance(trial, str) else Path(trial.filename).stem
        return Path(self.folder) / f"{safe_name(stem)}.result.json"

    @staticmethod
    def _result_tag(trial: Trial | str) -> str:
        return trial if isinstance(trial, str) else trial.key

    def clean(self) -> None:
        """At the end of a run: remove the temp files of saves a kill cut short, then the
        folder if nothing else is left in it."""
        folder = Path(self.folder)
        for tmp in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
