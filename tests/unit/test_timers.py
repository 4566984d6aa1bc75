"""Durable event-time timers (streamproc.decisions.timers) through the processor, in memory:
cart abandonment, time-driven lifecycle moves, the email -> SMS -> call-centre cascade."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamproc.decisions.catalogue import check_catalogue, load_catalogue
from streamproc.decisions.chooser import UniformChooser
from streamproc.decisions.engine import Engine
from streamproc.decisions.record import iso_ms
from streamproc.decisions.timers import next_lifecycle_due
from streamproc.events.codec import RawMessage
from streamproc.processor import Processor, default_engine
from streamproc.segments.config import SegmentConfig
from streamproc.segments.segmenter import Segmenter
from streamproc.state.keys import customer_key
from streamproc.state.memory import MemoryStore
from streamproc.state.store import Stored

from .helpers import GRANTED, SETTINGS, Partition, event

# No lateness: a timer fires as soon as its partition's event time passes it.
TIMER_SETTINGS = dataclasses.replace(SETTINGS, timer_lateness_seconds=0)
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
T0 = 1_772_366_400_000  # 2026-03-01T12:00:00Z

CASCADE_CATALOGUE = """
slots:
  - {id: email, channel: email, neutral: newsletter}
  - {id: sms, channel: sms, neutral: none}
  - {id: call_centre, channel: call_centre, neutral: none}
actions:
  - {id: newsletter, kind: message, neutral: true, slots: [email], title: News}
  - id: winback
    kind: message
    title: We miss you
    slots: [email, sms, call_centre]
    when: {field: segments.lifecycle, op: in, value: [at_risk, lapsed]}
    freshness_hours: 336
triggers:
  - id: winback
    segment_entry: {segmentation: lifecycle, segment: lapsed}
    slots: [email]
    cascade:
      - {slot: sms, after_hours: 24}
      - {slot: call_centre, after_hours: 48}
caps:
  sms: {per_day: 1, quiet_hours: ["20:00", "09:00"]}
"""


class Stream:
    """One partition's log, processed batch by batch like a worker would."""

    def __init__(self, proc: Processor) -> None:
        self.proc = proc
        self.part = Partition()
        self.decisions: list[dict[str, Any]] = []
        self.segments: list[dict[str, Any]] = []

    async def send(self, *bodies: dict[str, Any], settle: bool = True) -> list[dict[str, Any]]:
        result = await self.proc.process([self.part.message(b) for b in bodies])
        if settle:
            await self.proc.settle(result)
        decided = [orjson.loads(v) for _, v in result.decisions]
        self.decisions += decided
        self.segments += [orjson.loads(v) for _, v in result.segments]
        return decided

    async def tick(self, ts_ms: int, settle: bool = True) -> list[dict[str, Any]]:
        """Event time moves on: another customer's page view on the same partition."""
        return await self.send(at("page_view", ts_ms, "ticker"), settle=settle)


def at(type_: str, ts_ms: int, customer: str = "c1", **fields: Any) -> dict[str, Any]:
    return event(type_, customer=customer, ts=iso_ms(ts_ms), **fields)


def consents(ts_ms: int, *purposes: str, granted: bool = True) -> list[dict[str, Any]]:
    return [at("consent_update", ts_ms, purpose=p, granted=granted) for p in purposes]


def timer_decisions(decisions: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [d for d in decisions if d["trigger"]["name"] == name]


def make(catalogue: Path | None = None, segments: bool = False,
         store: MemoryStore | None = None) -> tuple[Stream, MemoryStore]:
    store = store or MemoryStore()
    engine = (Engine(load_catalogue(catalogue), UniformChooser(), consent_defaults=GRANTED)
              if catalogue else default_engine(TIMER_SETTINGS))
    segmenter = Segmenter(TIMER_SETTINGS, clock=lambda: 0.0) if segments else None
    proc = Processor(TIMER_SETTINGS, store, clock_ms=lambda: T0, engine=engine,
                     segmenter=segmenter)
    return Stream(proc), store


@pytest.fixture
def cascade_catalogue(tmp_path: Path) -> Path:
    path = tmp_path / "catalogue.yaml"
    path.write_text(CASCADE_CATALOGUE)
    return path


# -- cart abandonment --------------------------------------------------------------------------

async def test_a_cart_left_an_hour_fires_once_at_its_event_time() -> None:
    s, store = make()
    await s.send(*consents(T0 - MIN, "email"), at("cart_add", T0))
    assert await s.tick(T0 + 30 * MIN) == []
    [d] = timer_decisions(await s.tick(T0 + 61 * MIN), "cart_abandoned")
    assert d["ts"] == iso_ms(T0 + 60 * MIN) and d["channel"] == "email"
    assert d["trigger"]["type"] == "timer" and d["trigger"]["topic"] == "timer.cart_abandoned"
    assert d["personalised"] and d["reasons"][0].startswith(
        "trigger cart_abandoned: 60 min of event time since the last cart_add without purchase")
    assert timer_decisions(await s.tick(T0 + 5 * HOUR), "cart_abandoned") == []
    assert "cart_abandoned" not in (await store.read_profile("c1"))["profile"]["timers"]


async def test_a_purchase_cancels_and_an_emptied_cart_does_not_fire() -> None:
    s, _ = make()
    await s.send(*consents(T0 - MIN, "email"), at("cart_add", T0), at("purchase", T0 + 10 * MIN))
    await s.send(at("cart_add", T0, "c2"), at("cart_remove", T0 + 5 * MIN, "c2"))
    await s.tick(T0 + 3 * HOUR)
    assert timer_decisions(s.decisions, "cart_abandoned") == []


async def test_each_cart_add_moves_the_timer() -> None:
    s, _ = make()
    await s.send(*consents(T0 - MIN, "email"), at("cart_add", T0), at("cart_add", T0 + 40 * MIN))
    assert timer_decisions(await s.tick(T0 + 70 * MIN), "cart_abandoned") == []
    [d] = timer_decisions(await s.tick(T0 + 101 * MIN), "cart_abandoned")
    assert d["ts"] == iso_ms(T0 + 100 * MIN)


async def test_a_timer_already_due_when_armed_fires_in_the_same_batch() -> None:
    """The due timers are asked in the round trip of the batch's write, after it: the query
    sees the timer the write indexed."""
    s, _ = make()
    decided = await s.send(*consents(T0 - MIN, "email"), at("cart_add", T0),
                           at("page_view", T0 + 61 * MIN, "ticker"))
    [d] = timer_decisions(decided, "cart_abandoned")
    assert d["ts"] == iso_ms(T0 + 60 * MIN)


class LosingFirstWrite(MemoryStore):
    """Another writer changes the first customer of the first write that asks for due timers,
    between our read and our write: that write loses and is done again."""

    lost = False

    async def save_then_due(self, writes, app_id, seen, lateness_ms, limit):  # type: ignore[no-untyped-def]
        if not self.lost:
            self.lost = True
            key = customer_key(writes[0].customer_id)
            now = self.rows.get(key, Stored(0, None, None))
            self.rows[key] = Stored(now.version + 1, now.doc, now.outbox)
        return await super().save_then_due(writes, app_id, seen, lateness_ms, limit)


async def test_a_timer_armed_by_a_rewritten_customer_still_fires_in_its_batch() -> None:
    """The due timers asked with a write that lost are asked again after the rewrite: its
    timers were not indexed when the first answer was made."""
    store = LosingFirstWrite()
    s, _ = make(store=store)
    decided = await s.send(at("consent_update", T0 - MIN, purpose="email", granted=True),
                           at("cart_add", T0), at("page_view", T0 + 61 * MIN, "ticker"))
    assert store.lost
    [d] = timer_decisions(decided, "cart_abandoned")
    assert d["ts"] == iso_ms(T0 + 60 * MIN)


async def test_lateness_is_waited_out() -> None:
    store = MemoryStore()
    late = dataclasses.replace(SETTINGS, timer_lateness_seconds=600)
    s = Stream(Processor(late, store, clock_ms=lambda: T0))
    await s.send(*consents(T0 - MIN, "email"), at("cart_add", T0))
    assert timer_decisions(await s.tick(T0 + 65 * MIN), "cart_abandoned") == []
    # The purchase came late, within the lateness: the timer does not fire.
    await s.send(at("purchase", T0 + 50 * MIN))
    assert timer_decisions(await s.tick(T0 + 75 * MIN), "cart_abandoned") == []


async def test_a_worker_dying_before_publishing_loses_nothing_and_adds_nothing() -> None:
    s, store = make()
    await s.send(*consents(T0 - MIN, "email"), at("cart_add", T0))
    # Fired and saved, but the worker died before its records were published: not settled.
    [first] = timer_decisions(await s.tick(T0 + 61 * MIN, settle=False), "cart_abandoned")
    saved = await store.read_profile("c1")
    # The next owner sees the entry again: the same decision is published again, once.
    [again] = timer_decisions(await s.tick(T0 + 62 * MIN), "cart_abandoned")
    assert again == first
    after = await store.read_profile("c1")
    assert after["profile"]["decisions"] == saved["profile"]["decisions"]
    assert timer_decisions(await s.tick(T0 + 63 * MIN), "cart_abandoned") == []


async def test_a_replay_fires_the_same_timers_with_the_same_decision_ids() -> None:
    bodies = [*consents(T0 - MIN, "email"), at("cart_add", T0),
              at("cart_add", T0 + 5 * MIN, "c2"), at("page_view", T0 + 2 * HOUR, "ticker")]
    runs = []
    for batch in (len(bodies), 1):
        s, _ = make()
        for i in range(0, len(bodies), batch):
            await s.send(*bodies[i:i + batch])
        runs.append(sorted(d["decision_id"] for d in timer_decisions(s.decisions,
                                                                     "cart_abandoned")))
    # c2 gave no email consent: a decision too, to send nothing (action none, with the reason).
    assert len(runs[0]) == 2 and runs[0] == runs[1]


# -- lifecycle ---------------------------------------------------------------------------------

async def test_lifecycle_moves_in_time_without_the_customers_next_event() -> None:
    s, store = make(segments=True)
    await s.send(at("purchase", T0))
    await s.tick(T0 + 91 * DAY)
    moves = [m for m in s.segments if m["customer_id"] == "c1"
             and m["segmentation"] == "lifecycle"]
    assert moves[-1]["to"] == "at_risk" and moves[-1]["trigger"]["type"] == "timer"
    assert moves[-1]["ts"] == iso_ms(T0 + 90 * DAY)
    # The at_risk trigger decided at that time (neither email nor sms consent: nothing sent).
    [d] = [d for d in s.decisions if d["customer_id"] == "c1" and d["trigger"]["name"] ==
           "at_risk"]
    assert d["ts"] == iso_ms(T0 + 90 * DAY) and d["action"]["id"] == "none"
    await s.tick(T0 + 181 * DAY)
    assert (await store.read_profile("c1"))["profile"]["segments"]["lifecycle"] == "lapsed"


async def test_a_late_event_does_not_turn_the_clock_back() -> None:
    s, store = make(segments=True)
    await s.send(at("purchase", T0))
    await s.tick(T0 + 181 * DAY)  # at risk (day 90), then lapsed (day 180), in one batch
    def fired() -> list[tuple[str, str]]:
        return [(d["trigger"]["name"], d["decision_id"]) for d in s.decisions
                if d["trigger"]["type"] == "timer" and d["customer_id"] == "c1"]

    before = fired()
    # At risk, lapsed (win-back email) and the cascade's SMS a day later: no consent for
    # either channel, so each decides to send nothing, and the cascade goes on to the next.
    assert [name for name, _ in before] == ["at_risk", "winback", "winback"]
    await s.send(*consents(T0 - MIN, "email"))  # a consent older than the timers
    await s.tick(T0 + 181 * DAY + HOUR)
    assert fired() == before  # no checkpoint armed again, no decision id made twice
    assert (await store.read_profile("c1"))["profile"]["segments"]["lifecycle"] == "lapsed"


async def test_timers_fired_in_one_batch_are_all_published_again_after_a_crash(
        cascade_catalogue: Path) -> None:
    s, _ = make(cascade_catalogue, segments=True)
    await s.send(*consents(T0 - MIN, "email", "sms"), at("purchase", T0))
    # One batch fires the lifecycle timer twice (at risk, then lapsed: the win-back email);
    # the worker dies before publishing.
    moves_before = len(s.segments)
    first = await s.tick(T0 + 180 * DAY + HOUR, settle=False)
    assert [d["trigger"]["name"] for d in first if d["customer_id"] == "c1"] == ["winback"]
    moves = [m for m in s.segments[moves_before:] if m["customer_id"] == "c1"]
    assert {m["to"] for m in moves if m["segmentation"] == "lifecycle"} == {"at_risk", "lapsed"}
    moves_before = len(s.segments)
    again = await s.tick(T0 + 180 * DAY + 2 * HOUR)
    assert [d for d in again if d["customer_id"] == "c1"] == [
        d for d in first if d["customer_id"] == "c1"]
    assert [m for m in s.segments[moves_before:] if m["customer_id"] == "c1"] == moves


def test_next_lifecycle_due_follows_the_customers_last_purchase_or_visit() -> None:
    config = SegmentConfig()
    visitor = {"purchases": {"orders": 0, "last_ms": None}, "last_seen_ms": 10 * DAY}
    assert next_lifecycle_due(visitor, 10 * DAY, config) == 100 * DAY
    assert next_lifecycle_due(visitor, 300 * DAY, config) is None


# -- the cascade ---------------------------------------------------------------------------------

async def lapse(s: Stream, *purposes: str, purchase_at: int = T0) -> dict[str, Any]:
    """c1 buys, gives consents, then lapses: the win-back email."""
    await s.send(*consents(purchase_at - MIN, *purposes), at("purchase", purchase_at))
    decided = await s.tick(purchase_at + 180 * DAY + HOUR)
    [email] = [d for d in decided if d["customer_id"] == "c1"]
    assert email["channel"] == "email" and email["action"]["id"] == "winback"
    assert email["ts"] == iso_ms(purchase_at + 180 * DAY)
    return email


def steps(s: Stream) -> list[tuple[str, str]]:
    return [(d["channel"], d["action"]["id"]) for d in s.decisions
            if d["customer_id"] == "c1" and d["trigger"]["name"] == "winback"]


async def test_no_response_email_then_sms_then_call_centre(cascade_catalogue: Path) -> None:
    s, store = make(cascade_catalogue, segments=True)
    email = await lapse(s, "email", "sms", "call_centre")
    [sms] = await s.tick(T0 + 181 * DAY + HOUR)
    assert (sms["channel"], sms["action"]["id"], sms["policy"]) == ("sms", "winback", "cascade")
    assert sms["ts"] == iso_ms(T0 + 181 * DAY) and sms["decision_id"] != email["decision_id"]
    assert "cascade step 2 of 3" in sms["reasons"][0]
    [call] = await s.tick(T0 + 183 * DAY + HOUR)
    assert (call["channel"], call["action"]["id"]) == ("call_centre", "winback")
    assert call["ts"] == iso_ms(T0 + 183 * DAY)
    await s.tick(T0 + 200 * DAY)
    assert steps(s) == [("email", "winback"), ("sms", "winback"), ("call_centre", "winback")]
    assert not any(k.startswith("cascade.") for k in
                   (await store.read_profile("c1"))["profile"]["timers"])


async def test_an_opened_email_stops_the_cascade(cascade_catalogue: Path) -> None:
    s, _ = make(cascade_catalogue, segments=True)
    email = await lapse(s, "email", "sms", "call_centre")
    await s.send(at("feedback", T0 + 180 * DAY + 2 * HOUR, decision_id=email["decision_id"],
                    outcome="open", channel="email"))
    await s.tick(T0 + 185 * DAY)
    assert steps(s) == [("email", "winback")]


async def test_a_click_on_the_sms_stops_the_call(cascade_catalogue: Path) -> None:
    s, _ = make(cascade_catalogue, segments=True)
    await lapse(s, "email", "sms", "call_centre")
    [sms] = await s.tick(T0 + 181 * DAY + HOUR)
    await s.send(at("feedback", T0 + 181 * DAY + 2 * HOUR, decision_id=sms["decision_id"],
                    outcome="click", channel="sms"))
    await s.tick(T0 + 185 * DAY)
    assert steps(s) == [("email", "winback"), ("sms", "winback")]


async def test_a_purchase_after_the_email_stops_the_cascade(cascade_catalogue: Path) -> None:
    s, _ = make(cascade_catalogue, segments=True)
    await lapse(s, "email", "sms", "call_centre")
    await s.send(at("purchase", T0 + 180 * DAY + 3 * HOUR))
    await s.tick(T0 + 185 * DAY)
    assert steps(s) == [("email", "winback")]


async def test_sms_consent_withdrawn_between_steps_skips_the_sms(
        cascade_catalogue: Path) -> None:
    s, _ = make(cascade_catalogue, segments=True)
    await lapse(s, "email", "sms", "call_centre")
    await s.send(*consents(T0 + 180 * DAY + 2 * HOUR, "sms", granted=False))
    [sms] = await s.tick(T0 + 181 * DAY + HOUR)
    assert sms["action"]["id"] == "none" and not sms["personalised"]
    assert any("no sms consent (withdrawn)" in r for r in sms["reasons"])
    await s.tick(T0 + 185 * DAY)
    assert steps(s) == [("email", "winback"), ("sms", "none"), ("call_centre", "winback")]


async def test_personalisation_withdrawn_ends_the_cascade(cascade_catalogue: Path) -> None:
    s, _ = make(cascade_catalogue, segments=True)
    await lapse(s, "email", "sms", "call_centre")
    await s.send(*consents(T0 + 180 * DAY + 2 * HOUR, "personalisation", granted=False))
    await s.tick(T0 + 185 * DAY)
    # Not profiled any more: the withdrawal dropped the customer's timers, nothing is decided.
    assert steps(s) == [("email", "winback")]


async def test_a_step_in_quiet_hours_waits_for_their_end(cascade_catalogue: Path) -> None:
    s, _ = make(cascade_catalogue, segments=True)
    purchase_at = T0 + 10 * HOUR  # 22:00 UTC: the SMS step falls in 20:00-09:00
    await lapse(s, "email", "sms", "call_centre", purchase_at=purchase_at)
    assert await s.tick(purchase_at + 181 * DAY + HOUR) == []
    [sms] = await s.tick(purchase_at + 181 * DAY + 12 * HOUR)
    assert sms["ts"] == iso_ms(purchase_at + 181 * DAY + 11 * HOUR)  # 09:00 the next morning


async def test_erasure_leaves_no_timer_behind() -> None:
    s, store = make(segments=True)
    await s.send(*consents(T0 - MIN, "email"), at("purchase", T0), at("cart_add", T0))
    assert sorted(m.split("|")[1] for z in store.zsets.values() for m in z) == [
        "cart_abandoned", "lifecycle"]
    await s.send(at("erase", T0 + HOUR))
    assert not any("c1|" in m for z in store.zsets.values() for m in z)
    await s.tick(T0 + 200 * DAY)
    assert [d for d in s.decisions if d["trigger"]["type"] == "timer"
            and d["customer_id"] == "c1"] == []


async def test_an_index_entry_of_a_customer_gone_is_dropped() -> None:
    s, store = make()
    await s.send(*consents(T0 - MIN, "email"), at("cart_add", T0))
    store.rows.clear()  # expired (TTL) without the index knowing
    assert await s.tick(T0 + 2 * HOUR) == []
    assert not any("c1|" in m for z in store.zsets.values() for m in z)


# -- the catalogue -------------------------------------------------------------------------------

@pytest.mark.parametrize(("trigger", "expected"), [
    ({"id": "t", "after": {"event": "cart_ad", "minutes": 5}, "slots": ["email"]},
     "triggers[0].after.event: unknown event type 'cart_ad'"),
    ({"id": "t", "after": {"event": "cart_add", "minutes": 5, "unless": ["buy"]},
      "slots": ["email"]}, "triggers[0].after.unless: unknown event type 'buy'"),
    ({"id": "lifecycle", "after": {"event": "cart_add", "minutes": 5}, "slots": ["email"]},
     "triggers[0].id: 'lifecycle' is reserved"),
    ({"id": "t", "event": "cart_add", "after": {"event": "cart_add", "minutes": 5},
      "slots": ["email"]}, "give exactly one of event, segment_entry or after (it has event "
                           "and after)"),
    ({"id": "t", "event": "purchase", "slots": ["email"],
      "cascade": [{"slot": "web_hero", "after_hours": 1}]},
     "triggers[0].cascade[0].slot: 'web_hero' is not a message channel"),
    ({"id": "t", "event": "purchase", "slots": ["email"],
      "cascade": [{"slot": "fax", "after_hours": 1}]},
     "triggers[0].cascade[0].slot: unknown slot 'fax'"),
])
def test_timer_triggers_are_checked(trigger: dict[str, Any], expected: str) -> None:
    data = {"slots": [{"id": "email", "channel": "email", "neutral": "none"},
                      {"id": "web_hero", "channel": "web", "neutral": "none"}],
            "actions": [{"id": "a", "kind": "message", "slots": ["email"]}],
            "triggers": [trigger]}
    problems = check_catalogue(data)
    assert any(expected in p for p in problems), problems


def test_unreadable_index_entries_are_dropped_not_fired() -> None:
    from streamproc.decisions.timers import parse_member

    assert parse_member("a|b", 0) is None and parse_member("a|b|c", 0) is None
    assert RawMessage  # the synthetic event's message type stays the codec's


def test_a_write_whose_timers_are_indexed_as_before_takes_the_noted_entries() -> None:
    from streamproc.decisions.timers import INDEX_NOTE, arm, indexed, settle
    from streamproc.state.profile import Profile

    p: Profile = {}
    arm(p, "lifecycle", T0 + 90 * DAY, 2)
    notes: dict[str, Any] = {}
    first = settle(p, "c1", "app", set(), notes=notes)
    assert first.add and notes[INDEX_NOTE] == ({(2, T0 + 90 * DAY, "lifecycle")},
                                               first.entries)
    arm(p, "lifecycle", T0 + 95 * DAY, 2)  # later: its entry stays
    before = indexed(p)
    again = settle(p, "c1", "app", before, notes=notes)
    assert again.entries is first.entries and not again.add and not again.remove
    assert again == settle(p, "c1", "app", before)  # what building them gives
    # A new timer, or an earlier due time: built again, and noted.
    for name, due in (("cart_abandoned", T0 + HOUR), ("lifecycle", T0 + DAY)):
        before = indexed(p)
        arm(p, name, due, 2)
        built = settle(p, "c1", "app", before, notes=notes)
        assert built.add and built.entries != first.entries
        assert notes[INDEX_NOTE][1] is built.entries
    # A fired timer's entry stays in the write's entries until the batch is out: not noted.
    fired = [(2, T0 + HOUR, "cart_abandoned")]
    p["timers"].pop("cart_abandoned")
    out = settle(p, "c1", "app", indexed(p), fired, notes)
    assert any("cart_abandoned" in m for _, m in out.entries) and notes[INDEX_NOTE] is None
