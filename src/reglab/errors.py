"""The library's error and warning types, and the one-line format of its warnings, without
PyTorch: the ``reglab`` command imports them before anything heavy (see :mod:`reglab`).
They are also importable from the modules that use them, as before
(``reglab.validation.ConfigError``, ``reglab.checkpoint.CheckpointWarning`` and
``one_line_warnings``), and the two types from ``reglab``.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["CheckpointWarning", "ConfigError", "StorageUnavailable", "one_line_warnings"]


class ConfigError(ValueError):
    """A bad argument, named in one line: ``The 'p' parameter of Dropout must be ... Got 1.5.``"""


class CheckpointWarning(UserWarning):
    """A checkpoint could not be read (the run restarts) or written (training goes on)."""


def one_line_warnings() -> None:
    """Show :class:`CheckpointWarning` as one line, ``reglab: warning: ...`` (the CLI and the
    lab's worker processes call it); other warnings keep Python's format."""
    original = warnings.formatwarning
    if getattr(original, "_reglab", False):
        return

    def formatwarning(message: Any, category: type, *args: Any, **kwargs: Any) -> str:
        if issubclass(category, CheckpointWarning):
            return f"reglab: warning: {message}\n"
        return original(message, category, *args, **kwargs)

    formatwarning._reglab = True  # type: ignore[attr-defined]
    warnings.formatwarning = formatwarning  # type: ignore[assignment]


class StorageUnavailable(RuntimeError):
    """A shared study's database could not be reached for ``retry`` seconds: the command
    stops, every result computed so far is kept (in the database or in the checkpoint folder),
    and rerunning the same command resumes.

    Attributes:
        where: the database, its password masked.
        retry: the seconds waited.
        reason: the last failure, in a few words (e.g. ``Connection refused``).
    """

    def __init__(self, where: str, retry: float, reason: str) -> None:
        self.where, self.retry, self.reason = where, retry, reason
        super().__init__(
            f"the database {where} could not be reached for {retry:g} s ({reason}); every "
            "finished result is kept: rerun the same command to resume"
        )
