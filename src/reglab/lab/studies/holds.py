"""Hold points: named moments of a study at which a fault test can kill it.

Set the environment variable ``REGLAB_HOLD_AT`` to a point's name (one of :data:`POINTS`).
When the study reaches that point it writes ``<out>/.held-<name>`` (holding the process id)
and waits there, for up to ten minutes, to be killed, or until that file is removed: then it
goes on, and that process does not hold at that point again. A test watches the output folder
for the file and then kills the process group (or stops a database and lets the study go
on), so a window of a study that lasts a millisecond (between two files) is tested as surely
as a long one, and no test waits for a measured time. Without the variable a hold point costs
one look-up of the environment.

The points, in a study's order:

================  ===========================================================================
``before_announce``  the folder is claimed (``reglab-study.json``, ``trials/``); no population
                     is announced in ``checkpoints/`` yet
``after_announce``   every population is announced; no worker has started
``trial_written``    the first trial result of this run is in ``trials/`` (the workers go on)
``before_store``     a shared study's worker (``--storage``) holds a finished trial's result
                     that is not in the database yet (it is kept in ``checkpoints/``)
``report``           ``results.csv``, ``summary.csv`` and ``trials.csv`` are written; the plots
                     and ``report.html`` are not
================  ===========================================================================
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ...core import ConfigError

__all__ = ["POINTS", "VARIABLE", "hold"]

#: The environment variable that names the point to hold at.
VARIABLE = "REGLAB_HOLD_AT"
#: Every hold point, in a study's order.
POINTS = ("before_announce", "after_announce", "trial_written", "before_store", "report")
_LONGEST = 600.0
_released: set[str] = set()  # the points this process was let go on from


def hold(point: str, folder: str | Path) -> None:
    """Wait at ``point`` (to be killed, or let go on by removing ``.held-<point>``) when
    ``REGLAB_HOLD_AT`` names it and this process has not been let go on from it; else return
    at once.

    Args:
        point: one of :data:`POINTS`.
        folder: the study's output folder, where ``.held-<point>`` is written.

    Raises:
        ConfigError: ``REGLAB_HOLD_AT`` is set to a name that is not a hold point.

    Examples:
        >>> hold("report", out)  # a no-op unless REGLAB_HOLD_AT=report
    """
    wanted = os.environ.get(VARIABLE)
    if not wanted:
        return
    if wanted not in POINTS:
        raise ConfigError(
            f"The '{VARIABLE}' environment variable must be one of "
            f"{', '.join(map(repr, POINTS))}. Got {wanted!r}."
        )
    if wanted != point or point in _released:
        return
    marker = Path(folder) / f".held-{point}"
    marker.write_text(str(os.getpid()))
    deadline = time.monotonic() + _LONGEST
    while time.monotonic() < deadline and marker.exists():
        time.sleep(0.05)
    _released.add(point)
