"""The lab's tests, grouped as the package is (engine, inputs, studies, reports). A user's
model factories and data (``user_inputs.py``) are imported by reference, as a user's module
would be: this folder is on the path of the tests (and of the worker processes they start,
which inherit it)."""

import sys
from pathlib import Path

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
