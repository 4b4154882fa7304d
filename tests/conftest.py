import pytest
import torch
from torch import nn


@pytest.fixture
def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    )


@pytest.fixture
def toy_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return (x[:80], y[:80]), (x[80:], y[80:])


def _apt_install(package):
    """Install Debian's ``package`` with apt-get (as root); False where that is impossible."""
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=False)
    return True


def _postgres_bin():
    import glob
    from pathlib import Path

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_server():
    """A throw-away PostgreSQL server on a loopback port, as the `postgres` user (initdb and
    postgres refuse root); yields its URL without a database. Debian's package is installed with
    apt-get when it is missing; where that is impossible the tests that need the server skip and
    say why."""
    import os
    import shutil
    import socket
    import subprocess
    import tempfile

    bindir = _postgres_bin()
    if bindir is None and _apt_install("postgresql"):
        bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed and apt-get could not install it")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = tempfile.mkdtemp(prefix="reglab-pg-")
    os.chmod(root, 0o755)
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    data = os.path.join(root, "data")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def pg(*args, check=True):
        return subprocess.run([*as_user, *args], capture_output=True, text=True, check=check)

    try:
        pg(str(bindir / "initdb"), "-D", data, "-A", "trust", "-U", "postgres")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        log = os.path.join(root, "server.log")
        pg(str(bindir / "pg_ctl"), "-D", data, "-o", options, "-l", log, "-w", "start")
    except (subprocess.CalledProcessError, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        detail = getattr(exc, "stderr", "") or str(exc)
        pytest.skip(f"could not start PostgreSQL: {detail.strip()[:200]}")
    yield f"postgresql://postgres@127.0.0.1:{port}"
    pg(str(bindir / "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop", check=False)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def chromium():
    """The path of a headless Chromium. Debian's package is installed with apt-get when it is
    missing; where that is impossible the tests that need it skip and say why."""
    import shutil

    names = ("chromium", "chromium-browser", "google-chrome")
    found = next((shutil.which(n) for n in names if shutil.which(n)), None)
    if found is None and _apt_install("chromium"):
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("Chromium is not installed and apt-get could not install it")
    return found


@pytest.fixture
def postgres_url(postgres_server, request):
    """A new, empty database on the session's server for each test: every test meets Optuna's
    schema being created, as a first user of a database does."""
    import re

    import psycopg

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50]
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{postgres_server}/{name}"


@pytest.fixture
def cli(capsys):
    """``cli(args)`` runs the ``reglab`` command in this process and returns its exit code,
    standard output and standard error."""
    from reglab.cli import main

    def run(args):
        with pytest.raises(SystemExit) as info:
            main(args)
        captured = capsys.readouterr()
        return info.value.code, captured.out, captured.err

    return run


@pytest.fixture
def machines():
    """``machines(commands)`` starts every command as its own process at once (as if on
    separate machines), waits for all, and asserts each exits 0; returns their stdouts."""
    import subprocess

    def run(commands, timeout=300):
        procs = [
            subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for c in commands
        ]
        outs = []
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, err
            outs.append(out)
        return outs

    return run
