import math

import pytest
import torch
from torch import nn

import reglab
from reglab.stopping import StopReason, infer_mode


def _drive(stopper, values, key="val_loss", model=None):
    """Feed a scripted metric sequence; return the epoch at which it asked to stop."""
    model = model or nn.Linear(1, 1)
    stopper.attach(model)
    for epoch, value in enumerate(values, start=1):
        if stopper.on_epoch_end({"epoch": epoch, key: value}):
            return epoch
    return None


def test_stops_after_patience_epochs_without_improvement():
    stopper = reglab.EarlyStopping(patience=2)
    assert _drive(stopper, [1.0, 0.8, 0.9, 0.85, 0.7]) == 4
    assert stopper.best == 0.8 and stopper.best_epoch == 2
    assert stopper.stop_reason is StopReason.PATIENCE_EXHAUSTED
    assert stopper.message == (
        "val_loss did not improve by more than 0.0 for 2 epochs; best 0.8 at epoch 2"
    )


def test_patience_zero_stops_at_first_non_improvement():
    assert _drive(reglab.EarlyStopping(patience=0), [3.0, 2.0, 2.0]) == 3


def test_improvement_resets_the_wait():
    assert _drive(reglab.EarlyStopping(patience=2), [5, 4, 4.5, 3, 3.5, 3.2, 3.1]) == 6


def test_min_delta_requires_a_large_enough_improvement():
    stopper = reglab.EarlyStopping(patience=1, min_delta=0.1)
    assert _drive(stopper, [1.0, 0.95, 0.85]) == 2
    assert stopper.best == 1.0


def test_max_mode_is_inferred_for_accuracy():
    assert infer_mode("val_accuracy") == "max" and infer_mode("val_loss") == "min"
    stopper = reglab.EarlyStopping("val_accuracy", patience=1)
    assert stopper.mode == "max"
    assert _drive(stopper, [0.5, 0.6, 0.55], key="val_accuracy") == 3
    assert stopper.best == 0.6
    assert reglab.EarlyStopping("val_accuracy").get_config()["mode"] is None  # as passed


def test_non_finite_values_never_improve():
    stopper = reglab.EarlyStopping(patience=1)
    assert _drive(stopper, [1.0, math.nan]) == 2
    assert stopper.best == 1.0


def test_restores_best_weights_even_without_stopping_early():
    model = nn.Linear(1, 1, bias=False)
    stopper = reglab.EarlyStopping(patience=100)
    stopper.attach(model)
    for epoch, (weight, loss) in enumerate([(1.0, 0.5), (2.0, 0.3), (3.0, 0.4)], start=1):
        with torch.no_grad():
            model.weight.fill_(weight)
        assert not stopper.on_epoch_end({"epoch": epoch, "val_loss": loss})
    stopper.on_fit_end()
    assert model.weight.item() == 2.0
    assert stopper.stop_reason is StopReason.NOT_STOPPED


def test_restore_best_false_keeps_the_last_weights():
    model = nn.Linear(1, 1, bias=False)
    stopper = reglab.EarlyStopping(patience=5, restore_best=False)
    stopper.attach(model)
    for epoch, (weight, loss) in enumerate([(1.0, 0.1), (2.0, 0.3)], start=1):
        with torch.no_grad():
            model.weight.fill_(weight)
        stopper.on_epoch_end({"epoch": epoch, "val_loss": loss})
    stopper.on_fit_end()
    assert model.weight.item() == 2.0


def test_state_dict_round_trips_without_touching_constructor_arguments():
    a = reglab.EarlyStopping(patience=3, min_delta=0.01)
    _drive(a, [1.0, 0.5, 0.6])
    b = reglab.EarlyStopping(patience=7, min_delta=0.2)
    b.attach(nn.Linear(1, 1))
    b.load_state_dict(a.state_dict())
    assert (b.best, b.best_epoch, b.wait) == (0.5, 2, 1)
    assert (b.patience, b.min_delta) == (7, 0.2)
    assert b.get_config()["patience"] == 7


def test_unknown_monitor_lists_available_metrics():
    stopper = reglab.EarlyStopping("val_acc")
    stopper.attach(nn.Linear(1, 1))
    with pytest.raises(
        reglab.ConfigError,
        match="'monitor' parameter of EarlyStopping must be "
        "one of 'val_loss', 'val_accuracy'. Got 'val_acc'.",
    ):
        stopper.on_epoch_end({"epoch": 1, "val_loss": 1.0, "val_accuracy": 0.5})


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"patience": -1}, "patience"),
        ({"min_delta": -0.1}, "min_delta"),
        ({"mode": "avg"}, "mode"),
        ({"monitor": ""}, "monitor"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, name):
    with pytest.raises(reglab.ConfigError, match=f"'{name}' parameter of EarlyStopping"):
        reglab.EarlyStopping(**kwargs)


def test_relative_min_delta_is_a_fraction_of_the_best():
    stopper = reglab.EarlyStopping(patience=1, min_delta=0.1, relative=True)
    # 10 -> 8.5 improves (needs < 9); 8.5 -> 8.0 does not (needs < 7.65)
    assert _drive(stopper, [10.0, 8.5, 8.0]) == 3
    assert stopper.best == 8.5


def test_baseline_must_be_beaten():
    stopper = reglab.EarlyStopping(patience=2, baseline=0.5)
    assert _drive(stopper, [0.9, 0.7]) == 2
    assert stopper.stop_reason is StopReason.BASELINE_NOT_REACHED
    assert (stopper.best, stopper.best_epoch) == (0.7, 2)  # the best seen, as Keras keeps it
    assert stopper.message == (
        "val_loss did not beat the baseline 0.5 in 2 epochs; best 0.7 at epoch 2"
    )
    beaten = reglab.EarlyStopping(patience=2, baseline=0.5)
    assert _drive(beaten, [0.9, 0.4, 0.45, 0.5]) == 4
    assert beaten.stop_reason is StopReason.PATIENCE_EXHAUSTED and beaten.best_epoch == 2


def _weights_run(stopper, script):
    """Drive ``stopper`` over (weight, value) epochs on a one-weight model, end the fit, and
    return the weight left in the model."""
    model = nn.Linear(1, 1, bias=False)
    stopper.attach(model)
    for epoch, (weight, value) in enumerate(script, start=1):
        with torch.no_grad():
            model.weight.fill_(weight)
        if stopper.on_epoch_end({"epoch": epoch, "val_loss": value}):
            break
    stopper.on_fit_end()
    return model.weight.item()


def test_restore_best_restores_the_best_seen_when_the_baseline_is_never_beaten():
    """Keras restores the best weights seen whether or not the baseline was beaten; reglab
    restored nothing (README: "always")."""
    stopper = reglab.EarlyStopping(patience=3, baseline=0.1)
    assert _weights_run(stopper, [(1.0, 0.9), (2.0, 0.5), (3.0, 0.7), (4.0, 0.8)]) == 2.0
    assert stopper.stop_reason is StopReason.BASELINE_NOT_REACHED


def test_restore_best_restores_when_another_stopper_ended_training():
    model = nn.Linear(1, 1, bias=False)
    recipe = reglab.chain(
        reglab.EarlyStopping("val_loss", patience=50),
        reglab.EarlyStopping("sched", patience=0, restore_best=False),
    )
    recipe.attach(model)
    for epoch, (weight, loss, sched) in enumerate([(1.0, 0.9, 3), (2.0, 0.2, 2), (3.0, 0.6, 2)]):
        with torch.no_grad():
            model.weight.fill_(weight)
        if recipe.on_epoch_end({"epoch": epoch + 1, "val_loss": loss, "sched": sched}):
            break
    recipe.on_fit_end()
    assert epoch == 2 and model.weight.item() == 2.0


def test_check_finite_stops_at_the_first_nan_with_its_own_reason():
    stopper = reglab.EarlyStopping(patience=10)
    assert _drive(stopper, [1.0, 0.5, math.inf, 0.1]) == 3
    assert stopper.stop_reason is StopReason.NON_FINITE_METRIC
    assert stopper.message == "val_loss became inf at epoch 3; best 0.5 at epoch 2"
    lenient = reglab.EarlyStopping(patience=10, check_finite=False)
    assert _drive(lenient, [1.0, 0.5, math.nan, 0.1]) is None
    assert (lenient.best, lenient.wait) == (0.1, 0)


def test_stopping_threshold_stops_once_reached_and_keeps_that_epoch_as_best():
    stopper = reglab.EarlyStopping(patience=10, stopping_threshold=0.2)
    assert _weights_run(stopper, [(1.0, 0.5), (2.0, 0.2), (3.0, 0.15), (4.0, 0.1)]) == 3.0
    assert (stopper.stop_reason, stopper.stopped_epoch) == (StopReason.STOPPING_THRESHOLD, 3)
    assert stopper.message == "val_loss 0.15 < stopping_threshold=0.2 at epoch 3"
    maximize = reglab.EarlyStopping("val_acc", patience=10, stopping_threshold=0.9)
    assert _drive(maximize, [0.5, 0.9, 0.95], key="val_acc") == 3


def test_divergence_threshold_stops_at_once_without_taking_that_epoch_as_best():
    stopper = reglab.EarlyStopping(patience=10, divergence_threshold=5.0)
    assert _weights_run(stopper, [(1.0, 4.0), (2.0, 3.0), (3.0, 7.0), (4.0, 1.0)]) == 2.0
    assert (stopper.stop_reason, stopper.stopped_epoch) == (StopReason.DIVERGENCE_THRESHOLD, 3)
    assert stopper.message == "val_loss 7 > divergence_threshold=5.0 at epoch 3; best 3 at epoch 2"


_SCRIPTS = [
    ([1.0, 0.8, 0.9, 0.85, 0.7, 0.9], {"patience": 2}),
    ([1.0, 0.9, 0.95, 0.5, 0.51, 0.52, 0.53], {"patience": 3, "min_delta": 0.05}),
    ([1.0, 0.5, math.nan, 0.1], {"patience": 5}),
    ([1.0, 0.5, math.nan, 0.1, 0.2, 0.3], {"patience": 2, "check_finite": False}),
    ([1.0, 0.5, 0.3, 0.1], {"patience": 5, "stopping_threshold": 0.35}),
    ([1.0, 0.5, 4.0, 0.1], {"patience": 5, "divergence_threshold": 3.0}),
    ([0.3, 0.5, 0.6, 0.7, 0.8], {"mode": "max", "patience": 1, "stopping_threshold": 0.75}),
]


@pytest.mark.parametrize(("values", "kwargs"), _SCRIPTS)
def test_stops_at_the_same_epoch_and_for_the_same_reason_as_lightning(values, kwargs):
    """Lightning's own EarlyStopping decides each scripted sequence; reglab must agree."""
    callbacks = pytest.importorskip("lightning.pytorch.callbacks.early_stopping")
    theirs = callbacks.EarlyStopping("val_loss", verbose=False, **kwargs)
    their_stop, their_reason = None, None
    for epoch, value in enumerate(values, start=1):
        stop, _ = theirs._evaluate_stopping_criteria(torch.tensor(value))
        if stop:
            their_stop, their_reason = epoch, theirs.stopping_reason.name
            break
    ours = reglab.EarlyStopping("val_loss", **kwargs)
    assert _drive(ours, values) == their_stop
    if their_stop is not None:
        assert ours.stop_reason.name == their_reason


def test_warm_up_epochs_are_ignored():
    stopper = reglab.EarlyStopping(patience=1, start_from_epoch=3)
    # epochs 1-3 are ignored, even the best value 0.1 at epoch 2
    assert _drive(stopper, [1.0, 0.1, 2.0, 0.9, 0.95]) == 5
    assert (stopper.best, stopper.best_epoch) == (0.9, 4)


def test_stop_reason_enum_values():
    assert {r.value for r in StopReason} == {
        "not_stopped",
        "patience_exhausted",
        "baseline_not_reached",
        "non_finite_metric",
        "stopping_threshold",
        "divergence_threshold",
    }


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"baseline": float("nan")}, "baseline"),
        ({"start_from_epoch": -1}, "start_from_epoch"),
        ({"relative": 1}, "relative"),
        ({"check_finite": "yes"}, "check_finite"),
        ({"stopping_threshold": math.inf}, "stopping_threshold"),
        ({"divergence_threshold": math.nan}, "divergence_threshold"),
    ],
)
def test_new_arguments_are_checked(kwargs, name):
    with pytest.raises(reglab.ConfigError, match=f"'{name}' parameter of EarlyStopping"):
        reglab.EarlyStopping(**kwargs)


@pytest.mark.parametrize("numbering", ["from 0", "from 1", "none"])
def test_first_epoch_counts_however_the_loop_numbers_epochs(numbering):
    """A loop counting epochs from 0 (as Keras's) used to have its first epoch skipped: a best
    first epoch was then never restored."""
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    stopper = reglab.EarlyStopping(patience=2)
    stopper.attach(model)
    first = model.weight.detach().clone()
    for i, value in enumerate([0.1, 0.5, 0.6, 0.7]):
        metrics = {"val_loss": value}
        if numbering != "none":
            metrics["epoch"] = i + (0 if numbering == "from 0" else 1)
        if stopper.on_epoch_end(metrics):
            break
        with torch.no_grad():
            model.weight.add_(1.0)
    stopper.on_fit_end()
    assert stopper.best == 0.1 and stopper.stopped_epoch is not None
    assert stopper.best_epoch == {"from 0": 0, "from 1": 1, "none": 1}[numbering]
    assert torch.equal(model.weight, first)  # the first epoch's weights were restored
