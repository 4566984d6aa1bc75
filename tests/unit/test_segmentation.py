from __future__ import annotations

import orjson

from streamproc.processor import Processor
from streamproc.segments import DEFAULT_CUTS, bucket_of
from streamproc.segments.segmenter import HISTOGRAM_REFRESH_S, Segmenter, base_cuts, rfm_buckets
from streamproc.settings import Settings
from streamproc.state.memory import MemoryStore

from .helpers import SETTINGS, Partition, event


def make(settings: Settings = SETTINGS) -> tuple[Processor, MemoryStore]:
    store = MemoryStore()
    return Processor(settings, store, segmenter=Segmenter(settings, clock=lambda: 0.0)), store


def at_day(day: int) -> str:
    return f"2026-01-{day:02d}T10:00:00.000Z"


async def test_every_event_resegments_and_publishes_the_moves():
    proc, store = make()
    part = Partition()
    first = await proc.process([part.message(event("page_view", customer="c1"))])
    moves = {r["segmentation"]: r for r in map(orjson.loads, (v for _, v in first.segments))}
    assert moves["journey"]["from"] is None and moves["journey"]["to"] == "anonymous_visitor"
    assert moves["rfm"]["to"] == "prospect"
    assert all(r["trigger"]["offset"] == 0 and r["customer_id"] == "c1" for r in moves.values())

    buy = event("purchase", customer="c1", amount=120.0, ts=at_day(2))
    second = await proc.process([part.message(buy)])
    changed = {r["segmentation"]: (r["from"], r["to"]) for r in
               map(orjson.loads, (v for _, v in second.segments))}
    assert changed["journey"] == ("anonymous_visitor", "first_time_buyer")
    assert changed["rfm"][0] == "prospect" and changed["rfm"][1] != "prospect"
    p = (await store.read_profile("c1"))["profile"]
    assert p["segments"]["journey"] == "first_time_buyer"
    # First assignments are not moves; the history keeps only moves, compactly.
    assert ["journey", "anonymous_visitor", "first_time_buyer"] in [h[:3] for h in
                                                                    p["segment_history"]]
    assert all(h[1] is not None for h in p["segment_history"])


async def test_no_change_no_record():
    proc, _ = make()
    part = Partition()
    await proc.process([part.message(event("search", customer="c1"))])
    again = await proc.process([part.message(event("search", customer="c1"))])
    assert again.segments == []


async def test_histograms_count_each_buyer_once_and_forget_them_on_erase():
    proc, store = make()
    part = Partition()
    await proc.process([
        part.message(event("purchase", customer="a", amount=10.0, ts=at_day(1))),
        part.message(event("purchase", customer="a", amount=30.0, ts=at_day(5))),
        part.message(event("purchase", customer="b", amount=500.0, ts=at_day(5))),
        part.message(event("search", customer="c")),  # no purchase: not in the base
    ])
    hist = await store.histograms()
    day5 = str(20454 + 4)  # 2026-01-05
    assert hist["last_purchase_day"] == {day5: 2}
    assert hist["frequency"] == {str(bucket_of("frequency", 1)): 1,
                                 str(bucket_of("frequency", 0)): 1}
    assert sum(hist["monetary"].values()) == 2
    await proc.process([part.message(event("erase", customer="a"))])
    hist = await store.histograms()
    assert hist["last_purchase_day"] == {day5: 1} and sum(hist["frequency"].values()) == 1


def test_rfm_buckets_of_a_buyer():
    p = {"purchases": {"days": {"100": 20.0, "103": 40.0}, "total": 60.0, "orders": 3}}
    assert rfm_buckets(p) == ("103", str(bucket_of("frequency", 1)),
                              str(bucket_of("monetary", 20.0)))
    assert rfm_buckets({"purchases": {"days": {}}}) == ("", "", "")


def test_base_cuts_use_days_since_purchase_at_the_given_day():
    hist = {"last_purchase_day": {str(d): 30 for d in range(100, 110)}}
    cuts_day_110 = base_cuts(hist, 110, min_customers=100)["recency_days"]
    cuts_day_200 = base_cuts(hist, 200, min_customers=100)["recency_days"]
    assert cuts_day_110 != cuts_day_200  # the same base, seen later, is less recent
    small = base_cuts({"last_purchase_day": {"100": 5}}, 110, min_customers=100)
    assert small["recency_days"] == DEFAULT_CUTS["recency_days"]


def test_histogram_keys_follow_the_bucket_version():
    from streamproc.segments import BUCKETS_VERSION
    from streamproc.state.keys import HISTOGRAM_VERSION, histogram_key

    assert HISTOGRAM_VERSION == BUCKETS_VERSION
    assert f":v{BUCKETS_VERSION}:" in histogram_key("frequency")


async def test_custom_rules_file_drives_custom_segments(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "segments:\n"
        "  - name: shoe_fans\n"
        "    description: viewed shoes twice in 7 days\n"
        "    when: {count: {event: product_view, category: shoes, within_days: 7, at_least: 2}}\n"
    )
    settings = Settings(segment_rules=rules, consent_defaults="personalisation=granted")
    proc, _ = make(settings)
    part = Partition()
    first = await proc.process([part.message(event("product_view", customer="c1"))])
    second = await proc.process([part.message(event("product_view", customer="c1"))])
    def custom(result):
        return [orjson.loads(v) for _, v in result.segments
                if orjson.loads(v)["segmentation"] == "custom.shoe_fans"]
    assert [(r["from"], r["to"]) for r in custom(first)] == [(None, "not_member")]
    [joined] = custom(second)
    assert (joined["from"], joined["to"], joined["custom"]) == ("not_member", "member", True)
    assert joined["reason"] == "viewed shoes twice in 7 days"


def test_a_broken_rules_file_stops_the_start_with_every_problem(tmp_path):
    import pytest

    from streamproc.errors import ConfigError

    rules = tmp_path / "rules.yaml"
    rules.write_text("segments:\n  - name: Bad Name\n    when: {count: {event: teleport, "
                     "within_days: 99, at_least: 1}}\n")
    with pytest.raises(ConfigError) as info:
        Segmenter(Settings(segment_rules=rules))
    message = str(info.value)
    assert "segments[0]" in message


def test_intent_tier_moves_are_published_but_not_kept_in_history():
    from streamproc.events.codec import Event
    from streamproc.state.profile import apply_event, new_profile

    segmenter = Segmenter(SETTINGS, clock=lambda: 0.0)
    p = new_profile("c1")
    body = event("page_view", customer="c1")
    apply_event(p, "page_view", 1_000, body)
    msg = Partition().message(body)
    ev = Event("page_view", "c1", body["event_id"], 1_000, body, msg)
    moves = []
    for score in (0.1, 0.9):
        p["scores"] = {"intent": score}
        moves += segmenter.update(p, ev, {"offset": 0})
    intent_moves = [(m["from"], m["to"]) for m in moves if m["segmentation"] == "intent"]
    assert intent_moves == [(None, "cold"), ("cold", "hot")]
    assert p["segments"]["intent"] == "hot"
    assert all(h[0] != "intent" for h in p["segment_history"])


async def test_a_first_day_base_keeps_todays_buyers_out_of_lost():
    # The demo's first hour: 150 customers each bought once, minutes ago. Every one ties on
    # recency (today) and frequency (0), so the quintiles cannot score those dimensions: they
    # were all R1 F1 (`lost`, `at_risk` for the big spenders) while bought today.
    now = [0.0]
    proc = Processor(SETTINGS, MemoryStore(),
                     segmenter=Segmenter(SETTINGS, clock=lambda: now[0]))
    part = Partition()
    customers = [f"c{i}" for i in range(150)]
    await proc.process([part.message(event("purchase", customer=c, minute=i % 50,
                                           amount=10.0 + 3 * i))
                        for i, c in enumerate(customers)])
    now[0] += HISTOGRAM_REFRESH_S + 1  # the segmenter reads the base of 150 buyers
    out = await proc.process([part.message(event("page_view", customer=c, minute=55))
                              for c in customers])
    moves = [orjson.loads(v) for _, v in out.segments]
    rfm = {r["customer_id"]: r for r in moves if r["segmentation"] == "rfm"}
    assert rfm, "the base's cuts moved nobody"
    assert {r["to"] for r in rfm.values()} <= {"new", "potential_loyalists"}
    assert all(r["reason"].startswith("R5 F1 ") for r in rfm.values())
