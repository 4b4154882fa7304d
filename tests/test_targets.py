import pytest
import torch
import torch.nn.functional as F

import reglab


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.4])
def test_label_smoothing_equals_torch_cross_entropy_label_smoothing(eps):
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(32, 5, generator=g), torch.randint(0, 5, (32,), generator=g)
    reg = reglab.LabelSmoothing(eps)
    reg.attach(None, num_classes=5)
    _, soft = reg.on_batch(torch.zeros(32, 1), y)
    ours = F.cross_entropy(logits, soft)
    theirs = torch.nn.CrossEntropyLoss(label_smoothing=eps)(logits, y)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


def test_smooth_labels_closed_form_and_soft_targets_sum_to_one():
    assert torch.allclose(
        reglab.smooth_labels(torch.tensor([1]), 0.3, 3), torch.tensor([[0.1, 0.8, 0.1]])
    )
    mixed = torch.tensor([[0.5, 0.5, 0.0]])
    out = reglab.smooth_labels(mixed, 0.3, 3)
    assert torch.allclose(out, torch.tensor([[0.45, 0.45, 0.1]]))
    assert torch.allclose(out.sum(1), torch.ones(1))


def test_label_smoothing_needs_a_number_of_classes():
    with pytest.raises(reglab.ConfigError, match="'num_classes' parameter of LabelSmoothing"):
        reglab.LabelSmoothing(0.1).attach(None)
    reg = reglab.LabelSmoothing(0.1, num_classes=4)
    reg.attach(None, num_classes=None)
    assert reg.on_batch(None, torch.tensor([0]))[1].shape == (1, 4)


def test_label_smoothing_rejects_eps_outside_unit_interval():
    with pytest.raises(
        reglab.ConfigError,
        match=r"'eps' parameter of LabelSmoothing must be a "
        r"float in \[0, 1\]. Got 1.2.",
    ):
        reglab.LabelSmoothing(1.2)
