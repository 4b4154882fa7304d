"""The error of data that cannot be used (shared by every kind of data input)."""

from __future__ import annotations

from ...core import ConfigError

__all__ = ["DataError"]


class DataError(ConfigError):
    """Data that cannot be used: a missing column, a non-number, a NaN, too few rows, an image
    that cannot be read, a data function that returns the wrong thing."""
