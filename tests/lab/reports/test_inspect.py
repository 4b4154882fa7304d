import torch
from torch import nn

from reglab.lab.inputs.data import load_dataset
from reglab.lab.reports.inspect import model_figures


def test_model_figures_per_layer_closed_form():
    data = load_dataset("wine", seed=0)
    model = nn.Sequential(nn.Linear(13, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].weight[:, :3] = 0.0  # inputs 0..2 unused
        model[2].weight.fill_(2.0)
        model[2].weight[0] = 0.0
    out = model_figures(model, data)
    f = out["figures"]
    assert f["zero_fraction[0.weight]"] == 12 / 52
    assert f["zero_fraction[2.weight]"] == 4 / 12
    assert f["zero_fraction"] == 16 / 64
    assert f["weight_l2[0.weight]"] == (40.0) ** 0.5
    assert f["weight_l2"] == (40 + 8 * 4.0) ** 0.5
    assert f["features_kept"] == 10
    assert out["features"] == data.feature_names[3:]
    assert sum(out["histogram"]["counts"]) == 64


def test_model_figures_count_informative_and_noise_inputs():
    data = load_dataset("sparse_regression", seed=0)
    model = nn.Sequential(nn.Linear(100, 1))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[0, data.informative] = 1.0
        model[0].weight[0, [i for i in range(100) if i not in data.informative][:3]] = 1.0
    f = model_figures(model, data)["figures"]
    assert (f["informative_kept"], f["noise_kept"], f["features_kept"]) == (10, 3, 13)


def test_model_figures_skip_inputs_for_a_cnn():
    data = load_dataset("digits", seed=0, train_size=100)
    from reglab.lab.inputs.models import build_model

    out = model_figures(build_model("cnn", 64, 10, image_shape=(1, 8, 8)), data)
    assert "features_kept" not in out["figures"] and "features" not in out
