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


class PostgresServer:
    """A throw-away PostgreSQL server on a loopback port, run as the `postgres` user (initdb
    and postgres refuse root): ``url`` (without a database), ``stop()`` and ``start()`` (the
    same port and data, as a restarted database server), ``database(name)`` (a new, empty one;
    its URL) and ``remove()``."""

    def __init__(self, bindir):
        import os
        import shutil
        import socket
        import tempfile

        self.bindir = bindir
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.root = tempfile.mkdtemp(prefix="reglab-pg-")
        os.chmod(self.root, 0o755)
        if self.as_user:
            shutil.chown(self.root, "postgres", "postgres")
        self.data = os.path.join(self.root, "data")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}"
        try:
            self._pg(str(bindir / "initdb"), "-D", self.data, "-A", "trust", "-U", "postgres")
            self.start()
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _pg(self, *args, check=True):
        import subprocess

        return subprocess.run([*self.as_user, *args], capture_output=True, text=True, check=check)

    def start(self):
        import os

        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = os.path.join(self.root, "server.log")
        pg_ctl = str(self.bindir / "pg_ctl")
        self._pg(pg_ctl, "-D", self.data, "-o", options, "-l", log, "-w", "start")

    def stop(self, check=True):
        """Stop as an administrator would (``-m fast``: connections are cut)."""
        self._pg(
            str(self.bindir / "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop", check=check
        )

    def database(self, name):
        import psycopg

        with psycopg.connect(f"{self.url}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{self.url}/{name}"

    def remove(self):
        import shutil

        self.stop(check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _new_postgres():
    """A started :class:`PostgresServer`. Debian's package is installed with apt-get when it
    is missing; where that is impossible the test skips and says why."""
    import subprocess

    bindir = _postgres_bin()
    if bindir is None and _apt_install("postgresql"):
        bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed and apt-get could not install it")
    try:
        return PostgresServer(bindir)
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        pytest.skip(f"could not start PostgreSQL: {detail.strip()[:200]}")


@pytest.fixture(scope="session")
def postgres_server():
    """The URL (without a database) of a PostgreSQL server the session's tests share."""
    server = _new_postgres()
    yield server.url
    server.remove()


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of the test's own, which it may stop and start (an outage)."""
    server = _new_postgres()
    yield server
    server.remove()


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
