"""Assign every segmentation to one customer, and list what changed.

The segmentations (keys of :func:`assign_all`'s result): ``rfm``, ``value_tier``, ``lifecycle``,
``journey``, ``age_band``, ``gender``, ``country``, ``intent`` (only once the customer has an
intent score) and one ``custom.<rule name>`` per custom rule,
whose segment is ``member`` or ``not_member``. Custom rules see the built-in segments just
assigned under ``segments.`` (``segments.rfm`` is this event's RFM segment), and custom segments
as they were before this event.

>>> from streamproc.segments.config import SegmentConfig
>>> new = assign_all({"customer_id": "c1"}, 0, None, None, SegmentConfig())
>>> new["rfm"], new["journey"].segment
(Assignment(segment='prospect', reason='no purchase yet'), 'anonymous_visitor')
>>> [t[:3] for t in changed({"rfm": "prospect", "journey": "engaged_browser"}, new)][:2]
[('value_tier', None, 'unprofitable'), ('lifecycle', None, 'new')]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamproc.segments.assignment import Assignment, Transition
from streamproc.segments.builtin import CUSTOM_PREFIX, MEMBER, NOT_MEMBER
from streamproc.segments.cluster import assign_cluster
from streamproc.segments.config import SegmentConfig
from streamproc.segments.demographic import assign_demographics
from streamproc.segments.intent_tier import assign_intent
from streamproc.segments.journey import assign_journey
from streamproc.segments.lifecycle import assign_lifecycle
from streamproc.segments.quantiles import DEFAULT_CUTS, Cuts
from streamproc.segments.rfm import assign_rfm
from streamproc.segments.rules import RuleSet
from streamproc.segments.tiers import assign_value_tier
from streamproc.state.profile import Profile


def assign_all(
    profile: Profile,
    now_ms: int,
    rfm_cuts: Mapping[str, Cuts] | None,
    rules: RuleSet | None,
    config: SegmentConfig,
) -> dict[str, Assignment]:
    """Every segment of the customer at event time ``now_ms``.

    ``rfm_cuts`` are the base's cuts by dimension (:func:`~.quantiles.cuts_from_histograms`);
    None, or a dimension left out, uses the fixed default cuts.
    """
    previous: Mapping[str, Any] = profile.get("segments") or {}
    out: dict[str, Assignment] = {
        "rfm": assign_rfm(profile, now_ms, {**DEFAULT_CUTS, **(rfm_cuts or {})}),
        "value_tier": assign_value_tier(profile, config),
        "lifecycle": assign_lifecycle(profile, now_ms, previous.get("lifecycle"), config),
        "journey": assign_journey(profile, config),
        **assign_demographics(profile),
    }
    intent = assign_intent(profile, config)
    if intent is not None:
        out["intent"] = intent
    cluster = assign_cluster(profile)
    if cluster is not None:
        out["cluster"] = cluster
    if rules:
        fresh = {**previous, **{k: a.segment for k, a in out.items()}}
        results = rules.evaluate({**profile, "segments": fresh}, now_ms)
        for rule in rules.rules:
            if results[rule.name]:
                reason = rule.description or f"matches the rule {rule.name}"
                out[CUSTOM_PREFIX + rule.name] = Assignment(MEMBER, reason)
            else:
                out[CUSTOM_PREFIX + rule.name] = Assignment(
                    NOT_MEMBER, f"does not match the rule {rule.name}"
                )
    return out


def changed(previous: Mapping[str, str], new: Mapping[str, Assignment]) -> list[Transition]:
    """The segmentations whose segment differs from ``previous`` (the profile's ``segments``).

    A ``custom.*`` segmentation in ``previous`` but not in ``new`` (its rule was deleted) is a
    transition to None; other keys of ``previous`` are left alone.
    """
    out = [
        Transition(key, previous.get(key), a.segment, a.reason)
        for key, a in new.items()
        if previous.get(key) != a.segment
    ]
    out.extend(
        Transition(key, segment, None, "the custom segment no longer exists")
        for key, segment in previous.items()
        if key.startswith(CUSTOM_PREFIX) and key not in new
    )
    return out
