"""Write ``src/reglab/__init__.pyi``: the lazily loaded public names of ``reglab`` with the
module each comes from, so that type checkers and editors see them with their types.

Run it after adding a public name (``tests/test_packaging.py`` fails until the stub matches):

    .venv/bin/python tools/make_stub.py
"""

from __future__ import annotations

import importlib
from pathlib import Path

STUB = Path(__file__).parents[1] / "src" / "reglab" / "__init__.pyi"


def _isort(name: str) -> tuple[int, str]:
    """isort's order (ruff's default): constants, then classes, then the rest, each ignoring
    case."""
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name.lower()


def stub_text() -> str:
    """The stub's text for the installed ``reglab``: one ``from .module import name as name``
    line per public name, from the module that ``reglab`` binds it from."""
    import reglab

    source: dict[str, str] = {}  # name -> the module that binds it: the last (reglab._load)
    for module in reglab._MODULES:
        exported = importlib.import_module(f"reglab.{module}").__all__
        source.update({name: module for name in set(reglab.__all__).intersection(exported)})
    lines = [
        '"""Type information for the names ``reglab`` loads on first use (made by',
        'tools/make_stub.py: do not edit)."""',
        "",
    ]
    for module in sorted(set(source.values())):
        names = sorted((n for n, m in source.items() if m == module), key=_isort)
        lines += [f"from .{module} import {name} as {name}" for name in names]
    lines += ["", "__version__: str", "__all__: list[str]"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    STUB.write_text(stub_text())
    print(f"wrote {STUB}")
