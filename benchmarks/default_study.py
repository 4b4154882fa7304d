"""Wall time and decisions of the main job, `reglab compare` with no arguments (target: decide
the recipes with large effects within 60 s on two cores), against the old 3-seed design (3
seeds, Holm) and `--seeds auto`, all in the same run.

Run by hand: `.venv/bin/python benchmarks/default_study.py`. For each design it prints the wall
time, the summed training time of the trials, and how many recipes each headline comparison
decided (test accuracy, gap, memorized), read from `summary.csv`.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DESIGNS = {
    "old: 3 seeds, Holm": ["--seeds", "3", "--correction", "holm"],
    "new default: 6 seeds, BH": [],
    "seeds auto (up to 10), BH": ["--seeds", "auto"],
}
HEADLINE = ("test acc", "gap (train−test)", "memorized")


def timed(*extra: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "reglab", "compare", "--out", out, *extra],
            check=True,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        trials = [json.loads(p.read_text()) for p in Path(out, "trials").glob("*.json")]
        with open(Path(out, "summary.csv")) as f:
            rows = list(csv.DictReader(f))
        decided = {name: sum(r.get(f"decided ({name})") == "1" for r in rows) for name in HEADLINE}
        answer = done.stdout.split("\n\n")[-1].strip()
        return {
            "wall": wall,
            "work": sum(t["seconds"] for t in trials),
            "trials": len(trials),
            "decided": decided,
            "answer": answer,
        }


def main() -> None:
    for name, extra in DESIGNS.items():
        found = timed(*extra)
        decided = ", ".join(f"{k} {v}" for k, v in found["decided"].items())
        print(
            f"{name:27s} {found['wall']:6.1f} s wall, {found['trials']:3d} trials "
            f"({found['work']:.1f} s of training); decided of 9: {decided}"
        )
        print("    " + found["answer"].replace("\n", "\n    "))


if __name__ == "__main__":
    main()
