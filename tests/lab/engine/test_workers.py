"""A study started from a user's script: with or without ``if __name__ == "__main__":``."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap


def _script(tmp_path, body):
    path = tmp_path / "study.py"
    path.write_text(textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )


def test_a_script_without_a_main_guard_runs_its_study_in_this_process(tmp_path):
    """The workers import the script again: without the guard each one ran the study again and
    died, and the user got BrokenProcessPool with three tracebacks."""
    done = _script(
        tmp_path,
        f"""
        import reglab.lab as lab
        run = lab.compare(data="wine", recipes=["baseline", "l2"], seeds=2, epochs=2,
                          workers=2, out={str(tmp_path / "out")!r})
        print("finished", len(run.results))
        """,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    text = " ".join(done.stdout.split())
    assert 'compare was called outside `if __name__ == "__main__":` (study.py, line 3)' in text
    assert "the trials ran in this process" in text and "1 worker," in text
    assert text.endswith("finished 4")
    with (tmp_path / "out" / "results.csv").open() as handle:
        assert {row["seed"] for row in csv.DictReader(handle)} == {"0", "1"}


def test_unguarded_main_tells_a_guarded_call_from_an_unguarded_one(tmp_path):
    done = _script(
        tmp_path,
        """
        from reglab.lab.engine.workers import unguarded_main

        def where():
            return unguarded_main()

        print("top", where())
        if __name__ == "__main__":
            print("guarded", where())
        """,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["top study.py, line 7", "guarded None"]


def test_python_dash_m_reglab_keeps_its_workers(tmp_path):
    """``python -m reglab`` runs reglab/__main__.py, whose call has no guard; multiprocessing
    never runs a package's __main__ again, so the study keeps every worker (it fell back to
    one, and the fault tests that need two populations at once never saw them)."""
    done = subprocess.run(
        [sys.executable, "-m", "reglab", "compare", "--data", "wine", "--recipes",
         "baseline,l2", "--seeds", "2", "--epochs", "2", "--workers", "2",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    text = " ".join(done.stdout.split())
    assert "2 workers," in text and "outside `if __name__" not in text
