"""Experiments: deterministic arm assignment, a control group, and the checks of an experiment.

An experiment is a plain dict from the catalogue file's ``experiments`` list::

    {"id": "nba-2026-03", "slots": ["cart_drawer", "email"], "control_share": 0.1,
     "arms": [{"id": "bandit", "policy": "bandit", "share": 0.5},
              {"id": "random", "policy": "uniform", "share": 0.5}]}

A customer's arm is a pure function of the experiment id and the customer id: the first 8 bytes
of ``blake2b(experiment id + NUL + customer id)`` read as a number ``u`` in [0, 1). ``u`` below
``control_share`` is the control group (``"control"``, which gets the slot's neutral action);
the rest of [0, 1) is cut in the arms' shares, in order. So an assignment never changes when
other customers come or go, the same customer can land in different arms of different
experiments, and anyone can recompute it.

>>> exp = {"id": "nba-1", "slots": ["cart_drawer"],
...        "arms": [{"id": "bandit", "policy": "bandit", "share": 0.5},
...                 {"id": "random", "policy": "uniform", "share": 0.5}]}
>>> validate_experiment(exp)
[]
>>> assign("cust-42", exp), assign("cust-42", exp) == assign("cust-42", exp)
('random', True)
>>> for problem in validate_experiment(
...         {"id": "x", "slots": [], "arms": [{"id": "a", "policy": "greedy"}]}):
...     print(problem)
experiment x: slots must be a non-empty list of slot or channel names
experiment x: arm a: policy must be one of bandit, contextual, neutral, uniform, got 'greedy'
experiment x: arm a: share must be a number in (0, 1]
experiment x: arm shares must add up to 1 (over the non-control part), got 0
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

CONTROL = "control"
DEFAULT_CONTROL_SHARE = 0.1
POLICIES = ("bandit", "contextual", "neutral", "uniform")
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_SHARE_TOLERANCE = 1e-6


def bucket(customer_id: str, experiment_id: str) -> float:
    """The customer's deterministic position in [0, 1) for an experiment."""
    material = experiment_id.encode() + b"\x00" + customer_id.encode()
    digest = hashlib.blake2b(material, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def control_share(experiment: dict[str, Any]) -> float:
    share = experiment.get("control_share", DEFAULT_CONTROL_SHARE)
    return float(share)


def assign(customer_id: str, experiment: dict[str, Any]) -> str:
    """The arm id for a customer (``"control"`` for the control group), deterministic from
    blake2b(experiment id + customer id); stable when other customers come and go."""
    u = bucket(customer_id, str(experiment["id"]))
    control = control_share(experiment)
    if u < control:
        return CONTROL
    arms = experiment["arms"]
    # Position within the treated part, then the arms' cumulative shares.
    v = (u - control) / (1.0 - control)
    total = math.fsum(float(arm["share"]) for arm in arms)
    cumulative = 0.0
    for arm in arms:
        cumulative += float(arm["share"]) / total
        if v < cumulative:
            return str(arm["id"])
    return str(arms[-1]["id"])


def arm_policy(experiment: dict[str, Any], arm_id: str) -> str:
    """The policy of an arm: ``neutral`` for the control group."""
    if arm_id == CONTROL:
        return "neutral"
    for arm in experiment["arms"]:
        if arm["id"] == arm_id:
            return str(arm["policy"])
    raise KeyError(f"experiment {experiment['id']} has no arm {arm_id!r}")


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def validate_experiment(experiment: dict[str, Any]) -> list[str]:
    """Every problem of an experiment, each saying where it is; empty when it is valid."""
    if not isinstance(experiment, dict):
        return [f"an experiment must be a mapping, got {type(experiment).__name__}"]
    exp_id = experiment.get("id")
    where = f"experiment {exp_id}" if isinstance(exp_id, str) else "experiment"
    problems: list[str] = []
    if not isinstance(exp_id, str) or not _ID.match(exp_id):
        problems.append(f"{where}: id must be 1 to 64 of A-Z a-z 0-9 . _ : -, got {exp_id!r}")
    known = {"id", "slots", "control_share", "arms", "description"}
    for extra in sorted(set(experiment) - known):
        problems.append(f"{where}: unknown field {extra!r} (known: {', '.join(sorted(known))})")
    slots = experiment.get("slots")
    if (not isinstance(slots, list) or not slots
            or not all(isinstance(s, str) and s for s in slots)):
        problems.append(f"{where}: slots must be a non-empty list of slot or channel names")
    share = experiment.get("control_share", DEFAULT_CONTROL_SHARE)
    if not _is_number(share) or not 0.0 <= share < 1.0:
        problems.append(f"{where}: control_share must be a number from 0 to below 1, "
                        f"got {share!r}")
    arms = experiment.get("arms")
    if not isinstance(arms, list) or not arms:
        problems.append(f"{where}: arms must be a non-empty list of "
                        "{id, policy, share} mappings")
        return problems
    seen: set[str] = set()
    total = 0.0
    for i, arm in enumerate(arms):
        if not isinstance(arm, dict):
            problems.append(f"{where}: arm #{i + 1} must be a mapping")
            continue
        arm_id = arm.get("id")
        label = f"{where}: arm {arm_id}" if isinstance(arm_id, str) else f"{where}: arm #{i + 1}"
        if not isinstance(arm_id, str) or not _ID.match(arm_id):
            problems.append(f"{label}: id must be 1 to 64 of A-Z a-z 0-9 . _ : -")
        elif arm_id == CONTROL:
            problems.append(f"{label}: the id {CONTROL!r} is reserved for the control group "
                            "(set control_share instead)")
        elif arm_id in seen:
            problems.append(f"{label}: duplicate arm id")
        else:
            seen.add(arm_id)
        for extra in sorted(set(arm) - {"id", "policy", "share", "description"}):
            problems.append(f"{label}: unknown field {extra!r}")
        if arm.get("policy") not in POLICIES:
            problems.append(f"{label}: policy must be one of {', '.join(POLICIES)}, "
                            f"got {arm.get('policy')!r}")
        arm_share: Any = arm.get("share")
        if not _is_number(arm_share) or not 0.0 < arm_share <= 1.0:
            problems.append(f"{label}: share must be a number in (0, 1]")
        else:
            total += float(arm_share)
    if abs(total - 1.0) > _SHARE_TOLERANCE:
        problems.append(f"{where}: arm shares must add up to 1 (over the non-control part), "
                        f"got {total:g}")
    return problems
