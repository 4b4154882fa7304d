"""Every public name is documented."""

import inspect

import pytest

import reglab
import reglab.lab

PUBLIC = [(mod, name) for mod in (reglab, reglab.lab) for name in mod.__all__]


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[f"{m.__name__}.{n}" for m, n in PUBLIC])
def test_public_name_has_a_docstring(module, name):
    obj = getattr(module, name)
    if callable(obj):
        assert len(inspect.getdoc(obj) or "") >= 20, f"{module.__name__}.{name} is undocumented"


def test_every_regularizer_docstring_states_its_formula_or_behaviour_and_an_example():
    for name, cls in reglab.Regularizer.registry.items():
        if not cls.__module__.startswith("reglab.") or name == "Chain":
            continue
        doc = inspect.getdoc(cls)
        assert "Examples:" in doc and "Args:" in doc and "Raises:" in doc, name
