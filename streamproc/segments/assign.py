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

from collections.abc import Collection, Mapping
from typing import Any

from streamproc.segments.assignment import Assignment, Deferred, Transition
from streamproc.segments.builtin import CUSTOM_PREFIX, MEMBER, NOT_MEMBER
from streamproc.segments.cluster import assign_cluster
from streamproc.segments.config import SegmentConfig
from streamproc.segments.demographic import assign_demographics
from streamproc.segments.intent_tier import assign_intent
from streamproc.segments.journey import journey_deferred
from streamproc.segments.lifecycle import lifecycle_deferred
from streamproc.segments.quantiles import DEFAULT_CUTS, Cuts
from streamproc.segments.rfm import rfm_deferred
from streamproc.segments.rules import RuleSet
from streamproc.segments.tiers import assign_value_tier
from streamproc.state.profile import APPLIED_PARTS, Profile

# What each built-in segmentation reads: parts of the profile ("counts.<key>": one key of
# ``counts``), and "clock.<segmentation>" (the customer's time reached the moment its answer
# may change by time alone: Deferred.until_ms), "clock.idle" (the customer's time is, or was
# at their last update, ahead of their last event: a timer moved it), "cuts" (the base's RFM
# cuts), "segments" (segments assigned before). Given the parts an event changed, assign_all
# runs only the segmentations that read one: the others would give the segment they have.
READS: dict[str, frozenset[str]] = {
    "rfm": frozenset({"purchases", "rfm", "clock.rfm", "cuts"}),
    "value_tier": frozenset({"purchases", "scores"}),
    # A visitor's anchor, the last event, is their time unless "clock.idle" (lifecycle.py).
    "lifecycle": frozenset({"purchases", "first_seen_ms", "clock.lifecycle", "clock.idle",
                            "segments"}),
    "journey": frozenset({"purchases", "cart", "counts.product_view", "counts.sessions"}),
    "demographics": frozenset({"attributes", "location"}),  # age_band, gender, country
    "intent": frozenset({"scores"}),
    "cluster": frozenset({"cluster"}),
}
# What they read of a buyer (``purchases.last_ms`` known): RFM's recency and the lifecycle's
# anchor are the last purchase, not ``rfm`` (whose T moves every day) or the visits; the
# journey stage follows the orders alone.
BUYER_READS: dict[str, frozenset[str]] = {
    "rfm": frozenset({"purchases", "clock.rfm", "cuts"}),
    "lifecycle": frozenset({"purchases", "clock.lifecycle", "segments"}),
    "journey": frozenset({"purchases"}),
}
# The segmentations whose answer moves with time (their Deferred says until when it holds).
TIMED = ("rfm", "lifecycle")
CLOCK_PARTS = {name: f"clock.{name}" for name in TIMED}
IDLE = "clock.idle"
# The parts whose changes the processor reports (the profile update's, the scorer's, the
# segmenter's own and the time): a rule reading another part runs on every event.
TRACKED = APPLIED_PARTS | {"scores", "cluster", "segments", "day", "cuts", IDLE,
                           *CLOCK_PARTS.values()}


def assign_all(
    profile: Profile,
    now_ms: int,
    rfm_cuts: Mapping[str, Cuts] | None,
    rules: RuleSet | None,
    config: SegmentConfig,
    changed_parts: Collection[str] | None = None,
) -> dict[str, Assignment]:
    """Every segment of the customer at event time ``now_ms``.

    ``rfm_cuts`` are the base's cuts by dimension (:func:`~.quantiles.cuts_from_histograms`);
    None, or a dimension left out, uses the fixed default cuts. With ``changed_parts`` (the
    parts changed since the profile's segments were assigned, see :data:`READS`) only the
    segmentations reading one of them are in the answer.

    >>> from streamproc.segments.config import SegmentConfig
    >>> sorted(assign_all({"customer_id": "c1"}, 0, None, None, SegmentConfig(), {"cart"}))
    ['journey']
    """
    found = assign_deferred(profile, now_ms, rfm_cuts, rules, config, changed_parts)
    return {k: a.assignment() if isinstance(a, Deferred) else a for k, a in found.items()}


def assign_deferred(
    profile: Profile,
    now_ms: int,
    rfm_cuts: Mapping[str, Cuts] | None,
    rules: RuleSet | None,
    config: SegmentConfig,
    changed_parts: Collection[str] | None = None,
) -> dict[str, Assignment | Deferred]:
    """:func:`assign_all` with the RFM, lifecycle and journey reasons (those segmentations run
    on nearly every event) built only when read (:class:`~.assignment.Deferred`): the
    segmenter reads only the reasons of the moves (:func:`changed`)."""
    def runs(reads: frozenset[str] | None) -> bool:
        return (changed_parts is None or reads is None or not reads.isdisjoint(changed_parts)
                or not reads <= TRACKED)

    previous: Mapping[str, Any] = profile.get("segments") or {}
    out: dict[str, Assignment | Deferred] = {}
    purchases = profile.get("purchases") or {}
    reads = (BUYER_READS if (purchases.get("orders") or 0) > 0
             and purchases.get("last_ms") is not None else READS)
    if runs(reads["rfm"]):
        out["rfm"] = rfm_deferred(profile, now_ms, {**DEFAULT_CUTS, **(rfm_cuts or {})})
    if runs(READS["value_tier"]):
        out["value_tier"] = assign_value_tier(profile, config)
    if runs(reads["lifecycle"]):
        out["lifecycle"] = lifecycle_deferred(profile, now_ms, previous.get("lifecycle"), config)
    if runs(reads["journey"]):
        out["journey"] = journey_deferred(profile, config)
    if runs(READS["demographics"]):
        out.update(assign_demographics(profile))
    intent = assign_intent(profile, config) if runs(READS["intent"]) else None
    if intent is not None:
        out["intent"] = intent
    cluster = assign_cluster(profile) if runs(READS["cluster"]) else None
    if cluster is not None:
        out["cluster"] = cluster
    if rules:
        fresh = {**previous, **{k: a.segment for k, a in out.items()}}
        if changed_parts is not None and fresh != previous:  # rules see this event's moves
            changed_parts = {*changed_parts, "segments"}
        due = [r for r in rules.rules if runs(r.reads)]
        results = rules.evaluate({**profile, "segments": fresh}, now_ms, due)
        for rule in due:
            if results[rule.name]:
                reason = rule.description or f"matches the rule {rule.name}"
                out[CUSTOM_PREFIX + rule.name] = Assignment(MEMBER, reason)
            else:
                out[CUSTOM_PREFIX + rule.name] = Assignment(
                    NOT_MEMBER, f"does not match the rule {rule.name}"
                )
    return out


def changed(previous: Mapping[str, str], new: Mapping[str, Assignment | Deferred],
            complete: bool = True) -> list[Transition]:
    """The segmentations whose segment differs from ``previous`` (the profile's ``segments``).

    A ``custom.*`` segmentation in ``previous`` but not in ``new`` (its rule was deleted) is a
    transition to None when ``new`` is ``complete`` (not only the segmentations an event's
    changes called for); other keys of ``previous`` are left alone.
    """
    out = [
        Transition(key, previous.get(key), a.segment, a.reason)
        for key, a in new.items()
        if previous.get(key) != a.segment
    ]
    if complete:
        out.extend(
            Transition(key, segment, None, "the custom segment no longer exists")
            for key, segment in previous.items()
            if key.startswith(CUSTOM_PREFIX) and key not in new
        )
    return out
