"""Learning curves of a large training split on a fixed sample: fit's ``train_eval``, the same
in a population, and the sample a study's data draws (the final figures use every row)."""

import pytest
import torch
from torch import nn

import reglab


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def test_fit_measures_each_epochs_train_metrics_on_train_eval(toy_data):
    (x, y), val = toy_data
    sample = (x[:20], y[:20])
    history = reglab.fit(_model(), (x, y), val, epochs=3, seed=1, train_eval=sample)
    whole = reglab.fit(_model(), (x, y), val, epochs=3, seed=1)
    # the same training (the sample changes no step), measured on other rows
    assert torch.equal(history.model[0].weight, whole.model[0].weight)
    assert history["val_loss"] == whole["val_loss"]
    assert history["train_loss"][-1] == reglab.evaluate(history.model, sample)["loss"]
    assert history["train_loss"][-1] != whole["train_loss"][-1]


def test_population_measures_train_eval_as_fit_does(toy_data):
    from reglab.lab.engine.member import Member
    from reglab.lab.engine.population import fit_population

    (x, y), val = toy_data
    sample = (x[:20], y[:20])
    recipes = [reglab.chain(), reglab.chain(reglab.L2(0.01))]
    members = [Member(_model(), r, (x, y), val, 1, sample) for r in recipes]
    histories = fit_population(members, epochs=3)
    for recipe, history in zip(recipes, histories, strict=True):
        alone = reglab.fit(
            _model(), (x, y), val, recipe=recipe, epochs=3, seed=1, train_eval=sample
        )
        assert history["train_loss"] == pytest.approx(alone["train_loss"], rel=1e-5)
        assert history["val_loss"] == pytest.approx(alone["val_loss"], rel=1e-5)


def test_a_large_training_split_draws_a_fixed_stratified_curve_sample(monkeypatch):
    from reglab.lab.inputs import dataset
    from reglab.lab.inputs.data import load_dataset
    from reglab.lab.studies.seams import curve_for, member_for

    assert load_dataset("digits", seed=0, train_size=300).curve() is None  # small: every row
    monkeypatch.setattr(dataset, "CURVE_ROWS", 200)
    data = load_dataset("digits", seed=0)
    x, y = data.curve()
    assert len(y) == 200 and data.size("train") > 200
    shares = torch.bincount(y, minlength=10) / 200
    whole = torch.bincount(data.y_train, minlength=10) / data.size("train")
    assert (shares - whole).abs().max() < 0.01  # stratified by class
    assert torch.equal(load_dataset("digits", seed=0).curve_index, data.curve_index)
    assert not torch.equal(load_dataset("digits", seed=1).curve_index, data.curve_index)
    assert "fixed stratified sample of 200 of its" in data.notes["curves"]
    assert torch.equal(curve_for(data)["train_eval"][0], x)
    member = member_for(data, _model(), None, 0)
    assert torch.equal(member.train_eval[0], x) and len(member.train[0]) == data.size("train")
