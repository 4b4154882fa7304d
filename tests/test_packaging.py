"""The package outside the repository (issue 28 §5): a wheel and an sdist that ``twine check``
accepts, a wheel that works installed into a fresh virtual environment, and type information
for the names ``reglab`` loads lazily."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import reglab

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from make_stub import STUB, stub_text  # noqa: E402

sys.path.remove(str(ROOT / "tools"))


def _run(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, **kwargs)
    assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc


def test_the_stub_lists_every_public_name_from_the_module_that_binds_it():
    """Type checkers read ``__init__.pyi`` instead of ``__init__.py``, whose names appear only
    on first use: a public name missing from the stub is invisible to them."""
    assert STUB.read_text() == stub_text(), "run: .venv/bin/python tools/make_stub.py"
    stubbed = {
        line.split(" as ")[-1]
        for line in STUB.read_text().splitlines()
        if line.startswith("from .")
    }
    assert stubbed == set(reglab.__all__)
    assert (ROOT / "src" / "reglab" / "py.typed").exists()


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    if importlib.util.find_spec("build") is None:
        pytest.skip("the `build` package is not installed (make setup installs it)")
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], cwd=out)
    return out


def test_the_wheel_and_the_sdist_pass_twine_check(dist):
    if importlib.util.find_spec("twine") is None:
        pytest.skip("the `twine` package is not installed (make setup installs it)")
    wheel = list(dist.glob("reglab-*.whl"))
    sdist = list(dist.glob("reglab-*.tar.gz"))
    assert len(wheel) == len(sdist) == 1
    twine = [sys.executable, "-m", "twine", "check", "--strict"]
    proc = _run([*twine, *map(str, wheel + sdist)], dist)
    assert proc.stdout.count("PASSED") == 2, proc.stdout


def test_the_wheel_works_installed_in_a_fresh_environment(dist, tmp_path):
    """Installed outside the repository, with the dependencies this environment already has
    (seen through a ``.pth`` path, which does not load this environment's editable reglab):
    a file missing from the package fails here."""
    venv = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path
    ).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    wheel = next(dist.glob("reglab-*.whl"))
    _run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = _run([str(python), "-c", "import reglab; print(reglab.__file__)"], tmp_path, env=env)
    assert where.stdout.strip().startswith(site), where.stdout  # the wheel's, not the repo's
    helped = _run([str(venv / "bin" / "reglab"), "--help"], tmp_path, env=env)
    assert "compare" in helped.stdout
    listed = _run([str(venv / "bin" / "reglab"), "recipes"], tmp_path, env=env)
    assert "l2" in listed.stdout and "dropout" in listed.stdout
    made = _run([str(python), "-c", "import reglab; print(reglab.L1(0.1))"], tmp_path, env=env)
    assert "L1" in made.stdout
    typed = Path(site) / "reglab"
    assert (typed / "py.typed").exists() and (typed / "__init__.pyi").exists()
