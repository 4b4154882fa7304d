"""What a population's checkpoint holds and how it is put back: the stacked parameters, the
optimizer, which members are alive and computed, the data-order generators, and per member its
recipe's state, its generator, its history and (once it has left) its own final parameters.
``pop`` is a :class:`reglab.lab.engine.batched.Population` (not imported: it imports this).
"""

from __future__ import annotations

from typing import Any

import torch

from ...checkpoint import generator_states, set_generator_states

__all__ = ["population_state", "restore_population"]


def population_state(pop: Any, epoch: int) -> dict[str, Any]:
    """Everything the coming epochs depend on, after ``epoch``: the stacked parameters, the
    optimizer, which members are alive and computed, the data-order generators, and per
    member its recipe's state, its generator, its history and (once it has left) its own
    final parameters."""
    histories = getattr(pop, "histories", {})
    members = []
    for k, m in enumerate(pop.members):
        h = histories.get(k)
        entry = {
            "recipe": m.recipe.state_dict(),
            "generator": pop.generators[k].get_state(),
            "history": [] if h is None else h.epochs,
            "status": "completed" if h is None else h.status,
            "message": "" if h is None else h.message,
            "seconds": 0.0 if h is None else h.seconds,
        }
        if k not in pop.alive:
            entry["params"] = m.model.state_dict()
        members.append(entry)
    return {
        "epoch": epoch,
        "names": list(pop.names),
        "P": {n: p.detach() for n, p in pop.P.items()},
        "optimizer": pop.opt.state_dict(),
        "alive": list(pop.alive),
        "rows": list(pop.rows),
        "order": generator_states(list(pop.order_gens.values())),
        "members": members,
    }


def restore_population(pop: Any, saved: dict[str, Any]) -> None:
    """Load a :meth:`state`. Everything is checked, and each member's own state loaded,
    before the stacked parameters are cut down to the saved rows and filled."""
    if saved["names"] != pop.names or len(saved["members"]) != len(pop.members):
        raise ValueError("another population (members or parameter names differ)")
    rows, alive = [int(k) for k in saved["rows"]], [int(k) for k in saved["alive"]]
    if not set(alive) <= set(rows) <= set(pop.rows):
        raise ValueError(f"its rows {rows} are not among this population's {pop.rows}")
    for n in pop.names:
        want = (len(rows), *pop.P[n].shape[1:])
        if tuple(saved["P"][n].shape) != want:
            raise ValueError(f"{n} has shape {tuple(saved['P'][n].shape)}, not {want}")
    for k, entry in enumerate(saved["members"]):
        m, history = pop.members[k], pop._history(k)
        pop.generators[k].set_state(entry["generator"])
        history.epochs[:] = [dict(r) for r in entry["history"]]
        history.status, history.message = entry["status"], entry["message"]
        history.seconds = float(entry.get("seconds", 0.0))
        if k not in alive:  # it had left: its own memory, its final parameters
            for p in m.model.parameters():
                p.data = p.data.clone(memory_format=torch.contiguous_format)
                p.grad = None
            m.model.load_state_dict(entry["params"])
        m.recipe.load_state_dict(entry["recipe"])
    set_generator_states(list(pop.order_gens.values()), saved["order"])
    pop._compact(rows)
    with torch.no_grad():
        for n in pop.names:
            pop.P[n].copy_(saved["P"][n])
    pop.opt.load_state_dict(saved["optimizer"])
    pop.alive = alive
    pop._compact()  # a checkpoint written before rows followed alive members
    for k in pop.rows:  # every member still in the rows trains through them again (a
        for n in pop.names:  # restore that failed half-way may have cut some loose)
            pop.members[k].model.get_parameter(n).data = pop._row(n, k)
