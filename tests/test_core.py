import inspect

import pytest
import torch
from torch import nn

import reglab
from reglab.core import Chain, Interval, Regularizer, check_param


def test_config_error_message_shape():
    with pytest.raises(reglab.ConfigError) as info:
        reglab.Dropout(1.5)
    assert str(info.value) == "The 'p' parameter of Dropout must be a float in [0, 1). Got 1.5."
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [True, float("nan"), "0.1", None, -1])
def test_interval_rejects_non_numbers_and_out_of_range(value):
    with pytest.raises(reglab.ConfigError, match="'x' parameter of T must be a float >= 0"):
        check_param("T", "x", value, Interval(float, 0, None))


def test_interval_accepts_tensors_when_every_element_is_in_range():
    check_param("T", "x", torch.tensor([0.0, 0.5]), Interval(float, 0, 1, "left"))
    with pytest.raises(reglab.ConfigError, match=r"tensor\(\[0.0, 1.0\]\)"):
        check_param("T", "x", torch.tensor([0.0, 1.0]), Interval(float, 0, 1, "left"))


def _concrete_regularizers():
    return {
        name: cls
        for name, cls in Regularizer.registry.items()
        if name != "Chain" and cls.__module__.startswith("reglab.")
    }


def test_every_constructor_argument_has_a_constraint():
    assert len(_concrete_regularizers()) >= 8
    for name, cls in _concrete_regularizers().items():
        args = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        missing = set(args) - set(cls.constraints)
        assert not missing, f"{name} lacks constraints for {missing}"


EXAMPLES = [
    reglab.L1(0.01, method="subgradient", params="*.weight"),
    reglab.L2(0.5, convention="keras", params=["0.weight", "!2.*"]),
    reglab.WeightDecay(0.1),
    reglab.ElasticNet(0.1, 0.3, method="subgradient", params="all"),
    reglab.GroupLasso(0.02),
    reglab.MaxNorm(2.5, params="0.weight"),
    reglab.Dropout(0.25, layers="1"),
    reglab.GaussianNoise(0.2, relative=True),
    reglab.FeatureDropout(0.1),
    reglab.ImageAugment(crop_padding=2, hflip=0.5, degrees=5.0, erase=0.2, image_shape=[3, 8, 8]),
    reglab.Cutout(4, image_shape=[1, 8, 8]),
    reglab.Mixup(0.2, per_sample=True),
    reglab.CutMix(1.0, num_classes=10),
    reglab.LabelSmoothing(0.1, num_classes=3),
    reglab.ClipGradNorm(2.0, norm_type=1.0),
    reglab.EarlyStopping("val_accuracy", patience=3, min_delta=0.01, restore_best=False),
    reglab.GaussianDropout(0.3, layers=["1", "3"]),
    reglab.AlphaDropout(0.05),
    reglab.ChannelDropout(0.1, layers="features.*"),
    reglab.DropBlock(0.1, block_size=5),
    reglab.DropConnect(0.5),
    reglab.DropPath(0.2, layers="blocks.*.mlp"),
    reglab.InsertNorm("layer", layers="0"),
    reglab.ReplaceNorm("batch"),
    reglab.WeightNorm(),
    reglab.SpectralNorm(2, layers=["0", "2"]),
    reglab.ConfidencePenalty(0.5),
    reglab.ClipGradValue(0.5, params="0.*"),
    reglab.AdaptiveClip(0.02, eps=1e-4),
    reglab.EMA(0.99, warmup=False),
    reglab.SWA(start=10, lr=1e-3, bn_samples=512),
]


@pytest.mark.parametrize("reg", EXAMPLES, ids=lambda r: type(r).__name__)
def test_get_config_round_trips(reg):
    config = reg.get_config()
    rebuilt = type(reg).from_config(config)
    assert rebuilt.get_config() == config
    assert reglab.from_config(reglab.to_config(reg)).get_config() == config


def test_every_regularizer_has_an_example():
    assert {type(r).__name__ for r in EXAMPLES} == set(_concrete_regularizers())


def test_get_config_keeps_what_the_user_passed():
    strength = torch.tensor([0.1, 0.2])
    reg = reglab.L2(strength)
    assert reg.get_config()["strength"] is strength


def test_from_config_unknown_type_lists_known_ones():
    with pytest.raises(reglab.ConfigError, match="'L2'.*Got 'L3'"):
        reglab.from_config({"type": "L3", "strength": 1.0})


def test_unexpected_argument_is_a_config_error():
    with pytest.raises(reglab.ConfigError, match="L2: .*unexpected keyword argument 'alpha'"):
        reglab.L2(0.1, alpha=0.1)


def test_select_params_default_takes_weights_not_biases_or_norms():
    model = nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 2)
    )
    sel = reglab.select_params(model)
    assert sel.names == ("0.weight", "2.weight", "4.weight")
    assert sel.numel == 32 + 64 + 16
    assert sel.describe() == "3 tensors, 112 elements"


def test_select_params_patterns_exclusions_and_predicates():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert reglab.select_params(model, "all").names == ("0.weight", "0.bias", "2.weight", "2.bias")
    assert reglab.select_params(model, ["*", "!*.bias", "!0.*"]).names == ("2.weight",)
    assert reglab.select_params(model, lambda n, p: p.ndim == 1).names == ("0.bias", "2.bias")


def test_select_params_matching_nothing_names_the_parameters():
    model = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(
        reglab.ConfigError,
        match=r"'params' parameter of L1 matched no .*"
        r"0\.weight, 0\.bias",
    ):
        reglab.select_params(model, "encoder.*", owner="L1")


def test_param_groups_decay_only_the_default_selection():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    groups = reglab.param_groups(model, weight_decay=0.1)
    assert [len(g["params"]) for g in groups] == [2, 4]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(groups, lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = list(model.parameters())
    assert torch.allclose(after[0], before[0] * (1 - 0.1 * 0.1))  # weight decayed
    assert torch.equal(after[1], before[1])  # bias untouched


def test_chain_rejects_non_regularizers():
    with pytest.raises(reglab.ConfigError, match="at position 1"):
        reglab.chain(reglab.L2(0.1), 3)


class Recorder(Regularizer):
    """Logs every hook call, and what the parameters and gradients look like at each."""

    def __init__(self, log: list | None = None, name: str = "r") -> None:
        self.log = log if log is not None else []
        self.name = name

    def transform_model(self, model):
        self.log.append((self.name, "transform_model"))
        return model

    def attach(self, model, optimizer=None, *, num_classes=None, generator=None):
        self.model = model
        self.log.append((self.name, "attach", num_classes))

    def on_batch(self, x, y):
        self.log.append((self.name, "on_batch"))
        return x, y

    def on_loss(self, loss, output):
        self.log.append((self.name, "on_loss"))
        return loss

    def on_after_backward(self):
        grads = all(p.grad is not None for p in self.model.parameters())
        self.log.append((self.name, "on_after_backward", grads))

    def on_after_step(self):
        self.log.append((self.name, "on_after_step"))

    def on_epoch_end(self, metrics):
        self.log.append((self.name, "on_epoch_end", metrics["epoch"]))
        return False

    def on_fit_end(self):
        self.log.append((self.name, "on_fit_end"))


Recorder.constraints = {
    "log": reglab.core.Predicate(lambda v: True, "a list"),
    "name": reglab.core.Predicate(lambda v: True, "a name"),
}


def test_fit_calls_hooks_in_design_order_and_chain_in_member_order(mlp, toy_data):
    log: list = []
    recipe = reglab.chain(Recorder(log, "a"), Recorder(log, "b"))
    train, val = toy_data
    reglab.fit(mlp, train, val, recipe=recipe, epochs=2, batch_size=40)
    steps = ["on_batch", "on_loss", "on_after_backward", "on_after_step"]
    expected = [
        ("a", "transform_model"),
        ("b", "transform_model"),
        ("a", "attach", 3),
        ("b", "attach", 3),
    ]
    for epoch in (1, 2):
        for _ in range(2):  # 80 samples, batch 40
            for hook in steps:
                for who in ("a", "b"):
                    expected.append(
                        (who, hook, True) if hook == "on_after_backward" else (who, hook)
                    )
        expected += [("a", "on_epoch_end", epoch), ("b", "on_epoch_end", epoch)]
    expected += [("a", "on_fit_end"), ("b", "on_fit_end")]
    assert log == expected


def test_chain_equals_applying_members_by_hand(toy_data):
    (x, y), _ = toy_data

    def make():
        torch.manual_seed(1)
        return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))

    members = lambda: [reglab.L2(0.05), reglab.L1(0.01), reglab.ClipGradNorm(0.5)]
    results = []
    for use_chain in (True, False):
        model = make()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        regs = members()
        rec: Regularizer = reglab.chain(*regs) if use_chain else None
        parts = [rec] if use_chain else regs
        for r in parts:
            r.attach(model, opt)
        for _ in range(5):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            for r in parts:
                r.on_after_backward()
            opt.step()
            for r in parts:
                r.on_after_step()
        results.append([p.detach().clone() for p in model.parameters()])
        if use_chain:
            assert rec.penalty() == pytest.approx(sum(r.penalty() for r in regs))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_chain_stops_if_any_member_asks_and_asks_every_member():
    class Stop(Regularizer):
        def __init__(self, answer: bool) -> None:
            self.answer, self.calls = answer, 0

        def on_epoch_end(self, metrics):
            self.calls += 1
            return self.answer

    Stop.constraints = {"answer": reglab.core.Predicate(lambda v: True, "a bool")}
    first, second = Stop(True), Stop(False)
    assert reglab.chain(first, second).on_epoch_end({"epoch": 1}) is True
    assert (first.calls, second.calls) == (1, 1)
    assert reglab.chain(Stop(False)).on_epoch_end({"epoch": 1}) is False


def test_chain_config_nests():
    recipe = reglab.chain(reglab.L2(0.1), reglab.chain(reglab.Dropout(0.2)))
    rebuilt = Chain.from_config(recipe.get_config())
    assert rebuilt.get_config() == recipe.get_config()
    assert repr(rebuilt).startswith("chain(L2(strength=0.1")


def test_a_user_class_never_replaces_a_builtin_in_the_registry():
    class L2(Regularizer):  # same name as reglab.L2
        pass

    assert Regularizer.registry["L2"] is reglab.L2
    assert type(reglab.from_config({"type": "L2", "strength": 0.1})) is reglab.L2


def _unattached_calls():
    from reglab.lab.inputs.recipes import BUILTIN_RECIPES

    x, y = torch.randn(4, 64), torch.tensor([0, 1, 2, 3])
    hooks = (
        ("on_batch", (x, y)),
        ("on_loss", (torch.tensor(1.0), torch.randn(4, 10))),
        ("on_after_backward", ()),
        ("on_after_step", ()),
        ("on_epoch_end", ({"epoch": 1, "val_loss": 1.0},)),
        ("on_fit_end", ()),
        ("penalty", ()),
        ("logs", ()),
    )
    for name, (_, spec) in BUILTIN_RECIPES.items():
        for item in spec:
            item = dict(item)
            if item["type"] in ("ImageAugment", "Cutout", "CutMix"):
                item["image_shape"] = [1, 8, 8]
            if item["type"] in ("Mixup", "CutMix", "LabelSmoothing"):
                item["num_classes"] = 10
            for hook, args in hooks:
                yield f"{name}-{item['type']}-{hook}", item, hook, args


@pytest.mark.parametrize(
    ("item", "hook", "args"),
    [c[1:] for c in _unattached_calls()],
    ids=[c[0] for c in _unattached_calls()],
)
def test_every_builtin_hook_before_attach_works_or_says_to_attach(item, hook, args):
    from reglab.serialize import recipe_from_specs

    reg = recipe_from_specs([item]).regularizers[0]
    try:
        getattr(reg, hook)(*args)
    except reglab.ConfigError as exc:  # never an AttributeError or TypeError of our internals
        assert "attach" in str(exc) and "\n" not in str(exc)


def test_mixup_in_a_plain_loop_without_attach():
    x, y = torch.randn(8, 5), torch.arange(8) % 4
    _, soft = reglab.Mixup(0.4, num_classes=4).on_batch(x, y)
    assert soft.shape == (8, 4) and torch.allclose(soft.sum(1), torch.ones(8))
    with pytest.raises(reglab.ConfigError, match="'num_classes' parameter of Mixup"):
        reglab.Mixup(0.4).on_batch(x, y)


def test_hasattr_still_works_on_unattached_regularizers():
    from reglab.core import NotAttachedError

    reg = reglab.L2(0.1)
    with pytest.raises(NotAttachedError, match="call recipe.attach"):
        reg.penalty()
    assert not hasattr(reg, "selection")
    assert getattr(reg, "stop_reason", None) is None
    reg.attach(torch.nn.Linear(2, 2))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        reg.nothing  # noqa: B018


def test_reglab_loads_its_names_on_first_use_and_keeps_them_whole():
    import subprocess
    import sys

    code = """
import sys
import reglab, reglab.cli
print("torch" in sys.modules)  # nothing heavy yet: the command starts its workers first
import reglab.drop  # the dropout family's module (timm's name): it shares no public name
from reglab.core import Regularizer, from_config
print("L2" in Regularizer.registry, type(from_config({"type": "L1", "strength": 0.1})).__name__)
print(reglab.dropout is sys.modules["reglab.drop"].dropout, callable(reglab.dropout))
print("torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True", "L1", "True", "True", "True"]
