"""A study's folder: which study it belongs to, and its trials, written atomically.

A finished trial is written to ``<out>/trials/<recipe>__seed<k>.json`` the moment it completes
(a temp file, then a rename, so a crash never leaves half a file); a rerun reuses every trial
whose configuration hash matches. ``reglab-study.json`` records which study the folder holds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...core import ConfigError

__all__ = ["FORMAT", "MANIFEST", "check_folder", "load_finished", "safe_name", "write_atomic"]

#: The file that says which study a results folder belongs to.
MANIFEST = "reglab-study.json"
#: Bumped when trial files change in a way older ones cannot be read.
FORMAT = 1


def _manifest(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two studies the same study: the format, the data and the model. Anything else
    (epochs, recipes, strengths, seeds) only invalidates the trials it affects."""
    return {
        "format": FORMAT,
        "data": settings["data"],
        "target": settings["target"],
        "model": settings["model"],
    }


def _check_manifest(out: Path, settings: Mapping[str, Any]) -> None:
    path = out / MANIFEST
    if not path.is_file():
        return
    try:
        found = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        found = {}
    expected = _manifest(settings)
    if found != expected:
        described = ", ".join(f"{k}={found.get(k)!r}" for k in ("data", "model", "format"))
        raise ConfigError(
            f"The 'out' parameter of compare names a folder with the results of another study "
            f"({described}); choose another --out or remove it. Got {str(out)!r}."
        )


def safe_name(name: str) -> str:
    """``name`` as part of a file name: letters, digits, ``-`` and ``_`` kept, the rest ``_``."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_folder(out: Path, settings: Mapping[str, Any]) -> Path:
    """Make ``out/trials`` and claim the folder for this study; return the trials folder.

    Raises:
        ConfigError: ``out`` is a file, cannot be written, or holds another study's results.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"The 'out' parameter of compare must be a folder. Got {str(out)!r}, which is a file."
        )
    _check_manifest(out, settings)
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
