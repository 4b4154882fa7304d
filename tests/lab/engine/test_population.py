"""The population engine: each member trains as reglab.fit would train it alone."""

import json
from copy import deepcopy

import pytest
import torch

import reglab
from reglab.lab.engine.kernels import Kernels, split_kernels
from reglab.lab.engine.population import Member, fit_population, population_reason
from reglab.lab.inputs.recipes import BUILTIN_RECIPES, build_recipe
from reglab.lab.studies.config import StudyConfig
from reglab.lab.studies.seams import dataset_for, model_for, trial_settings

EPOCHS = 3


def _settings(**changes):
    config = StudyConfig(train_size=60, epochs=EPOCHS, batch_size=16, **changes)
    task = "regression" if changes.get("data") == "diabetes" else "classification"
    return trial_settings(config, task)


def _prepared(data):
    def prep(y):
        return y.float().unsqueeze(1) if data.task == "regression" else y

    return (data.x_train, prep(data.y_train)), (data.x_val, prep(data.y_val))


def _members(settings, specs, seeds=(0, 1)):
    members, refs = [], []
    for seed in seeds:
        data = dataset_for(settings, seed)
        train, val = _prepared(data)
        for spec in specs:
            recipe = build_recipe(spec, data.image_shape)
            members.append(Member(model_for(settings, data, seed), recipe, train, val, seed))
            refs.append((spec, seed, data, train, val))
    return members, refs


def _alone(settings, spec, seed, data, train, val, epochs=EPOCHS):
    return reglab.fit(
        model_for(settings, data, seed),
        train,
        val,
        recipe=build_recipe(spec, data.image_shape),
        epochs=epochs,
        batch_size=settings["batch_size"],
        seed=seed,
        task=data.task,
        num_classes=data.num_classes,
    )


def _assert_same(batched, alone, tol=1e-4):
    assert batched.status == alone.status
    assert batched.epochs_run == alone.epochs_run
    for mine, theirs in zip(batched.epochs, alone.epochs, strict=True):
        for key, value in theirs.items():
            if key != "seconds":
                assert mine[key] == pytest.approx(value, rel=tol, abs=tol), key
    for (name, p), q in zip(
        batched.model.named_parameters(), alone.model.parameters(), strict=True
    ):
        assert torch.allclose(p, q, atol=10 * tol), name


def _assert_each_matches_fit(model, recipes, train, val):
    """One population of ``model()`` under each of ``recipes`` (specs, or a recipe to copy):
    each member equals its own ``reglab.fit``."""

    def recipe(r):
        return deepcopy(r) if isinstance(r, reglab.Regularizer) else build_recipe(r)

    members = [Member(model(), recipe(r), train, val, 0) for r in recipes]
    histories = fit_population(members, epochs=EPOCHS, batch_size=16, num_classes=10)
    for history, r in zip(histories, recipes, strict=True):
        alone = reglab.fit(
            model(),
            train,
            val,
            recipe=recipe(r),
            epochs=EPOCHS,
            batch_size=16,
            seed=0,
            num_classes=10,
        )
        _assert_same(history, alone)


FAMILIES = [
    "baseline",
    "l1",
    "l2",
    "elastic_net",
    "weight_decay",
    "max_norm",
    "group_lasso",
    "dropout",
    "gaussian_dropout",
    "noise",
    "feature_dropout",
    "label_smoothing",
    "mixup",
    "cutout",
    "augment",
    "clip",
    "clip_value",
    "agc",
    "confidence_penalty",
    "ema",
    "early_stopping",
    "combined",
]


def test_population_members_match_fit_for_every_recipe_family():
    settings = _settings()
    specs = [BUILTIN_RECIPES[name][1] for name in FAMILIES]
    members, refs = _members(settings, specs)
    histories = fit_population(members, epochs=EPOCHS, batch_size=16, num_classes=10)
    for history, (spec, seed, data, train, val) in zip(histories, refs, strict=True):
        _assert_same(history, _alone(settings, spec, seed, data, train, val))


def test_population_members_match_fit_for_regression_and_strength_sweeps():
    settings = _settings(data="diabetes")
    specs = [[{"type": "L2", "strength": s}] for s in (0.0, 0.01, 0.1, 1.0)]
    specs += [[{"type": "L1", "strength": s}] for s in (0.01, 0.3)]
    members, refs = _members(settings, specs)
    histories = fit_population(members, epochs=EPOCHS, batch_size=16, task="regression")
    for history, (spec, seed, data, train, val) in zip(histories, refs, strict=True):
        _assert_same(history, _alone(settings, spec, seed, data, train, val))
    # the strengths really differ: the strongest L2 ends with the smallest weights
    norms = [sum(float(p.detach().norm()) for p in h.model.parameters()) for h in histories[:4]]
    assert norms == sorted(norms, reverse=True)


def test_population_members_match_fit_for_residual_and_conv_models():
    for model, names in (("resmlp", ["baseline", "drop_path"]), ("cnn", ["channel_dropout"])):
        settings = _settings(model=model, widths=[32, 32])
        specs = [BUILTIN_RECIPES[n][1] for n in names]
        members, refs = _members(settings, specs, seeds=(0,))
        histories = fit_population(members, epochs=2, batch_size=16, num_classes=10)
        for history, (spec, seed, data, train, val) in zip(histories, refs, strict=True):
            _assert_same(history, _alone(settings, spec, seed, data, train, val, epochs=2))


def test_population_member_stops_early_alone_and_keeps_its_best_weights():
    settings = _settings()
    stop = [{"type": "EarlyStopping", "monitor": "val_loss", "patience": 2, "min_delta": 10.0}]
    members, refs = _members(settings, [[], stop], seeds=(0,))
    histories = fit_population(members, epochs=8, batch_size=16, num_classes=10)
    assert histories[0].status == "completed" and histories[0].epochs_run == 8
    assert histories[1].status == "stopped_early" and histories[1].epochs_run == 3
    assert "did not improve" in histories[1].message
    for history, (spec, seed, data, train, val) in zip(histories, refs, strict=True):
        _assert_same(history, _alone(settings, spec, seed, data, train, val, epochs=8))


def test_population_diverged_member_is_isolated():
    settings = _settings()
    blow_up = [{"type": "L2", "strength": 1000.0}]  # with SGD at lr 0.1: w *= -99 per step
    kwargs = dict(epochs=EPOCHS, batch_size=16, num_classes=10, optimizer="sgd", lr=0.1)
    members, _ = _members(settings, [[], blow_up, [{"type": "L2", "strength": 0.01}]], (0,))
    histories = fit_population(members, **kwargs)
    assert histories[1].status == "diverged"
    assert histories[1].message == "objective became nan at epoch 2"
    assert histories[1].epochs_run == 1
    clean, _ = _members(settings, [[], [{"type": "L2", "strength": 0.01}]], (0,))
    alone = fit_population(clean, **kwargs)
    for mine, theirs in ((histories[0], alone[0]), (histories[2], alone[1])):
        assert mine.status == "completed"
        _assert_same(mine, theirs, tol=1e-6)


@pytest.mark.parametrize(
    "name, words",
    [
        ("swa", "SWA"),
        ("batch_norm", "buffers"),
        ("spectral_norm", "parametrization"),
        ("dropconnect", "randomness"),
    ],
)
def test_population_reason_names_what_cannot_be_batched(name, words):
    settings = _settings()
    data = dataset_for(settings, 0)
    model = model_for(settings, data, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reason = population_reason(model, build_recipe(BUILTIN_RECIPES[name][1]))
    assert reason is not None and words in reason
    assert model.state_dict().keys() == before.keys()  # the model was not transformed


def test_population_reason_accepts_the_batchable_families():
    settings = _settings()
    data = dataset_for(settings, 0)
    for name in FAMILIES:
        recipe = build_recipe(BUILTIN_RECIPES[name][1], (1, 8, 8))
        assert population_reason(model_for(settings, data, 0), recipe) is None


def test_population_trains_unbatchable_members_alone_with_fit():
    settings = _settings()
    members, refs = _members(settings, [[], BUILTIN_RECIPES["batch_norm"][1]], (0,))
    histories = fit_population(members, epochs=2, batch_size=16, num_classes=10)
    spec, seed, data, train, val = refs[1]
    _assert_same(histories[1], _alone(settings, spec, seed, data, train, val, epochs=2), 1e-6)


def test_split_kernels_keeps_the_chain_order():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    recipe = reglab.chain(reglab.MaxNorm(1.0), reglab.L1(0.1), reglab.WeightDecay(0.1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    recipe.attach(model, opt)
    stacked = {n: torch.nn.Parameter(p.detach().unsqueeze(0)) for n, p in model.named_parameters()}
    kernels = Kernels(stacked, 0.1)
    hooks = split_kernels(recipe, kernels, 0)
    # MaxNorm runs per member after the step, so L1 after it cannot be a kernel (kernels run
    # first); WeightDecay after a per-member hook stays a hook too
    assert [type(r).__name__ for r in hooks["on_after_step"]] == ["MaxNorm", "L1"]
    assert [type(r).__name__ for r in hooks["on_after_backward"]] == ["L1", "WeightDecay"]
    recipe = reglab.chain(reglab.WeightDecay(0.1), reglab.L2(0.1), reglab.ClipGradNorm(1.0))
    recipe.attach(model, opt)
    kernels = Kernels(stacked, 0.1)
    hooks = split_kernels(recipe, kernels, 0)
    assert [type(r).__name__ for r in hooks["on_after_backward"]] == ["ClipGradNorm"]
    assert kernels.tables["l2"]["0.weight"] == [pytest.approx(0.1)]
    assert kernels.tables["decay"]["2.weight"] == [pytest.approx(1 - 0.1 * 0.1)]


def test_kernels_apply_per_member_strengths_with_zero_as_off():
    w = torch.nn.Parameter(torch.tensor([[[0.5, -0.05]], [[0.5, -0.05]], [[0.5, -0.05]]]))
    w.grad = torch.zeros_like(w)
    kernels = Kernels({"w": w}, lr=1.0)
    kernels.tables["threshold"]["w"] = [0.0, 0.1, 0.0]
    kernels.tables["l2"]["w"] = [0.0, 0.0, 2.0]
    kernels.finish()
    kernels.after_backward()
    kernels.after_step()
    assert torch.allclose(w.grad[:, 0], torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, -0.1]]))
    # member 1 soft-thresholded by 0.1 (an exact zero), members 0 and 2 untouched
    assert torch.allclose(w.data[:, 0], torch.tensor([[0.5, -0.05], [0.4, 0.0], [0.5, -0.05]]))
    assert w.data[1, 0, 1] == 0.0


def test_fit_population_rejects_bad_arguments_in_one_line():
    settings = _settings()
    members, _ = _members(settings, [[]], (0,))
    with pytest.raises(reglab.ConfigError, match="'optimizer' parameter of fit_population"):
        fit_population(members, epochs=1, optimizer="lbfgs")
    with pytest.raises(reglab.ConfigError, match="'epochs' parameter of fit_population"):
        fit_population(members, epochs=0)


def test_population_history_round_trips_through_json():
    settings = _settings()
    members, _ = _members(settings, [BUILTIN_RECIPES["clip"][1]], (0,))
    (history,) = fit_population(members, epochs=2, batch_size=16, num_classes=10)
    assert json.loads(json.dumps(history.epochs)) == history.epochs
    assert "clip_fraction" in history.epochs[-1]
    assert history.acts_on == []


class _Doubled(torch.nn.Module):
    """A module the stacked route does not know: the population falls back to vmap."""

    def forward(self, x):
        return 2 * x


def _population(members, **changes):
    from reglab.lab.engine.batched import Population

    options = dict(lr=1e-3, task="classification", batch_size=16, num_classes=10)
    options.update(divergence_threshold=None, optimizer="adam", **changes)
    for m in members:
        m.recipe = reglab.chain() if m.recipe is None else m.recipe
        m.model = m.recipe.transform_model(m.model)
    return Population(members, **options)


def test_population_stacked_route_is_taken_for_mlps_and_vmap_for_other_models():
    settings = _settings(model="resmlp", widths=[32, 32])
    members, _ = _members(settings, [[], BUILTIN_RECIPES["dropout"][1]], (0,))
    population = _population(members)
    assert population.stacked is not None  # Linear, ReLU, Residual, dropout slots
    kinds = {type(m).__name__ for m in population.stacked.modules()}
    assert {"_StackedLinear", "_StackedSlot", "Residual"} <= kinds and "Linear" not in kinds
    settings = _settings(model="cnn", widths=[32, 32])
    members, _ = _members(settings, [[]], (0,))
    assert _population(members).stacked is None  # convolutions: vmap


def test_population_with_an_unknown_module_falls_back_to_vmap_and_matches_fit():
    train, val = _prepared(dataset_for(_settings(), 0))

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(64, 16), _Doubled(), torch.nn.ReLU(), torch.nn.Linear(16, 10)
        )

    assert _population([Member(model(), None, train, val, 0)]).stacked is None
    shared = torch.nn.Linear(64, 64)  # one layer used twice: its copy could not be swapped once
    twice = torch.nn.Sequential(shared, torch.nn.ReLU(), shared, torch.nn.Linear(64, 10))
    assert _population([Member(twice, None, train, val, 0)]).stacked is None
    _assert_each_matches_fit(model, [[], BUILTIN_RECIPES["dropout"][1]], train, val)


def test_population_drops_finished_members_rows_and_the_rest_still_match_fit():
    settings = _settings()
    stop = [{"type": "EarlyStopping", "monitor": "val_loss", "patience": 1, "min_delta": 10.0}]
    l1 = BUILTIN_RECIPES["l1"][1]
    # the stopping member sits between two kernel members: their runs are rebuilt
    members, refs = _members(settings, [l1, stop, [{"type": "L2", "strength": 0.03}]], (0,))
    population = _population(members)
    seen = []
    population.run(6, lambda epoch, alive: seen.append(len(population.P["0.weight"])), _noop)
    assert seen == [3, 2, 2, 2, 2, 2]  # the stopper left at epoch 2: its row is gone
    assert population.rows == [0, 2]
    histories = [population.histories[k] for k in range(3)]
    assert histories[1].status == "stopped_early" and histories[1].epochs_run == 2
    for history, (spec, seed, data, train, val) in zip(histories, refs, strict=True):
        _assert_same(history, _alone(settings, spec, seed, data, train, val, epochs=6))


def _noop(*args):
    return None


def test_kernels_finish_maps_rows_to_their_members():
    w = torch.nn.Parameter(torch.ones(2, 1, 2))
    w.grad = torch.zeros_like(w)
    kernels = Kernels({"w": w}, lr=1.0)
    kernels.size = 3
    kernels.tables["l2"]["w"] = [1.0, 0.0, 3.0]  # three members, member 1 has left
    kernels.finish(rows=[0, 2])
    kernels.after_backward()
    assert w.grad[:, 0].tolist() == [[1.0, 1.0], [3.0, 3.0]]


def test_tune_allocator_applies_on_glibc_linux():
    import platform
    import sys

    from reglab.lab.engine.workers import tune_allocator

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's: nothing to tune elsewhere")
    assert tune_allocator() is True


def test_population_draws_dropout_factors_bit_for_bit_as_each_members_own_layer():
    settings = _settings()
    plain = [[{"type": "Dropout", "p": p}] for p in (0.1, 0.3, 0.7)]
    specs = [[], *plain[:2], BUILTIN_RECIPES["gaussian_dropout"][1], plain[2]]
    members, _ = _members(settings, specs, (0,))
    population = _population(members)
    population._update_rows()
    # per slot: three plain dropout rows made factors in two runs (rows 1-2 and 4), the
    # Gaussian one by its layer
    plans = [
        (len(plan[0]), [r for r, _ in plan[1]], len(plan[2])) for plan in population.mask_plans
    ]
    assert plans == [(3, [slice(1, 3), slice(4, 5)], 1)] * 2
    copies = [torch.Generator().manual_seed(0) for _ in members]
    for copy, generator in zip(copies, population.generators, strict=True):
        copy.set_state(generator.get_state())
    for b in (16, 12, 16):  # one buffer per batch size, reused
        masks = population._masks(b)
        for j, name in enumerate(population.slot_names):
            ones = torch.ones(b, *population.slot_shapes[j])
            for i, k in enumerate(population.rows):
                layer = population.slot_layers[k][j]
                if layer is None:
                    expected = ones
                else:  # the member's own layer, from a copy of its generator
                    own, layer.generator = layer.generator, copies[k]
                    expected = layer(ones)
                    layer.generator = own
                assert torch.equal(masks[f"{name}.factor"][i], expected), (b, name, k)


class _ShiftLabels(reglab.Regularizer):
    """Changes the hard labels of every batch: class c becomes c + 1."""

    def on_batch(self, x, y):
        return x, (y + 1) % 10


def test_population_keeps_changed_hard_labels_beside_a_member_with_soft_targets():
    settings = _settings()
    data = dataset_for(settings, 0)
    train, val = _prepared(data)
    recipes = [BUILTIN_RECIPES["label_smoothing"][1], reglab.chain(_ShiftLabels())]
    _assert_each_matches_fit(lambda: model_for(settings, data, 0), recipes, train, val)


def test_population_rectifies_in_place_only_a_linear_layers_own_output():
    from reglab.structure import Residual

    train, val = _prepared(dataset_for(_settings(), 0))

    def model():
        torch.manual_seed(0)
        branch = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(32, 32))  # pre-activation
        return torch.nn.Sequential(
            torch.nn.Linear(64, 32),  # its outputs reach the branch's ReLU with their signs
            Residual(branch),
            torch.nn.Linear(32, 32),
            torch.nn.ReLU(),
            torch.nn.Linear(32, 10),
        )

    specs = [[], BUILTIN_RECIPES["dropout"][1]]
    stacked = _population([Member(model(), build_recipe(s), train, val, 0) for s in specs]).stacked
    # the branch's ReLU reads the residual's input, which the sum reads too: not in place
    relus = [m for m in stacked.modules() if type(m) is torch.nn.ReLU]
    assert [m.inplace for m in relus] == [False, True]
    assert not any(m.inplace for m in model().modules() if type(m) is torch.nn.ReLU)
    _assert_each_matches_fit(model, specs, train, val)


class _Narrow(reglab.Regularizer):
    """Drops the last input feature of every batch."""

    def on_batch(self, x, y):
        return x[:, :-1], y


def test_population_rejects_an_on_batch_hook_that_changes_the_inputs_shape_in_one_line():
    settings = _settings()
    data = dataset_for(settings, 0)
    train, val = _prepared(data)
    members = [Member(model_for(settings, data, 0), reglab.chain(_Narrow()), train, val, 0)]
    with pytest.raises(
        reglab.ConfigError, match=r"changed the inputs' shape from \(16, 64\) to \(16, 63\)"
    ) as info:
        fit_population(members, epochs=1, batch_size=16, num_classes=10)
    assert "\n" not in str(info.value)


class _Clamp(reglab.Regularizer):
    """A user's regularizer that keeps the Parameters it acts on (not detached aliases)."""

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None):
        self.params = [p for p in model.parameters() if p.ndim == 2]

    @torch.no_grad()
    def on_after_step(self):
        for p in self.params:
            p.clamp_(-0.2, 0.2)


@pytest.mark.parametrize(
    "make",
    [
        lambda: reglab.chain(reglab.EMA(0.95, warmup=False)),
        lambda: reglab.chain(reglab.EMA(0.9)),
        lambda: reglab.chain(reglab.EarlyStopping("val_loss", patience=50)),
        lambda: reglab.chain(_Clamp()),
    ],
    ids=["ema", "ema_warmup", "early_stopping_best_weights", "user_regularizer"],
)
def test_a_member_that_keeps_its_parameters_follows_them_when_a_neighbour_leaves(make):
    """A neighbour that stops at epoch 2 makes the population move every member's parameters
    to new memory; EMA kept detached aliases of the old memory and averaged stale weights
    from then on (final test loss 0.066 off its own fit in the issue's study)."""
    settings = _settings()
    data = dataset_for(settings, 0)
    train, val = _prepared(data)
    leaver = reglab.chain(reglab.EarlyStopping("val_loss", patience=0, min_delta=10.0))
    members = [
        Member(model_for(settings, data, 0), leaver, train, val, 0),
        Member(model_for(settings, data, 0), make(), train, val, 0),
        Member(model_for(settings, data, 0), reglab.chain(), train, val, 0),
    ]
    epochs = 6
    histories = fit_population(members, epochs=epochs, batch_size=16, num_classes=data.num_classes)
    assert histories[0].epochs_run == 2 and histories[1].epochs_run == epochs
    alone = reglab.fit(
        model_for(settings, data, 0), train, val, recipe=make(), epochs=epochs,
        batch_size=16, seed=0, num_classes=data.num_classes,
    )  # fmt: skip
    _assert_same(histories[1], alone)
