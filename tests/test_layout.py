"""The package's shape (issue 27): no import circle, and the lab on the library's public names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import reglab

SRC = Path(__file__).parents[1] / "src"


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``src`` that ``name`` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join([*base, node.module] if node.module else base)
            if not node.level:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in modules else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != name}


def test_no_module_of_reglab_imports_one_that_imports_it_back():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            here = todo.pop()
            if here == goal:
                return True
            if here not in seen:
                seen.add(here)
                todo.extend(graph[here])
        return False

    circles = sorted(
        (a, b) for a in graph for b in graph[a] if a < b and reaches(b, a)
    )  # a pair in a cycle through an import edge, named once
    assert not circles, circles


def test_the_lab_uses_no_private_name_of_the_library():
    private = []
    for path in (SRC / "reglab" / "lab").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                leaves_lab = node.level > len(path.relative_to(SRC / "reglab").parts) - 1
                names = [a.name for a in node.names if a.name.startswith("_")]
                if leaves_lab and names and names != ["__version__"]:
                    private.append(f"{path.name}:{node.lineno} {names}")
    assert not private, private


def test_elementwise_terms_describe_plain_number_penalties_after_attach():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    l1 = reglab.L1(0.01)
    net = reglab.ElasticNet(0.2, 0.25, method="subgradient")
    decay = reglab.WeightDecay(0.5)
    for reg in (l1, net, decay):
        reg.attach(model, opt)
    f32 = lambda v: float(torch.tensor(v))  # the strengths act in the parameters' dtype
    terms = reglab.ElementwiseTerms
    assert l1.elementwise_terms() == terms(("0.weight",), l1=f32(0.01), proximal=True)
    assert net.elementwise_terms() == terms(("0.weight",), l2=f32(0.15), l1=f32(0.05))
    assert decay.elementwise_terms() == terms(("0.weight",), decay=0.5)
    per_member = reglab.L2(torch.tensor([0.1, 0.2]).view(2, 1, 1))
    assert (
        per_member.elementwise_terms() is None and reglab.MaxNorm(1.0).elementwise_terms() is None
    )


def test_implements_and_members_with_say_which_hooks_a_recipe_uses():
    recipe = reglab.chain(reglab.L2(1e-4), reglab.Mixup(0.2), reglab.ClipGradNorm(1.0))
    assert [type(r).__name__ for r in recipe.members_with("on_after_backward")] == [
        "L2",
        "ClipGradNorm",
    ]
    assert recipe.implements("on_batch") and not recipe.implements("on_loss")
    assert reglab.L2(1e-4).implements("on_after_backward")
    assert not reglab.L2(1e-4).implements("on_batch")


@pytest.mark.parametrize("keep", [0.5, 0.8])
def test_dropout_factors_are_the_dropout_of_ones(keep):
    g = torch.Generator().manual_seed(3)
    u = torch.rand(1000, generator=g)
    expected = (u < keep).float() / keep
    assert torch.equal(reglab.dropout_factors_(u.clone(), keep), expected)
    drawn = reglab.dropout(torch.ones(1000), 1 - keep, generator=torch.Generator().manual_seed(3))
    assert torch.equal(drawn, expected)


def test_trial_settings_are_one_read_only_hashable_form_with_the_keys_of_before():
    """The settings travel as one TrialSettings from plan to worker (no JSON pairs decoded
    back into a dict); a trial's key hashes the same pairs as before, so finished trials of
    earlier runs are still reused."""
    import hashlib
    import json
    import pickle

    from reglab import __version__
    from reglab.lab.studies.config import StudyConfig
    from reglab.lab.studies.keys import Trial, TrialSettings
    from reglab.lab.studies.seams import trial_settings

    settings = trial_settings(StudyConfig(data="wine"), "classification")
    assert isinstance(settings, TrialSettings) and settings["data"] == "wine"
    assert settings == TrialSettings(dict(settings)) and hash(settings) == hash(
        TrialSettings(dict(settings))
    )
    assert pickle.loads(pickle.dumps(settings)) == settings
    with pytest.raises(TypeError):
        settings["epochs"] = 3  # type: ignore[index]
    trial = Trial("l2", ("[]",), 1, settings)
    pairs = sorted((k, json.dumps(v)) for k, v in settings.items() if k != "num_workers")
    payload = json.dumps(["l2", ["[]"], 1, [list(p) for p in pairs], __version__])
    assert trial.key == hashlib.sha256(payload.encode()).hexdigest()[:16]
