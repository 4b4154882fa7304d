"""A user's own functions and objects as study inputs.

A study names its model and its data by strings, so that settings stay plain values (written to
``study.toml``, hashed into trial keys, sent to worker processes). A user's function enters as a
reference, ``package.module:function`` or ``path/to/file.py:function``, that every process
imports for itself. A Python object that no other process can import (a lambda, a function
defined in a notebook or a script's ``__main__``, a mapping of ``Dataset`` objects) is held in
this process under a ``python:...`` token; a study holding one runs its trials in this process.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ...core import ConfigError

__all__ = [
    "first_line",
    "in_process",
    "is_reference",
    "load_function",
    "reference",
    "resolve_object",
]

_REFERENCE = re.compile(r"^(?P<target>[^:]+):(?P<name>[A-Za-z_][A-Za-z0-9_.]*)$")
_OBJECTS: dict[str, Any] = {}
PREFIX = "python:"


def is_reference(spec: object) -> bool:
    """True for ``'module:function'`` or ``'file.py:function'`` (not a Windows drive path)."""
    if not isinstance(spec, str) or spec.startswith(PREFIX):
        return False
    match = _REFERENCE.match(spec)
    return bool(match) and len(match["target"]) > 1


def _import_file(path: Path, param: str, owner: str) -> Any:
    if not path.is_file():
        raise ConfigError(
            f"The '{param}' parameter of {owner} names the file {str(path)!r}, which does not "
            "exist."
        )
    resolved = path.resolve()
    name = "reglab_user_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ConfigError(
            f"The '{param}' parameter of {owner} must name a Python file. Got {str(path)!r}."
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so that classes defined there pickle and unpickle
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(
            f"The '{param}' parameter of {owner} names {str(path)!r}, which raised "
            f"{type(exc).__name__}: {first_line(exc)} when imported."
        ) from None
    return module


def _import_module(target: str, param: str, owner: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:  # as `python -m` does: modules beside the user's files import
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(target)
    except Exception as exc:
        raise ConfigError(
            f"The '{param}' parameter of {owner} names the module {target!r}, which cannot be "
            f"imported: {type(exc).__name__}: {first_line(exc)}."
        ) from None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ('' when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def load_function(spec: str, param: str, owner: str = "compare") -> Callable[..., Any]:
    """The function a reference names, imported in this process (a ``python:`` token gives the
    object held here).

    Args:
        spec: ``'package.module:function'`` or ``'path/to/file.py:function'`` (a dotted name
            after the colon reaches into classes or objects).
        param: the setting it came from (``'model'`` or ``'data'``), for messages.
        owner: the command, for messages.

    Raises:
        ConfigError: a file that does not exist or fails to import, a module that cannot be
            imported, a name the module does not have, or something that is not callable.
    """
    if spec.startswith(PREFIX):
        return resolve_object(spec, param, owner)
    match = _REFERENCE.match(spec)
    if not match:
        raise ConfigError(
            f"The '{param}' parameter of {owner} must be 'package.module:function' or "
            f"'path/to/file.py:function'. Got {spec!r}."
        )
    target, name = match["target"], match["name"]
    if target.endswith(".py") or "/" in target or os.sep in target:
        module = _import_file(Path(target), param, owner)
    else:
        module = _import_module(target, param, owner)
    obj: Any = module
    for part in name.split("."):
        if not hasattr(obj, part):
            found = sorted(
                k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
            )
            raise ConfigError(
                f"The '{param}' parameter of {owner} names {name!r} in {target!r}, which has "
                f"no such name; it has: {', '.join(found) or 'no public functions'}."
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(
            f"The '{param}' parameter of {owner} must name a function. Got {spec!r}, a "
            f"{type(obj).__name__}."
        )
    return obj


def _importable(obj: Any) -> str | None:
    """``'module:qualname'`` when another process can import ``obj`` by that name."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    if module.startswith("reglab_user_"):  # a file loaded by path: name the file
        path = getattr(sys.modules.get(module), "__file__", None)
        return f"{path}:{qualname}" if path else None
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:
        return None
    return f"{module}:{qualname}" if found is obj else None


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        parts = []
        for key, value in obj.items():
            try:
                size = len(value)
            except TypeError:
                size = "?"
            parts.append(f"{key}={type(value).__name__}[{size}]")
        return "datasets(" + ",".join(parts) + ")"
    return getattr(obj, "__qualname__", None) or type(obj).__name__


def reference(obj: Any, param: str) -> str:
    """The string a study stores for ``obj``: a string as it is; a function another process can
    import as ``'module:function'``; anything else as a ``python:`` token for an object held in
    this process (see :func:`in_process`)."""
    if isinstance(obj, str):
        return obj
    if callable(obj) and not isinstance(obj, Mapping):
        name = _importable(obj)
        if name is not None:
            return name
    token = f"{PREFIX}{param}:{_describe(obj)}"
    _OBJECTS[token] = obj
    return token


def resolve_object(token: str, param: str, owner: str = "compare") -> Any:
    """The object held here under ``token``.

    Raises:
        ConfigError: in a process that does not hold it (a worker, or a new session).
    """
    if token not in _OBJECTS:
        raise ConfigError(
            f"The '{param}' parameter of {owner} names {token!r}, a Python object given in "
            "another process; pass the object itself, or an importable 'module:function'."
        )
    return _OBJECTS[token]


def in_process(*specs: object) -> bool:
    """True when any of ``specs`` is a ``python:`` token: its study runs in this process."""
    return any(isinstance(s, str) and s.startswith(PREFIX) for s in specs)
