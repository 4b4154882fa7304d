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


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    return text[start : text.index("\n## ", start + 1)]


def test_readme_own_model_and_data_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    block = re.findall(r"```python\n(.*?)```", _section("Your own model and data"), flags=re.S)[0]
    assert len([line for line in block.splitlines() if line.strip()]) <= 12
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    run = namespace["run"]
    assert [row["recipe"] for row in run.table] == ["baseline", "l2"]
    assert len(run.histories[("l2", 0)]) == 3 and run.report.is_file()
    assert (tmp_path / "runs" / "mine" / "results.csv").is_file()


def test_readme_own_model_and_data_command_runs(tmp_path, monkeypatch, cli):
    """The CLI form, with the factory and a data function in files of the user's."""
    monkeypatch.chdir(tmp_path)
    python = re.findall(r"```python\n(.*?)```", _section("Your own model and data"), flags=re.S)
    (tmp_path / "mymodels.py").write_text(python[0].split("x, y =")[0])  # imports, my_model
    (tmp_path / "mydata.py").write_text(
        "import torch\n"
        "def splits():\n"
        "    x, y = torch.randn(300, 20), torch.randint(0, 3, (300,))\n"
        "    d = torch.utils.data.TensorDataset\n"
        "    return {'train': d(x[:200], y[:200]), 'val': d(x[200:], y[200:])}\n"
    )
    bash = re.findall(r"```bash\n(.*?)```", _section("Your own model and data"), flags=re.S)[0]
    first = bash.split("\n")[0].rstrip("\\") + bash.split("\n")[1]
    args = [*first.split()[1:], "--seeds", "1", "--epochs", "1", "--workers", "1"]
    code, out, err = cli(args)
    assert code == 0, err
    assert (tmp_path / "runs" / "mine" / "report.html").is_file()
    assert "test metrics are on 'val'" in out
