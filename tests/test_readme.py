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
    assert run.histories[("l2", 0)].epochs_run == 3 and run.report.is_file()
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


def test_readme_lightning_example_runs(tmp_path, monkeypatch):
    """The Lightning example, with the part it leaves to the user ("...") filled in."""
    import pytest

    pytest.importorskip(
        "lightning", reason="lightning is not installed: pip install reglab[lightning]"
    )
    monkeypatch.chdir(tmp_path)
    block = re.findall(r"```python\n(.*?)```", _section("Inside Lightning"), flags=re.S)[0]
    filled = block.replace(
        "    ...  # __init__, validation_step",
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),\n"
        "                                       torch.nn.Linear(32, 10))\n"
        "    def validation_step(self, batch, batch_idx):\n"
        "        self.log('val_loss', F.cross_entropy(self.net(batch[0]), batch[1]))\n"
        "    def configure_optimizers(self):\n"
        "        return torch.optim.Adam(self.parameters(), lr=1e-3)\n"
        "    # ",
    ).replace("max_epochs=100", "max_epochs=2, logger=False, enable_progress_bar=False")
    assert filled != block
    x, y = torch.randn(96, 64), torch.randint(0, 10, (96,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    namespace = {"torch": torch, "train": loader, "val": loader}
    exec(compile(filled, "README.md", "exec"), namespace)
    assert namespace["recipe"].regularizers[0].penalty() > 0


def test_readme_transformers_example_runs(tmp_path, monkeypatch):
    """The Hugging Face example on a tiny BERT built from a config, with the data it leaves to
    the user, for 2 epochs."""
    import pytest

    pytest.importorskip("transformers", reason="pip install reglab[transformers]")
    pytest.importorskip("accelerate", reason="pip install reglab[transformers]")
    from transformers import BertConfig, BertForSequenceClassification

    monkeypatch.chdir(tmp_path)
    block = re.findall(
        r"```python\n(.*?)```", _section("Inside the Hugging Face Trainer"), flags=re.S
    )[0]
    assert len([line for line in block.splitlines() if line.strip()]) <= 15
    filled = block.replace(
        "num_train_epochs=20,", "num_train_epochs=2, use_cpu=True, report_to=[],"
    )
    assert filled != block
    config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=8, num_labels=2)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 32, (64, 8), generator=g)
    rows = [{"input_ids": i, "labels": int((i == 3).any())} for i in ids]
    namespace = {"model": BertForSequenceClassification(config), "train": rows, "val": rows}
    exec(compile(filled, "README.md", "exec"), namespace)
    assert namespace["trainer"].state.global_step == 16
    assert any(type(m).__name__ == "DropoutLayer" for m in namespace["model"].modules())
