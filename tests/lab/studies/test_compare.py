"""The lab on a user's model and data from the command line and from Python (issue 13)."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import user_inputs

import reglab
from reglab.lab import compare

MODEL_FILE = textwrap.dedent(
    """
    import math
    from torch import nn

    def net(input_shape, num_outputs, hidden=8):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
                             nn.Linear(hidden, num_outputs))
    """
)
DATA_FILE = textwrap.dedent(
    """
    import torch
    from torch.utils.data import Dataset

    class Blobs(Dataset):
        def __init__(self, n, seed):
            g = torch.Generator().manual_seed(seed)
            self.y = torch.arange(n) % 3
            self.x = torch.randn(n, 5, generator=g) + self.y[:, None].float() * 1.5
            self.targets = self.y

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return self.x[i], int(self.y[i])

    def splits():
        return {"train": Blobs(90, 0), "val": Blobs(30, 1), "test": Blobs(30, 2)}
    """
)


def test_cli_end_to_end_with_a_user_factory_file_and_dataset_function(tmp_path):
    (tmp_path / "mymodel.py").write_text(MODEL_FILE)
    (tmp_path / "mydata.py").write_text(DATA_FILE)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "reglab", "compare",
        "--model", "mymodel.py:net", "--model-args", "hidden=12",
        "--data", "mydata:splits", "--recipes", "baseline,l2,dropout",
        "--seeds", "2", "--epochs", "4", "--batch-size", "16", "--lr", "0.01",
        "--workers", "2", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 6 and {r["status"] for r in rows} == {"completed"}
    final = [
        r
        for r in csv.DictReader((out / "results.csv").open())
        if r["epoch"] == "final" and r["split"] == "test" and r["metric"] == "accuracy"
    ]
    assert len(final) == 6 and min(float(r["value"]) for r in final) > 0.5  # blobs learned
    assert "streams from a Dataset" in done.stdout
    study = (out / "study.toml").read_text()
    assert 'model = "mymodel.py:net"' in study and "hidden = 12" in study


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nowhere_xyz:net"], "cannot be imported: ModuleNotFoundError"),
        (["--model", "user_inputs:wrong_outputs"], "must return outputs of shape (batch, 10)"),
        (["--data", "user_inputs:mismatched"], "has 10 rows of inputs but 7 targets"),
        (["--device", "tpu"], "The 'device' parameter of compare must be one of"),
        (["--precision", "16"], "The 'precision' parameter of compare must be one of"),
        (["--model-args", "width"], "The 'model_args' parameter of compare must be"),
        (["--image-size", "big"], "The 'image_size' parameter of compare must be two ints"),
    ],
)
def test_cli_bad_user_input_is_one_line_and_exit_2_and_keeps_finished_work(
    cli, tmp_path, args, message
):
    out = tmp_path / "out"
    (out / "trials").mkdir(parents=True)
    kept = out / "trials" / "baseline__seed0.json"
    kept.write_text("{}")
    code, _, err = cli(["compare", *args, "--out", str(out), "--epochs", "1"])
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert kept.read_text() == "{}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_device_cuda_without_cuda_is_one_line(cli, tmp_path):
    code, _, err = cli(["compare", "--device", "cuda", "--out", str(tmp_path), "--epochs", "1"])
    assert code == 2 and "CUDA is not available here" in err


def test_python_api_runs_the_study_of_the_cli_with_objects(tmp_path):
    held = user_inputs.digits_datasets()
    run = compare(
        model=user_inputs.tiny_mlp,  # importable: sent to workers by name
        data=held,  # a mapping of Dataset objects: the study stays in this process
        recipes={"baseline": reglab.chain(), "l2": reglab.chain(reglab.L2(1e-3))},
        seeds=2,
        epochs=2,
        workers=2,
        device="cpu",
        out=tmp_path,
        quiet=True,
    )
    assert run.config.model == "user_inputs:tiny_mlp"
    assert run.config.data.startswith("python:data:datasets(train=Counting[400]")
    assert [row["recipe"] for row in run.table] == ["baseline", "l2"]
    assert set(run.histories) == {("baseline", 0), ("l2", 0), ("baseline", 1), ("l2", 1)}
    assert run.histories[("l2", 1)].epochs_run == 2
    assert run.report == tmp_path / "report.html" and run.report.is_file()
    assert held["train"].calls > 0  # the user's own objects were read
    l2 = next(r for r in run.results if r["recipe"] == "l2" and r["seed"] == 0)
    assert l2["history"][-1]["penalty"] > 0


def test_python_api_to_pandas(tmp_path):
    pd = pytest.importorskip("pandas", reason="pandas is not installed (optional)")
    run = compare(
        data="wine", recipes=["baseline", "l2"], seeds=2, epochs=2, workers=1, out=tmp_path,
        quiet=True,
    )  # fmt: skip
    frame = run.to_pandas()
    assert isinstance(frame, pd.DataFrame) and list(frame["recipe"]) == ["baseline", "l2"]


def test_python_api_without_pandas_says_what_to_install(tmp_path, monkeypatch):
    run = compare(data="wine", recipes=["baseline"], seeds=1, epochs=1, workers=1, out=tmp_path,
                  quiet=True)  # fmt: skip
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        run.to_pandas()
    assert run.table[0]["recipe"] == "baseline"
    assert Path(run.paths["results.csv"]).is_file()
