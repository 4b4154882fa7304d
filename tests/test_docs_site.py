"""The documentation site (issue 28 §4): ``mkdocs build --strict`` passes (a broken reference,
link or docstring fails it), every public name is in the API reference, and the guides are
the README's sections."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import reglab
import reglab.lab

ROOT = Path(__file__).parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
    reason="mkdocs and mkdocstrings are not installed (make setup installs them)",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _inventory(site: Path) -> set[str]:
    """The objects the site documents (Sphinx's ``objects.inv``, which mkdocstrings writes)."""
    raw = (site / "objects.inv").read_bytes()
    body = raw.split(b"\n", 4)[4]  # four header lines, then zlib
    return {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines()}


def test_every_public_name_is_in_the_api_reference(site):
    documented = _inventory(site)
    library = {f"{getattr(reglab, n).__module__}.{n}" for n in reglab.__all__}
    library = {name for name in library if name.startswith("reglab.")}
    lab = {f"reglab.lab.{reglab.lab._WHERE[n]}.{n}" for n in reglab.lab.__all__}
    missing = sorted((library | lab | {"reglab.tensorboard.EpochWriter"}) - documented)
    assert not missing, missing


def test_the_guides_are_the_readme_sections_with_working_links(site):
    readme = (ROOT / "README.md").read_text()
    lab = (site / "guide" / "lab" / "index.html").read_text()
    assert "reglab compare" in lab and "<h1" in lab
    assert 'href="../../evidence/"' in lab  # README's docs/evidence.md, as a site page
    home = (site / "index.html").read_text()
    assert "is regularization for PyTorch that you can see working" in home
    assert "Makefile" in home  # the two commands' set-up
    assert "The library in your own loop" in readme  # the section docs/hooks.py cuts at
