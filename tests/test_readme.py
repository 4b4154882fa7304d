"""The README's library example runs as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_trains():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    model, recipe = namespace["model"], namespace["recipe"]
    stopper = recipe.regularizers[-1]
    assert stopper.best_epoch is not None
    assert namespace["epoch"] < 100  # early stopping ended it
    accuracy = model.eval()(namespace["X"][1200:]).argmax(1) == namespace["y"][1200:]
    assert accuracy.float().mean().item() > 0.9
    assert any(
        isinstance(m, torch.nn.Module) and type(m).__name__ == "DropoutLayer"
        for m in model.modules()
    )
