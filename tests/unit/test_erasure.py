"""Erasure's suppression record (streamproc.state.erasure) through the processor, on the
in-memory store: an erased customer's events from before the erasure, read later, never build
the profile again; newer ones do; nothing is counted twice."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import orjson
import pytest

from streamproc.decisions.record import iso_ms
from streamproc.events.codec import RawMessage, parse_ts
from streamproc.processor import BatchResult, Processor, erase_customer
from streamproc.settings import Settings
from streamproc.state.erasure import suppressed
from streamproc.state.memory import MemoryStore

from .helpers import SETTINGS, TOPIC_OF, event

DAY_MS = 86_400_000
T0 = parse_ts("2026-03-01T10:00:00Z")  # the erasure's time in these tests
_offsets = itertools.count(1000)


def message(body: dict[str, Any], stamp_ms: int, partition: int = 0) -> RawMessage:
    """``body`` as a record produced at ``stamp_ms`` (its Kafka timestamp)."""
    return RawMessage(TOPIC_OF[body["type"]], partition, next(_offsets),
                      body["customer_id"].encode(), orjson.dumps(body), stamp_ms)


def at(minutes: float) -> str:
    """An event time ``minutes`` after T0 (negative: before)."""
    return iso_ms(T0 + int(minutes * 60_000))


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def make(settings: Settings = SETTINGS) -> tuple[Processor, MemoryStore, Clock]:
    clock = Clock(T0 + 60_000)
    store = MemoryStore(clock_ms=clock)
    return Processor(settings, store, clock_ms=clock), store, clock


async def erased_customer(proc: Processor, cid: str = "gone") -> list[RawMessage]:
    """Build ``cid``'s profile from two events, then erase them with an erase event at T0;
    return the two messages (to read them again later)."""
    before = [message(event("cart_add", customer=cid, ts=at(-30)), T0 - 30 * 60_000),
              message(event("purchase", customer=cid, ts=at(-20)), T0 - 20 * 60_000)]
    await proc.process(before)
    assert await proc.store.read_profile(cid) is not None
    result = await proc.process([message(event("erase", customer=cid, ts=at(0)), T0)])
    assert result.erased == [cid.encode()]
    assert await proc.store.read_profile(cid) is None
    return before


def test_the_rule_counts_either_time_before_the_erasure() -> None:
    assert suppressed(T0, T0 - 1, T0 + 5_000)  # dated before: a backfill produced later
    assert suppressed(T0, T0 + 5_000, T0 - 1)  # sent before, its clock ahead: a retry
    assert suppressed(T0, T0, T0 + 1)  # at the erasure's very time: before it
    assert not suppressed(T0, T0 + 1, T0 + 1)  # after on both counts: the customer is back
    assert not suppressed(T0, T0 + 1, None)  # no record time: the event time decides
    assert not suppressed(0, T0 - 1, T0 - 1)  # no erasure recorded


async def test_a_redelivered_pre_erasure_event_does_not_bring_the_profile_back(
        caplog: pytest.LogCaptureFixture) -> None:
    proc, store, _ = make()
    before = await erased_customer(proc)
    caplog.set_level(logging.INFO, "streamproc.processor")
    replay = await proc.process(before)  # the same records, read again
    assert await store.read_profile("gone") is None
    assert replay.suppressed == {SETTINGS.topics.browsing: 1, SETTINGS.topics.purchases: 1}
    assert replay.applied == 0 and replay.decisions == [] and replay.learning == []
    assert replay.deadletters == []  # not copied to the dead-letter topic either
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "2 event(s) of erased customers suppressed" in logged
    assert "gone" not in logged  # no personal data: where it was read, and its type


async def test_an_old_event_produced_after_the_erasure_is_suppressed_by_its_own_time() -> None:
    proc, store, _ = make()
    await erased_customer(proc)
    backfill = message(event("search", customer="gone", ts=at(-60)), T0 + 3_600_000)
    result = await proc.process([backfill])
    assert result.suppressed == {SETTINGS.topics.browsing: 1}
    assert await store.read_profile("gone") is None


async def test_a_retry_sent_before_the_erasure_is_suppressed_by_its_record_time() -> None:
    proc, store, _ = make()
    await erased_customer(proc)
    # Its producer's clock ran two minutes ahead: dated after the erasure, sent before it.
    retry = message(event("search", customer="gone", ts=at(2)), T0 - 1_000)
    assert (await proc.process([retry])).suppressed == {SETTINGS.topics.browsing: 1}
    assert await store.read_profile("gone") is None


async def test_events_after_the_erasure_profile_the_customer_again_and_old_ones_stay_out(
) -> None:
    proc, store, _ = make()
    before = await erased_customer(proc)
    back = message(event("search", customer="gone", ts=at(10)), T0 + 600_000)
    result = await proc.process([back])
    assert result.suppressed == {} and result.applied == 1
    fresh = (await store.read_profile("gone"))["profile"]  # type: ignore[index]
    assert fresh["counts"]["search"] == 1 and fresh["purchases"]["orders"] == 0
    # The pre-erasure purchase read again later, now that a new profile exists: still out.
    again = await proc.process([before[1], back])
    assert again.suppressed == {SETTINGS.topics.purchases: 1}
    assert again.redelivered == 1  # the search: already applied, not counted twice
    now = (await store.read_profile("gone"))["profile"]  # type: ignore[index]
    assert now["purchases"]["orders"] == 0 and now["counts"]["search"] == 1


async def test_in_the_erase_batch_only_the_events_newer_than_the_erasure_count() -> None:
    proc, store, _ = make()
    batch = [message(event("cart_add", customer="gone", ts=at(-5)), T0 - 300_000),
             message(event("erase", customer="gone", ts=at(0)), T0),
             # read after the erase, but dated before it (another topic, read late)
             message(event("purchase", customer="gone", ts=at(-1)), T0 - 60_000),
             message(event("search", customer="gone", ts=at(3)), T0 + 180_000)]
    result = await proc.process(batch)
    assert result.erased == [b"gone"]
    assert result.suppressed == {SETTINGS.topics.purchases: 1}
    fresh = (await store.read_profile("gone"))["profile"]  # type: ignore[index]
    assert fresh["counts"].get("search") == 1 and fresh["purchases"]["orders"] == 0
    # The whole batch redelivered (a crash before the commit): the same outcome.
    again = await proc.process(batch)
    assert again.suppressed == {SETTINGS.topics.purchases: 1}
    redone = (await store.read_profile("gone"))["profile"]  # type: ignore[index]
    assert redone["counts"] == fresh["counts"] and redone["purchases"]["orders"] == 0


async def test_the_suppression_ends_after_its_days() -> None:
    proc, store, clock = make(Settings(erasure_suppress_days=2))
    before = await erased_customer(proc)
    clock.now_ms += 2 * DAY_MS - 1
    assert (await proc.process(before[:1])).suppressed  # still within the 2 days
    clock.now_ms += 2
    late = await proc.process(before[:1])
    assert late.suppressed == {} and await store.read_profile("gone") is not None


async def test_no_suppression_with_zero_days() -> None:
    proc, store, _ = make(Settings(erasure_suppress_days=0))
    before = await erased_customer(proc)
    assert store.erased == {}
    assert (await proc.process(before)).suppressed == {}
    assert await store.read_profile("gone") is not None


async def test_forget_suppresses_what_was_sent_before_it_and_keeps_no_id_in_clear() -> None:
    proc, store, clock = make()
    cid = "forget-me@example.com"
    sent = message(event("search", customer=cid, ts=at(-1)), T0 - 60_000)
    await proc.process([sent])
    erasure = BatchResult()
    # As `streamproc forget` and DELETE /v1/customers/{id}: erased as of now.
    assert await erase_customer(store, cid, "forget-1", clock(), None, erasure,
                                suppress_ms=SETTINGS.erasure_suppress_days * DAY_MS) == 1
    assert erasure.erased == [cid.encode()]
    assert (await proc.process([sent])).suppressed == {SETTINGS.topics.browsing: 1}
    assert await store.read_profile(cid) is None
    [key] = store.erased
    assert key.startswith("sp:erased:") and cid not in key and "forget" not in key
    assert len(key.removeprefix("sp:erased:")) == 32  # 128 bits, hex
    # Another store (another deployment's key) names the same customer differently.
    other = MemoryStore()
    await other.erase(cid, clock(), DAY_MS)
    assert set(other.erased) != set(store.erased)


async def test_a_later_erasure_moves_the_record_on_an_earlier_one_does_not() -> None:
    store = MemoryStore(clock_ms=lambda: T0)
    await store.erase("c1", T0, DAY_MS)
    await store.erase("c1", T0 + 10, DAY_MS)
    assert (await store.load(["c1"]))["c1"].erased_ms == T0 + 10
    await store.erase("c1", T0 - 10, DAY_MS)  # an older erase event read late
    assert (await store.load(["c1"]))["c1"].erased_ms == T0 + 10


async def test_dead_letters_are_keyed_by_their_customer_where_known() -> None:
    proc, _, _ = make()
    browsing = SETTINGS.topics.browsing
    bad = event("search", customer="cust-9", ts=at(0))
    del bad["query"]  # a schema violation that still names its customer
    mismatch = event("search", customer="cust-8", ts=at(0))
    messages = [
        RawMessage(browsing, 2, 40, b"cust-9", orjson.dumps(bad), T0),
        RawMessage(browsing, 2, 41, b"cust-7", b"{not json", T0),  # only the key names one
        RawMessage(browsing, 2, 42, b"who knows?", b"{not json", T0),  # nobody known
        RawMessage(browsing, 2, 43, None, b"[]", T0),
        RawMessage(browsing, 2, 44, b"cust-7", orjson.dumps(mismatch), T0),  # data of cust-8
    ]
    result = await proc.process(messages)
    keys = [k for k, _ in result.deadletters]
    assert keys == [b"cust-9", b"cust-7", f"~{browsing}:2:42".encode(),
                    f"~{browsing}:2:43".encode(), b"cust-8"]
    reasons = [orjson.loads(v)["reason"] for _, v in result.deadletters]
    assert reasons == ["schema_violation", "invalid_json", "invalid_json", "schema_violation",
                       "key_mismatch"]


class ErasedBetweenReadAndWrite(MemoryStore):
    """`streamproc forget` (or the API) erases a customer who has no profile yet just after a
    worker read them and before its write."""

    def __init__(self, cid: str, clock_ms: Clock) -> None:
        super().__init__(clock_ms=clock_ms)
        self.cid, self.raced = cid, False

    async def save_then_due(self, writes, app_id, seen, lateness_ms, limit):  # type: ignore[no-untyped-def]
        if not self.raced:
            self.raced = True
            await self.erase(self.cid, T0, 30 * DAY_MS)
        return await super().save_then_due(writes, app_id, seen, lateness_ms, limit)


async def test_an_erasure_between_the_read_and_the_first_write_still_wins() -> None:
    clock = Clock(T0 + 60_000)
    store = ErasedBetweenReadAndWrite("newcomer", clock)
    proc = Processor(SETTINGS, store, clock_ms=clock)
    sent = message(event("search", customer="newcomer", ts=at(-1)), T0 - 60_000)
    result = await proc.process([sent])
    assert store.raced
    # The write of the new profile was refused (the record changed since the read) and the
    # event read again against the erasure: suppressed, no profile.
    assert result.suppressed == {SETTINGS.topics.browsing: 1} and result.applied == 0
    assert await store.read_profile("newcomer") is None


async def test_a_redelivered_erase_keeps_what_the_customer_did_after_it() -> None:
    """The profiles partition read again after a crash (its offset not committed), while the
    customer's browsing since was committed: the erase must not delete the new profile."""
    proc, store, _ = make()
    await erased_customer(proc)
    erase = message(event("erase", customer="gone", ts=at(0)), T0)
    back = message(event("search", customer="gone", ts=at(10)), T0 + 600_000)
    await proc.process([back])
    again = await proc.process([erase])
    fresh = (await store.read_profile("gone"))["profile"]  # type: ignore[index]
    assert fresh["counts"]["search"] == 1
    # Its outputs go out again: the tombstones remove only what precedes them.
    assert again.erased == [b"gone"] and len(again.learning) == 1
    # A newer erasure still erases.
    later = message(event("erase", customer="gone", ts=at(20)), T0 + 1_200_000)
    assert (await proc.process([later])).erased == [b"gone"]
    assert await store.read_profile("gone") is None
