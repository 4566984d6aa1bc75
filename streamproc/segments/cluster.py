"""Behaviour cluster from the learner's online k-means (``profile["cluster"]``).

The scoring workers assign the customer to the nearest behaviour cluster of the served model
(:mod:`streamproc.models.clusters`, learnt by the learner from the behaviour vectors of session
starts) at the start of each session, and keep ``{"id": 3, "about": "shoes & sports, mobile,
frequent"}``. The segment is the stable cluster id (``"0"`` to ``"k-1"``: an id keeps its
meaning across refits and snapshots), the reason its readable description.

A customer not assigned yet (no session since the model was ready) has no cluster segment.

>>> assign_cluster({"cluster": {"id": 3, "about": "shoes & sports, mobile"}})
Assignment(segment='3', reason='behaviour cluster 3: shoes & sports, mobile')
>>> assign_cluster({}) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamproc.segments.assignment import Assignment


def assign_cluster(profile: Mapping[str, Any]) -> Assignment | None:
    found = profile.get("cluster")
    if not found:
        return None
    return Assignment(str(found["id"]), f"behaviour cluster {found['id']}: {found['about']}")
