"""Experiment arms: who gets which arm of an experiment of the catalogue.

The experiments module (``streamproc.decisions.experiments``, built on the bandit branch)
owns assignment and the checks of an experiment; this module finds it and, where this branch
predates it, falls back on the same contract (an arm from ``blake2b(experiment id + customer
id)``; ``"control"`` for the control group) so the engine runs and is testable either way.

>>> exp = {"id": "e1", "slots": ["hero"], "control_share": 0.1,
...        "arms": [{"id": "a", "policy": "bandit", "share": 1.0}]}
>>> assigner()("cust-1", exp) == assigner()("cust-1", exp), check_experiment(exp)
(True, [])
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from typing import Any

Assign = Callable[[str, dict[str, Any]], str]
CONTROL = "control"
DEFAULT_CONTROL_SHARE = 0.1


def _position(customer_id: str, experiment: dict[str, Any]) -> float:
    digest = hashlib.blake2b(f"{experiment['id']}\x00{customer_id}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def hash_assign(customer_id: str, experiment: dict[str, Any]) -> str:
    """Control below ``control_share``; then each arm in turn for its share of the rest."""
    x = _position(customer_id, experiment)
    control = float(experiment.get("control_share", DEFAULT_CONTROL_SHARE))
    if x < control:
        return CONTROL
    rest = (x - control) / (1.0 - control)
    edge = 0.0
    for arm in experiment["arms"]:
        edge += float(arm["share"])
        if rest < edge:
            return str(arm["id"])
    return str(experiment["arms"][-1]["id"])


def share_problems(experiment: dict[str, Any]) -> list[str]:
    """What the fallback checks beyond the schema: shares add up to 1, arm ids are unique and
    none is called control."""
    problems = []
    total = sum(float(a["share"]) for a in experiment["arms"])
    if abs(total - 1.0) > 1e-6:
        problems.append(f"arm shares add up to {total:g}, not 1")
    ids = [a["id"] for a in experiment["arms"]]
    if len(set(ids)) != len(ids):
        problems.append("two arms have the same id")
    if CONTROL in ids:
        problems.append(f"{CONTROL!r} is the control group's arm; give the arm another id")
    return problems


def _experiments() -> Any:
    try:
        return importlib.import_module("streamproc.decisions.experiments")
    except ModuleNotFoundError:
        return None


def assigner() -> Assign:
    module = _experiments()
    found: Assign = hash_assign if module is None else module.assign
    return found


def check_experiment(experiment: dict[str, Any]) -> list[str]:
    module = _experiments()
    found: list[str] = (share_problems(experiment) if module is None
                        else module.validate_experiment(experiment))
    return found
