"""A user's own model factory, data function, Dataset splits and image folder, through the same
seams as the built-ins (issue 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import user_inputs
from PIL import Image

import reglab
from reglab.lab.inputs.data import load_dataset
from reglab.lab.inputs.images import ImageFolder
from reglab.lab.inputs.streams import NoisyLabels
from reglab.lab.studies.config import StudyConfig
from reglab.lab.studies.study import plan, run_study
from reglab.lab.studies.trial import run_trial

HERE = Path(__file__).parents[1]  # tests/lab, beside user_inputs.py


def _config(**kw):
    base = {"seeds": 1, "epochs": 2, "workers": 1, "engine": "sequential", "recipes": ["baseline"]}
    return StudyConfig(**{**base, **kw})


def test_model_factory_is_called_with_shape_outputs_and_args_and_seeded():
    from reglab.lab.studies.seams import dataset_for, model_for, trial_settings

    config = _config(model="user_inputs:tiny_mlp", model_args={"hidden": 12})
    settings = trial_settings(config, "classification")
    data = dataset_for(settings, 0)
    user_inputs.CALLS.clear()
    state = torch.random.get_rng_state()
    a, b = model_for(settings, data, 0), model_for(settings, data, 0)
    c = model_for(settings, data, 1)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG left as it was
    assert user_inputs.CALLS == [((64,), 10, 12)] * 3
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a[1].weight, c[1].weight)


def test_model_factory_from_a_file_path_trains_every_recipe_from_the_same_start(tmp_path):
    config = _config(
        model=f"{HERE / 'user_inputs.py'}:residual_mlp",
        recipes=["baseline", "l2", "dropout", "drop_path", "batch_norm"],
        train_size=60,
    )
    run = run_study(config, tmp_path)
    assert {r["recipe"]: r["status"] for r in run.results} == dict.fromkeys(
        ["baseline", "l2", "dropout", "drop_path", "batch_norm"], "completed"
    )
    # the first epoch's train loss differs only through the recipe: same initial weights
    first = {r["recipe"]: r["history"][0]["train_loss"] for r in run.results}
    assert first["l2"] == pytest.approx(first["baseline"], rel=0.05)


def test_user_model_is_batched_by_the_population_engine_unless_it_has_buffers():
    sequential = plan(_config(model="user_inputs:tiny_mlp", recipes=["baseline", "l2"]))[5]
    assert sequential == {}
    sequential = plan(_config(model="user_inputs:batchnorm_mlp", recipes=["baseline"]))[5]
    assert "buffers" in sequential["baseline"]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("no_such_module_xyz:f", "names the module 'no_such_module_xyz', which cannot be imported"),
        (
            "user_inputs:missing",
            "names 'missing' in 'user_inputs', which has no such name; it has:",
        ),
        ("user_inputs:raises", "raised ValueError: no such layer size"),
        ("user_inputs:not_a_module", "must return a torch.nn.Module. Got a str."),
        ("user_inputs:wrong_outputs", "must return outputs of shape (batch, 10)"),
        ("nowhere/model.py:f", "names the file 'nowhere/model.py', which does not exist"),
    ],
)
def test_bad_model_factory_fails_before_training_in_one_line(model, message):
    with pytest.raises(reglab.ConfigError) as info:
        plan(_config(model=model))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_recipe_that_cannot_apply_to_the_user_model_fails_up_front_naming_it():
    config = _config(
        model="user_inputs:tiny_mlp",
        recipes={"paths": [{"type": "DropPath", "p": 0.1}]},
    )
    with pytest.raises(reglab.ConfigError, match=r"^Recipe 'paths': .*DropPath"):
        plan(config)


def test_data_function_arrays_are_split_like_a_file(tmp_path):
    x, y = user_inputs.digits_arrays()
    np.savez(tmp_path / "d.npz", X=x, y=y)
    mine = load_dataset("user_inputs:digits_arrays", seed=1, train_size=100, label_noise=0.2)
    file = load_dataset(str(tmp_path / "d.npz"), seed=1, train_size=100, label_noise=0.2)
    assert torch.equal(mine.x_train, file.x_train) and torch.equal(mine.y_train, file.y_train)
    assert torch.equal(mine.x_test, file.x_test)


@pytest.mark.parametrize("engine", ["sequential", "population"])
@pytest.mark.parametrize("source", ["npz", "function"])
def test_image_arrays_reach_a_user_factory_with_their_image_shape(tmp_path, source, engine):
    """4-D images from an .npz file or a data function reached a user's factory flattened
    (input_shape=(192,)); only the built-in cnn got (C, H, W)."""
    x, y = user_inputs.image_arrays()
    np.savez(tmp_path / "images.npz", X=x, y=y)
    data = str(tmp_path / "images.npz") if source == "npz" else "user_inputs:image_arrays"
    user_inputs.SHAPES.clear()
    config = _config(
        data=data,
        model="user_inputs:shape_checking_cnn",
        recipes=["baseline", "l2"],
        epochs=3,
        engine=engine,
    )
    run = run_study(config, tmp_path / "out")
    assert [r["status"] for r in run.results] == ["completed", "completed"]
    assert set(user_inputs.SHAPES) == {(3, 8, 8)}


@pytest.mark.parametrize("model", ["mlp", "cnn", "linear"])
def test_image_arrays_still_train_the_built_in_models(tmp_path, model):
    x, y = user_inputs.image_arrays()
    np.savez(tmp_path / "images.npz", X=x, y=y)
    data = load_dataset(str(tmp_path / "images.npz"), seed=0)
    assert data.input_shape == data.image_shape == (3, 8, 8)
    assert data.x_train.shape[1:] == (3, 8, 8) and data.n_features == 192
    config = _config(data=str(tmp_path / "images.npz"), model=model, epochs=8, lr=0.01)
    run = run_study(config, tmp_path / "out")
    assert run.results[0]["final"]["test"]["accuracy"] > 0.9  # two well-separated classes


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("user_inputs:mismatched", "has 10 rows of inputs but 7 targets"),
        ("user_inputs:wrong_type", "must return (X, y) arrays or a mapping"),
    ],
)
def test_bad_data_function_is_one_clear_error(data, message):
    with pytest.raises(reglab.ConfigError) as info:
        load_dataset(data)
    assert message in str(info.value)


def test_dataset_splits_stream_with_train_size_and_label_noise_without_copies():
    data = load_dataset("user_inputs:digits_datasets", seed=3, train_size=100, label_noise=0.3)
    assert data.streams and data.x_train is None
    assert data.num_classes == 10 and data.task == "classification"
    assert data.size("train") == 100 and data.size("val") == 200
    train = data.splits["train"]
    assert isinstance(train, NoisyLabels) and len(train.shifts) == 30
    inner = train.dataset  # an index subset of the user's object, not a copy
    assert isinstance(inner, torch.utils.data.Subset) and isinstance(
        inner.dataset, user_inputs.Counting
    )
    clean = inner.dataset.y[np.asarray(inner.indices)]
    noisy = np.array([train[i][1] for i in range(len(train))])
    assert (noisy != clean).sum() == 30  # every shifted label is another class


def test_trial_on_a_dataset_reads_each_sample_once_per_pass(monkeypatch):
    """The lab never materializes a Dataset: per epoch, exactly one read per training sample
    for the step, one per training and validation sample for the metrics."""
    from reglab.lab.inputs.data import _user_source

    _user_source.cache_clear()
    config = _config(data="user_inputs:digits_datasets", model="user_inputs:tiny_mlp")
    settings_trials = plan(config)
    trial = settings_trials[3][0]
    source = _user_source("user_inputs:digits_datasets", None)
    splits = dict(source.splits)
    counts = []
    for epochs in (1, 3):
        from reglab.lab.studies import seams
        from reglab.lab.studies.keys import TrialSettings

        seams._dataset.cache_clear()
        settings = TrialSettings({**trial.settings, "epochs": epochs})
        t = type(trial)(trial.recipe, trial.spec, trial.seed, settings)
        before = {k: s.calls for k, s in splits.items()}
        result = run_trial(t)
        assert result["status"] == "completed", result["message"]
        counts.append({k: s.calls - before[k] for k, s in splits.items()})
    per_epoch = {k: (counts[1][k] - counts[0][k]) / 2 for k in splits}
    assert per_epoch == {"train": 2 * 400, "val": 200, "test": 0}


def test_dataset_mapping_without_test_uses_val_and_says_so():
    from torch.utils.data import TensorDataset

    x, y = torch.randn(40, 3), torch.arange(40) % 2
    data = load_dataset.__wrapped__ if hasattr(load_dataset, "__wrapped__") else load_dataset
    held = {"train": TensorDataset(x[:30], y[:30]), "val": TensorDataset(x[30:], y[30:])}
    from reglab.lab.inputs.user import reference

    got = data(reference(held, "data"))
    assert got.splits["test"] is got.splits["val"]
    assert "test metrics are on 'val'" in got.notes["test_is_val"]


def _image_folder(root: Path, classes=("a", "b"), per_class=12, size=(10, 8), mode="L"):
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            level = 40 + 150 * k
            shape = (size[0], size[1]) if mode == "L" else (size[0], size[1], 3)
            pixels = np.clip(rng.normal(level, 20, size=shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode=mode).save(root / name / f"{i}.png")
    return root


def test_image_folder_reads_pngs_resized_and_split_stratified_per_seed(tmp_path):
    root = _image_folder(tmp_path / "imgs", classes=("a", "b", "c"), mode="RGB")
    folder = ImageFolder(root, image_size=(6, 5))
    x, y = folder[13]
    assert x.shape == (3, 6, 5) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    assert y == 1 and folder.classes == ["a", "b", "c"]
    one = load_dataset(str(root), seed=0, image_size=(6, 5))
    two = load_dataset(str(root), seed=1, image_size=(6, 5))
    assert one.input_shape == (3, 6, 5) and one.image_shape == (3, 6, 5)
    labels = [one.splits["test"][i][1] for i in range(one.size("test"))]
    assert sorted(np.bincount(labels).tolist()) == [3, 4, 4]  # 30% of 36, stratified
    assert one.splits["train"].indices != two.splits["train"].indices


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: r.mkdir(), "must hold one sub-folder of images per class; it has none"),
        (lambda r: _image_folder(r, classes=("only",)), "at least two class sub-folders"),
        (lambda r: (_image_folder(r), (r / "c").mkdir()), "holds no images"),
        (
            lambda r: (_image_folder(r), (r / "b" / "broken.png").write_bytes(b"not a png")),
            "broken.png' cannot be read",
        ),
    ],
)
def test_bad_image_folder_is_one_clear_error(tmp_path, make, message):
    root = tmp_path / "imgs"
    make(root)
    with pytest.raises(reglab.ConfigError, match=message):
        ImageFolder(root)


def test_study_on_an_image_folder_with_a_user_cnn(tmp_path):
    root = _image_folder(tmp_path / "imgs", per_class=15)
    config = _config(
        data=str(root),
        image_size=[8, 8],
        model=f"{HERE.parents[1] / 'examples' / 'residual_cnn.py'}:residual_cnn",
        model_args={"width": 4, "blocks": 1},
        recipes=["baseline", "augment", "drop_path"],
        epochs=20,
        batch_size=8,
        lr=0.01,
    )
    run = run_study(config, tmp_path / "out")
    assert [r["status"] for r in run.results] == ["completed"] * 3
    assert run.results[0]["final"]["test"]["accuracy"] > 0.6  # two well-separated classes


def test_deterministic_study_gives_the_same_numbers_and_restores_the_setting(tmp_path):
    base = {"data": "wine", "recipes": ["baseline", "dropout"], "epochs": 3}
    plain = run_study(_config(**base), tmp_path / "a").results
    strict = run_study(_config(**base, deterministic=True), tmp_path / "b").results
    assert not torch.are_deterministic_algorithms_enabled()
    for p, s in zip(plain, strict, strict=True):
        assert p["key"] != s["key"]  # a setting of the trial (it may change CUDA numbers)
        assert p["final"] == s["final"]


def test_example_study_over_a_generated_image_folder_runs(tmp_path):
    import importlib.util

    path = HERE.parents[1] / "examples" / "image_folder.py"
    spec = importlib.util.spec_from_file_location("example_image_folder", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    args = ["--out", str(tmp_path), "--per-class", "8", "--epochs", "2", "--seeds", "1"]
    run = example.main([*args, "--recipes", "baseline,augment"])
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [str(d) for d in range(10)]
    assert [r["status"] for r in run.results] == ["completed", "completed"]
    assert run.report.is_file()


def test_dataloader_workers_give_the_same_trial_and_key():
    base = {"data": "user_inputs:digits_datasets", "model": "user_inputs:tiny_mlp", "epochs": 2}
    one = plan(_config(**base))[3][0]
    two = plan(_config(**base, num_workers=2))[3][0]
    assert one.key == two.key  # reading in parallel cannot change the numbers
    a, b = run_trial(one), run_trial(two)
    assert a["status"] == b["status"] == "completed"
    assert (
        a["final"] == b["final"]
        and a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
    )


class NeedsTorchOptimizer(reglab.Regularizer):
    """A regularizer of a user's own that reads its torch optimizer's ``defaults`` at an
    epoch's end."""

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None):
        self.optimizer = optimizer

    def on_epoch_end(self, metrics):
        return self.optimizer.defaults["lr"] <= 0


def test_preflight_attaches_a_recipe_that_wants_a_torch_optimizer_to_one():
    plan(_config(recipes={"mine": [{"type": "NeedsTorchOptimizer"}]}))  # does not raise
    bad = {"mine": [{"type": "NeedsTorchOptimizer"}, {"type": "DropPath", "p": 0.1}]}
    with pytest.raises(reglab.ConfigError, match=r"^Recipe 'mine': .*DropPath"):
        plan(_config(recipes=bad))  # the retry's error is the recipe's own


def test_plan_checks_the_default_study_without_building_a_torch_optimizer():
    import subprocess
    import sys

    code = (
        "import sys; from reglab.lab.studies.study import StudyConfig, plan; "
        "plan(StudyConfig(epochs=2)); print('torch._dynamo' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # a torch optimizer imports torch._dynamo (1.6 s), which the study's process does not need
    assert done.stdout.split() == ["False"]
