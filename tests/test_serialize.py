import pytest
import torch

import reglab


def test_recipe_round_trips_through_toml(tmp_path):
    recipe = reglab.chain(
        reglab.L2(1e-4),
        reglab.Dropout(0.3, layers=["1", "3"]),
        reglab.ClipGradNorm(1.0),
        reglab.EarlyStopping(patience=4),
    )
    path = tmp_path / "recipe.toml"
    reglab.save_recipe(recipe, path)
    text = path.read_text()
    assert '[[regularizers]]\ntype = "L2"\nstrength = 0.0001' in text
    loaded = reglab.load_recipe(path)
    assert loaded.get_config() == {
        "regularizers": [{k: v for k, v in c.items()} for c in recipe.get_config()["regularizers"]]
    }


def test_recipe_from_hand_written_toml():
    recipe = reglab.recipe_from_toml('[[regularizers]]\ntype = "L1"\nstrength = 0.5\n')
    assert repr(recipe) == "chain(L1(strength=0.5, method='proximal', params=None))"


def test_scalar_tensor_hyperparameters_are_written_as_numbers():
    text = reglab.recipe_to_toml(reglab.chain(reglab.L2(torch.tensor(0.25))))
    assert "strength = 0.25" in text


def test_callables_and_vector_tensors_cannot_be_written():
    with pytest.raises(
        reglab.ConfigError, match="'params' parameter of recipe_to_toml must be plain data"
    ):
        reglab.recipe_to_toml(reglab.L2(0.1, params=lambda n, p: True))
    with pytest.raises(reglab.ConfigError, match="'strength' parameter .* shape \\(2,\\)"):
        reglab.recipe_to_toml(reglab.L2(torch.tensor([0.1, 0.2])))


def test_toml_errors_are_config_errors():
    with pytest.raises(reglab.ConfigError, match="not valid TOML"):
        reglab.recipe_from_toml("[[regularizers]\n")
    with pytest.raises(reglab.ConfigError, match="'type' parameter of from_config must be one of"):
        reglab.recipe_from_toml('[[regularizers]]\ntype = "Lasso"\n')
    with pytest.raises(reglab.ConfigError, match="'p' parameter of Dropout"):
        reglab.recipe_from_toml('[[regularizers]]\ntype = "Dropout"\np = 2.0\n')


def test_every_builtin_example_round_trips_through_toml():
    from test_core import EXAMPLES

    recipe = reglab.chain(*EXAMPLES)
    loaded = reglab.recipe_from_toml(reglab.recipe_to_toml(recipe))
    assert [type(r) for r in loaded.regularizers] == [type(r) for r in EXAMPLES]
    assert [r.get_config() for r in loaded.regularizers] == [r.get_config() for r in EXAMPLES]
