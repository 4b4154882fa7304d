"""How much a checkpointed study saves when it is killed: the default study (`reglab compare`
with no arguments, 30 trials in two populations) run once uninterrupted, then killed with
SIGKILL to its whole process group at 30%, 50% and 80% of that time and rerun with the same
command; the rerun's wall time against the uninterrupted one, in one run.

Run by hand: `.venv/bin/python benchmarks/kill_resume.py [--epochs N]` (about 4 minutes at the
default 150 epochs on two cores). Issue 14's target: the rerun after a kill at 50% takes at most
70% of the uninterrupted time. A rerun cannot save the command's start-up (imports, pre-flight)
nor the work since the last checkpoint (5 s apart by default), so the longer the study, the
closer the rerun gets to half.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def command(out: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "reglab", "compare", "--epochs", str(epochs), "--out", str(out)]


def timed(out: Path, epochs: int) -> float:
    started = time.monotonic()
    subprocess.run(command(out, epochs), check=True, capture_output=True)
    return time.monotonic() - started


def killed(out: Path, epochs: int, after: float) -> list[int]:
    """Kill the study ``after`` seconds in; the epochs its checkpoints hold."""
    proc = subprocess.Popen(
        command(out, epochs),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(after)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return sorted(
        torch.load(p, weights_only=True)["state"]["epoch"]
        for p in (out / "checkpoints").glob("population-*.pt")
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=150)
    epochs = parser.parse_args().epochs
    with tempfile.TemporaryDirectory() as folder:
        clean = timed(Path(folder) / "clean", epochs)
        print(f"default study, {epochs} epochs: {clean:.1f} s uninterrupted")
        for fraction in (0.3, 0.5, 0.8):
            out = Path(folder) / f"killed{fraction}"
            saved = killed(out, epochs, fraction * clean)
            rerun = timed(out, epochs)
            at = ", ".join(map(str, saved)) or "none"
            print(
                f"killed at {fraction:.0%} ({fraction * clean:5.1f} s; checkpoints at epochs "
                f"{at}): rerun {rerun:5.1f} s = {rerun / clean:.0%} of uninterrupted"
            )


if __name__ == "__main__":
    main()
