import numpy as np
import pytest
import torch

from reglab import ConfigError
from reglab.lab.inputs.data import BUILTIN_DATASETS, DataError, load_dataset


@pytest.mark.parametrize("name", list(BUILTIN_DATASETS))
def test_builtin_datasets_load_with_disjoint_nonempty_splits(name):
    data = load_dataset(name, seed=0)
    sizes = [len(data.y_train), len(data.y_val), len(data.y_test)]
    assert min(sizes) > 0
    assert data.x_train.dtype == torch.float32
    assert data.task == (
        "regression"
        if name in ("diabetes", "sparse_regression", "polynomial")
        else "classification"
    )


def test_train_size_is_a_stratified_subset():
    data = load_dataset("digits", seed=1, train_size=300)
    counts = torch.bincount(data.y_train, minlength=10)
    assert len(data.y_train) == 300
    assert counts.min() >= 29 and counts.max() <= 31


def test_same_seed_same_split_other_seed_other_split():
    a, b, c = (load_dataset("wine", seed=s) for s in (3, 3, 4))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)


def test_label_noise_changes_exactly_that_fraction_of_training_labels_only():
    clean = load_dataset("digits", seed=2, train_size=300)
    noisy = load_dataset("digits", seed=2, train_size=300, label_noise=0.3)
    assert torch.equal(clean.x_train, noisy.x_train)
    assert (clean.y_train != noisy.y_train).sum().item() == 90
    assert torch.equal(clean.y_val, noisy.y_val) and torch.equal(clean.y_test, noisy.y_test)
    assert noisy.notes["noisy_labels"] == 90


def test_standardization_uses_training_statistics_only():
    data = load_dataset("breast_cancer", seed=0)
    assert torch.allclose(data.x_train.mean(0), torch.zeros(30), atol=1e-5)
    assert torch.allclose(data.x_train.std(0, unbiased=False), torch.ones(30), atol=1e-4)
    assert not torch.allclose(data.x_test.mean(0), torch.zeros(30), atol=1e-3)


def test_regression_targets_are_standardized_on_train():
    data = load_dataset("diabetes", seed=0)
    assert data.y_train.mean().abs().item() < 1e-5
    assert data.num_classes is None


def test_sparse_regression_knows_its_informative_features():
    data = load_dataset("sparse_regression")
    assert len(data.informative) == 10 and data.n_features == 100


def test_unknown_dataset_lists_the_builtins():
    with pytest.raises(
        ConfigError,
        match="'data' parameter of compare must be one of 'digits', "
        "'breast_cancer'.*'<file>.csv'.*Got 'mnist'.",
    ):
        load_dataset("mnist")


def test_train_size_larger_than_available_names_the_range():
    with pytest.raises(
        ConfigError,
        match=r"'train_size' parameter of compare must be an int in "
        r"\[2, 89\]. Got 500.",
    ):
        load_dataset("wine", train_size=500)


def test_label_noise_on_regression_is_rejected():
    with pytest.raises(
        ConfigError, match="'label_noise' parameter of compare must be 0 for a regression"
    ):
        load_dataset("diabetes", label_noise=0.1)


def _csv(tmp_path, text):
    path = tmp_path / "data.csv"
    path.write_text(text)
    return str(path)


def _table(rows=40):
    lines = ["a,b,label"]
    for i in range(rows):
        lines.append(f"{i},{i % 7 * 0.5},{'yes' if i % 2 else 'no'}")
    return "\n".join(lines) + "\n"


def test_csv_with_string_labels_is_classification(tmp_path):
    data = load_dataset(_csv(tmp_path, _table()), target="label")
    assert data.task == "classification" and data.num_classes == 2
    assert data.feature_names == ["a", "b"]


def test_csv_missing_target_column_lists_columns(tmp_path):
    with pytest.raises(
        ConfigError,
        match="'target' parameter of compare must be one of 'a', 'b', 'label'. Got 'y'.",
    ):
        load_dataset(_csv(tmp_path, _table()), target="y")


def test_csv_non_numeric_feature_names_column_and_row(tmp_path):
    text = _table().replace("\n3,", "\nthree,", 1)
    with pytest.raises(DataError, match="Column 'a' of .* must hold numbers; row 5 has 'three'."):
        load_dataset(_csv(tmp_path, text), target="label")


def test_csv_nan_is_rejected(tmp_path):
    text = _table().replace("\n4,", "\nnan,", 1)
    with pytest.raises(DataError, match=r"data.csv has missing values: 'a' \(1 row\)\. Fill"):
        load_dataset(_csv(tmp_path, text), target="label")


def test_csv_too_small_to_split(tmp_path):
    with pytest.raises(DataError, match="has 3 rows: too few to split"):
        load_dataset(_csv(tmp_path, _table(3)), target="label")


def test_npz_is_loaded_and_checked(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, X=rng.standard_normal((50, 4)), y=rng.standard_normal(50))
    assert load_dataset(str(path)).task == "regression"
    np.savez(path, features=np.zeros((5, 2)))
    with pytest.raises(DataError, match="must hold arrays 'X' and 'y'; it has features"):
        load_dataset(str(path))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="names .*nope.csv, which does not exist"):
        load_dataset(str(tmp_path / "nope.csv"))


@pytest.mark.parametrize("name", ["shapez/", "images/cats", "nope.npz"])
def test_a_data_path_that_does_not_exist_says_so(tmp_path, monkeypatch, name):
    """A missing folder got the generic "must be one of ... '<image folder>' ... Got 'shapez/'"."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=f"names {name}, which does not exist"):
        load_dataset(name)


def test_a_csv_without_a_target_names_the_flag_and_the_columns(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"'target' parameter of compare must name the column of .*\.csv to predict "
        r"\(--target, or target in a study file\): one of 'a', 'b', 'label'. Got none.",
    ):
        load_dataset(_csv(tmp_path, _table()))


@pytest.mark.parametrize(("val", "test"), [(0.2, 0.3), (0.1, 0.1), (0.25, 0.5)])
def test_split_fractions_set_the_validation_and_test_sizes(val, test):
    data = load_dataset("wine", seed=3, val_fraction=val, test_fraction=test)
    n = 178
    assert (data.size("val"), data.size("test")) == (round(n * val), round(n * test))
    assert data.size("train") == n - round(n * val) - round(n * test)
    # stratified: every class is in the validation and test sets
    assert set(data.y_val.tolist()) == set(data.y_test.tolist()) == {0, 1, 2}


def test_split_fractions_are_checked_one_by_one_and_together():
    from reglab.lab.studies.config import StudyConfig

    with pytest.raises(ConfigError, match="'val_fraction' parameter of compare must be"):
        load_dataset("wine", val_fraction=0.0)
    with pytest.raises(ConfigError, match="'test_fraction' parameter of compare must be"):
        StudyConfig(test_fraction=1.5)
    with pytest.raises(
        ConfigError,
        match=r"'test_fraction' parameter of compare must leave data to train on: "
        r"val_fraction \+ test_fraction < 1. Got 0.5 \+ 0.5.",
    ):
        StudyConfig(val_fraction=0.5, test_fraction=0.5)


def test_default_panel_gains_augment_for_image_data_only():
    from reglab.lab.inputs.recipes import resolve_recipes

    assert "augment" in resolve_recipes(None, "classification", images=True)
    assert "augment" not in resolve_recipes(None, "classification", images=False)
    regression = resolve_recipes(None, "regression")
    assert not {"label_smoothing", "mixup", "cutmix"} & set(regression)


def test_image_recipes_get_the_data_image_shape():
    from reglab.lab.inputs.recipes import BUILTIN_RECIPES, build_recipe

    recipe = build_recipe(BUILTIN_RECIPES["cutout"][1], (1, 8, 8))
    assert recipe.regularizers[0].get_config()["image_shape"] == [1, 8, 8]
    assert "image_shape" not in BUILTIN_RECIPES["cutout"][1][0]  # the built-in is not changed
