"""A study's folder: which study it belongs to, and its trials, written atomically.

A finished trial is written to ``<out>/trials/<recipe>__seed<k>.json`` the moment it completes
(a temp file, then a rename, so a crash never leaves half a file); a rerun reuses every trial
whose configuration hash matches. ``reglab-study.json`` records which study the folder holds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...core import ConfigError

__all__ = [
    "FORMAT",
    "MANIFEST",
    "NOT_IN_KEY",
    "check_folder",
    "load_finished",
    "safe_name",
    "write_atomic",
]

#: The file that says which study a results folder belongs to.
MANIFEST = "reglab-study.json"
#: Bumped when trial files change in a way older ones cannot be read.
FORMAT = 1


#: Settings a trial carries that do not change its numbers (a rerun with another value reuses
#: the trial; :class:`~reglab.lab.studies.trial.Trial` leaves them out of its key too):
#: streaming data's loader workers, and the folder TensorBoard runs are written to.
NOT_IN_KEY = ("num_workers", "tensorboard")


def _manifest(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What the folder's study is: the format, and every setting that shapes its trials (data,
    model, epochs, optimizer, ...). Seeds and recipes are not in it: a rerun may add them."""
    from ... import __version__

    return {
        "format": FORMAT,
        "data": settings["data"],
        "target": settings["target"],
        "model": settings["model"],
        "settings": {k: v for k, v in settings.items() if k not in NOT_IN_KEY},
        "version": __version__,
    }


def _differences(found: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """``name old → new`` for each setting the folder's study ran with otherwise. A manifest
    written before the settings were recorded compares on the format, data and model only."""
    pairs = {k: (found.get(k), expected[k]) for k in ("format", "data", "target", "model")}
    if "settings" in found:
        old = found["settings"]
        pairs |= {k: (old.get(k), v) for k, v in expected["settings"].items()}
        pairs["reglab version"] = (found.get("version"), expected["version"])
    return [f"{k} {a!r} → {b!r}" for k, (a, b) in pairs.items() if a != b]


def _check_manifest(out: Path, settings: Mapping[str, Any], overwrite: bool) -> None:
    """Refuse a folder whose study ran with other settings (a rerun would replace its trials),
    or, with ``overwrite``, move that study aside to ``<out>.<time>``."""
    path = out / MANIFEST
    if not path.is_file():
        return
    try:
        found = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        found = {}
    changed = _differences(found, _manifest(settings))
    if not changed:
        return
    if overwrite:
        aside = out.with_name(f"{out.name}.{time.strftime('%Y%m%d-%H%M%S')}")
        while aside.exists():
            aside = aside.with_name(aside.name + "-1")
        out.rename(aside)
        return
    raise ConfigError(
        f"The 'out' parameter of compare names a folder whose study ran with other settings "
        f"({'; '.join(changed)}): its trials would be replaced. Choose another --out, or pass "
        f"--overwrite to move the old study aside to {out.name}.<time>. Got {str(out)!r}."
    )


def safe_name(name: str) -> str:
    """``name`` as part of a file name: letters, digits, ``-`` and ``_`` kept, the rest ``_``."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_folder(out: Path, settings: Mapping[str, Any], overwrite: bool = False) -> Path:
    """Make ``out/trials`` and claim the folder for this study; return the trials folder. A
    folder whose study ran with the same settings is extended (more seeds, more recipes); one
    whose study ran with other settings is refused, or with ``overwrite`` moved aside to
    ``<out>.<time>`` (never deleted) and started afresh.

    Raises:
        ConfigError: ``out`` is a file, cannot be written, or holds a study run with other
            settings (the message names each difference, old → new).
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"The 'out' parameter of compare must be a folder. Got {str(out)!r}, which is a file."
        )
    _check_manifest(out, settings, overwrite)
    trial_dir = out / "trials"
    try:
        trial_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(out / MANIFEST, json.dumps(_manifest(settings)))
    except OSError as exc:
        raise ConfigError(
            f"The 'out' parameter of compare must be a writable folder. Got "
            f"{str(out)!r}: {exc.strerror}."
        ) from None
    return trial_dir


def load_finished(path: Path, key: str) -> dict[str, Any] | None:
    """The trial saved at ``path`` if it finished under configuration ``key``; else None (a
    missing, unreadable, failed or differently configured trial is redone)."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    ok = saved.get("key") == key and saved.get("status") != "failed"
    return saved if ok else None
