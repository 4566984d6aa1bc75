"""The human view of a stored profile (``streamproc profile --human``, ``?human=true``): the
compact parts the workers write, made by the functions that write them, spelled out."""

from __future__ import annotations

import orjson

from streamproc.days import DAY_MS, HOUR_MS
from streamproc.decisions import exposure
from streamproc.state.profile import new_profile, remember_product
from streamproc.state.provenance import record_provenance
from streamproc.state.readable import human

T0 = 1_772_359_200_000  # 2026-03-01T10:00:00Z
NOW = T0 + 3 * DAY_MS + 2 * HOUR_MS


def stored() -> dict:
    p = new_profile("c1")
    record_provenance(p, {"shoe_size": 42, "city": "Leeds"}, "crm", T0 - DAY_MS, 30 * DAY_MS)
    p["attributes"].update({"shoe_size": 42, "city": "Leeds"})
    record_provenance(p, {"shoe_size": 43}, "declared", T0, 30 * DAY_MS)
    p["attributes"]["shoe_size"] = 43
    p["segment_history"].append(["rfm", "new", "loyal", T0])
    remember_product(p, "shoe-1", "shoes", "buy", T0)
    exposure.record(p, "0123456789abcdef0123", "cart_reminder", "cart_drawer",
                    "cart_drawer:new", "", 0.5, T0, exposure.LEARNING | exposure.REWARDED,
                    history=6, channel_day=("email", T0 // DAY_MS))
    return {"customer_id": "c1", "profile": p, "version": 3}


def test_sources_are_spelled_out_with_their_age_and_conflicts() -> None:
    shown = human(stored(), NOW)["profile"]
    assert shown["provenance"] == {
        "shoe_size": "declared, 3 days ago (2026-03-01T10:00:00.000Z); contradicts what crm, "
                     "4 days ago (2026-02-28T10:00:00.000Z) said",
        "city": "crm, 4 days ago (2026-02-28T10:00:00.000Z)"}
    assert shown["attributes"] == {"shoe_size": 43, "city": "Leeds"}  # values untouched


def test_compact_lists_get_named_fields_and_dates() -> None:
    shown = human(stored(), NOW)["profile"]
    at = "2026-03-01T10:00:00.000Z"
    assert shown["segment_history"] == [
        {"segmentation": "rfm", "from": "new", "to": "loyal", "at": at}]
    assert shown["recent_products"] == [
        {"product_id": "shoe-1", "category": "shoes", "strongest": "buy", "at": at}]
    decisions = shown["decisions"]
    assert decisions["recent"] == [{
        "decision_id": "0123456789ab", "action": "cart_reminder", "context": "cart_drawer:new",
        "arm": "(no experiment)", "propensity": 0.5, "at": at,
        "chosen_by": "learning chooser", "rewarded": True}]
    assert decisions["seen"] == {"cart_reminder": {"at": at, "slot": "cart_drawer"}}
    assert decisions["sent"] == {"email": {"local_day": "2026-03-01", "count": 1}}


def test_timers_name_their_partition_and_index_entry() -> None:
    doc = stored()
    doc["profile"]["timers"] = {"cart_abandoned": {"due": T0, "p": 4, "at": [4, T0]}}
    shown = human(doc, NOW)["profile"]["timers"]
    at = "2026-03-01T10:00:00.000Z"
    assert shown == {"cart_abandoned": {"due": at, "partition": 4, "indexed_as": [4, at]}}


def test_the_stored_document_is_left_as_it_is() -> None:
    doc = stored()
    before = orjson.dumps(doc)
    human(doc, NOW)
    assert orjson.dumps(doc) == before  # the raw view (and the caller's dict) keep the codes
    assert doc["profile"]["provenance"]["city"] == ["c", T0 - DAY_MS]


def test_a_layout_it_does_not_know_is_shown_as_stored() -> None:
    p = {"provenance": {"x": ["d"]}, "segment_history": [["rfm", "new"]],
         "decisions": {"sent": {"sms": "odd"}}}
    shown = human({"profile": p}, NOW)["profile"]
    assert shown == p
