"""Wall time of the main job, `reglab compare` with no arguments (target: at most 120 s on two
cores), and of the same study in one worker process, in the same run.

Run by hand: `.venv/bin/python benchmarks/default_study.py`. It also prints the summed training
time of the trials, so that the fixed costs (imports, planning, worker start-up, plots, report)
are visible beside the part that parallel workers divide.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(*extra: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "reglab", "compare", "--out", out, *extra],
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - start
        trials = [json.loads(p.read_text()) for p in Path(out, "trials").glob("*.json")]
        return wall, sum(t["seconds"] for t in trials)


def main() -> None:
    parallel, work = timed()
    single, single_work = timed("--workers", "1")
    print(
        f"reglab compare, default study, one worker per core: {parallel:6.1f} s wall "
        f"(target <= 120 s); trials sum to {work:.1f} s of training"
    )
    print(
        f"same study in one process:                          {single:6.1f} s wall; "
        f"trials sum to {single_work:.1f} s"
    )
    print(
        f"speed-up {single / parallel:.2f}x overall; fixed costs about "
        f"{single - single_work:.1f} s (imports, planning, plots, report)"
    )


if __name__ == "__main__":
    main()
