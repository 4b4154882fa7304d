import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

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


def test_confidence_penalty_is_the_negative_entropy():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    p = logits.softmax(-1)
    entropy = -(p * p.log()).sum(-1)
    assert reglab.confidence_penalty(logits[:1]).item() == pytest.approx(-math.log(4), abs=1e-6)
    assert reglab.confidence_penalty(logits).item() == pytest.approx(-entropy.mean().item(), 1e-6)


def test_confidence_penalty_adds_beta_times_negative_entropy_to_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(8, 5, requires_grad=True)
    reg = reglab.ConfidencePenalty(0.5)
    loss = reg.on_loss(torch.tensor(1.0), logits)
    assert loss.item() == pytest.approx(1.0 + 0.5 * reglab.confidence_penalty(logits).item())
    loss.backward()
    # the gradient pushes towards higher entropy: a step along -grad raises the entropy
    before = -reglab.confidence_penalty(logits).item()
    after = -reglab.confidence_penalty(logits - 0.1 * logits.grad).item()
    assert after > before


def test_confidence_penalty_lowers_overconfidence_in_training():
    torch.manual_seed(0)
    x, y = torch.randn(128, 10), torch.randint(0, 3, (128,))  # random labels: memorized

    def mean_confidence(recipe):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 3))
        reglab.fit(model, (x, y), epochs=40, recipe=recipe, lr=1e-2)
        with torch.no_grad():
            return model(x).softmax(-1).max(-1).values.mean().item()

    assert (
        mean_confidence(reglab.chain(reglab.ConfidencePenalty(2.0))) < mean_confidence(None) - 0.1
    )


def test_confidence_penalty_rejects_negative_beta():
    with pytest.raises(reglab.ConfigError, match="'beta' parameter of ConfidencePenalty"):
        reglab.ConfidencePenalty(-0.1)


def test_label_smoothing_of_soft_targets_mixes_with_uniform():
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0]])
    out = reglab.smooth_labels(soft, 0.3, 3)
    torch.testing.assert_close(out, soft * 0.7 + 0.1)
    torch.testing.assert_close(out.sum(1), torch.ones(2))


@pytest.mark.parametrize("ignore_index", [None, -100, 2])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_label_smoothing_on_dense_outputs_equals_cross_entropy_loss(eps, ignore_index):
    """Segmentation-shaped logits (N, C, H, W) with targets (N, H, W), as CrossEntropyLoss
    takes them, with ignore_index: refused or wrong before (one-hot on the last dim)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, 6, 7, generator=g)
    y = torch.randint(0, 5, (4, 6, 7), generator=g)
    if ignore_index is not None:
        y[torch.rand(y.shape, generator=g) < 0.3] = ignore_index
    reg = reglab.LabelSmoothing(eps, ignore_index=ignore_index)
    reg.attach(None, num_classes=5)
    _, soft = reg.on_batch(torch.zeros(4, 1), y)
    assert soft.shape == logits.shape
    theirs = torch.nn.CrossEntropyLoss(
        label_smoothing=eps, ignore_index=-100 if ignore_index is None else ignore_index
    )(logits, y)
    assert F.cross_entropy(logits, soft).item() == pytest.approx(theirs.item(), abs=1e-6)


def test_label_smoothing_ignore_index_on_flat_outputs_equals_cross_entropy_loss():
    g = torch.Generator().manual_seed(1)
    logits, y = torch.randn(32, 4, generator=g), torch.randint(0, 4, (32,), generator=g)
    y[::3] = -1
    soft = reglab.smooth_labels(y, 0.1, 4, ignore_index=-1)
    assert torch.equal(soft[::3], torch.zeros(11, 4))
    theirs = torch.nn.CrossEntropyLoss(label_smoothing=0.1, ignore_index=-1)(logits, y)
    assert F.cross_entropy(logits, soft).item() == pytest.approx(theirs.item(), abs=1e-6)


def test_label_smoothing_ignore_index_must_be_an_int():
    with pytest.raises(reglab.ConfigError, match="'ignore_index' parameter of LabelSmoothing"):
        reglab.LabelSmoothing(0.1, ignore_index=1.5)
