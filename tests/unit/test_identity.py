"""Identity (docs/identity.md): an identifier's profile merged into its customer's once, events
under an alias forwarded, erasure and unlink; the property that crashes and redeliveries in any
interleaving give the profile of one clean pass."""

from __future__ import annotations

from typing import Any

import orjson

from streamproc.events.codec import RawMessage
from streamproc.processor import BatchResult, Processor
from streamproc.segments.segmenter import Segmenter
from streamproc.state.memory import MemoryStore

from .helpers import SETTINGS, Partition, event

NOW = 1_772_359_200_050
TOPIC_NAMES = {"browsing": SETTINGS.topics.browsing, "purchases": SETTINGS.topics.purchases,
               "profiles": SETTINGS.topics.profiles, "feedback": SETTINGS.topics.feedback}


class Log:
    """A topic per input kind, partitions by customer (two of them: anonymous ids on 0,
    customers on 1), handing out offsets like a broker."""

    def __init__(self) -> None:
        self.parts: dict[tuple[str, int], Partition] = {}

    def message(self, body: dict[str, Any], topic: str | None = None) -> RawMessage:
        part = 0 if body["customer_id"].startswith("anon") else 1
        msg = Partition(part).message(body, topic=topic)
        place = (msg.topic, part)
        partition = self.parts.setdefault(place, Partition(part))
        return RawMessage(msg.topic, part, next(partition.offsets), msg.key, msg.value,
                          msg.timestamp_ms)

    def forwarded(self, result: BatchResult) -> list[RawMessage]:
        out = []
        for to, key, value in result.forwards:
            body = orjson.loads(value)
            assert body["customer_id"].encode() == key
            out.append(self.message(body, topic=TOPIC_NAMES[to]))
        return out


def make(store: MemoryStore | None = None) -> tuple[Processor, MemoryStore]:
    store = store or MemoryStore()
    return Processor(SETTINGS, store, clock_ms=lambda: NOW,
                     segmenter=Segmenter(SETTINGS, clock=lambda: 0.0)), store


async def profile(store: MemoryStore, cid: str) -> dict[str, Any] | None:
    found = await store.read_profile(cid)
    return None if found is None else found["profile"]


async def run(proc: Processor, log: Log, msgs: list[RawMessage]) -> BatchResult:
    """Process ``msgs``, then what they forwarded, until nothing is left to forward."""
    result = await proc.process(msgs)
    pending = log.forwarded(result)
    while pending:
        more = await proc.process(pending)
        result.forwards += more.forwards
        result.segments += more.segments
        result.deadletters += more.deadletters
        result.merged += more.merged
        result.duplicates += more.duplicates
        pending = log.forwarded(more)
    return result


async def test_anonymous_history_and_cart_carry_over_at_login():
    proc, store = make()
    log = Log()
    await run(proc, log, [
        log.message(event("product_view", customer="c1", minute=0, product={
            "product_id": "b1", "category": "books", "price": 10.0})),
        log.message(event("product_view", customer="anon-1", minute=1)),
        log.message(event("cart_add", customer="anon-1", minute=2)),
    ])
    result = await run(proc, log, [log.message(event("identify", customer="anon-1", minute=3,
                                                     identified_as="c1"))])
    assert result.merged == 1 and not result.deadletters
    c1 = await profile(store, "c1")
    assert c1 is not None
    assert c1["cart"]["items"]["p1"]["qty"] == 1 and c1["cart"]["value"] == 50.0
    assert c1["counts"]["product_view"] == 2 and c1["counts"]["cart_add"] == 1
    assert set(c1["affinities"]["categories"]) == {"books", "shoes"}
    assert c1["aliases"] == ["anon-1"]
    # The cart-abandonment timer of the anonymous cart follows the customer (partition 1).
    assert c1["timers"]["cart_abandoned"]["p"] == 1
    anon = await profile(store, "anon-1")
    assert anon is not None and anon["alias_of"] == "c1" and not anon["cart"]["items"]
    moves = [orjson.loads(v) for _, v in result.segments]
    assert moves and {m["reason"] for m in moves} == {"merged"}
    assert {m["customer_id"] for m in moves if m["to"] is None} == {"anon-1"}


async def test_events_under_an_alias_reach_the_customer_once():
    proc, store = make()
    log = Log()
    await run(proc, log, [log.message(event("identify", customer="anon-1",
                                            identified_as="c1"))])
    later = log.message(event("cart_add", customer="anon-1", minute=5))
    first = await run(proc, log, [later])
    assert first.forwarded == 1 and len(first.forwards) == 1
    again = await proc.process([later])  # redelivered: the same forward, from the outbox
    assert again.forwards == first.forwards[:1]
    await proc.process(log.forwarded(again))  # the copy reaches the customer too
    c1 = await profile(store, "c1")
    assert c1 is not None and c1["counts"]["cart_add"] == 1 and c1["cart"]["value"] == 50.0


async def test_a_redelivered_merge_request_is_applied_once():
    proc, store = make()
    log = Log()
    await proc.process([log.message(event("cart_add", customer="anon-1"))])
    identify = log.message(event("identify", customer="anon-1", minute=1, identified_as="c1"))
    result = await proc.process([identify])
    merge = log.forwarded(result)
    assert len(merge) == 1
    await proc.process(merge)
    # The identify redelivered (crash before the offset commit): the same merge request again,
    # which lands at a new offset of the customer's partition and is dropped by its merge id.
    again = await proc.process([identify])
    assert again.forwards == result.forwards
    copy = log.forwarded(again)
    dropped = await proc.process(copy)
    assert dropped.duplicates == 1 and dropped.merged == 0
    c1 = await profile(store, "c1")
    assert c1 is not None and c1["cart"]["items"]["p1"]["qty"] == 1


async def test_one_profile_under_three_identifiers():
    proc, store = make()
    log = Log()
    await run(proc, log, [
        log.message(event("page_view", customer="anon-web", minute=0)),
        log.message(event("product_view", customer="anon-app", minute=1)),
        log.message(event("purchase", customer="card-9", minute=2)),
        log.message(event("product_view", customer="c1", minute=3)),
    ])
    await run(proc, log, [
        log.message(event("identify", customer="anon-web", minute=4, identified_as="c1")),
        log.message(event("identify", customer="anon-app", minute=4, identified_as="c1")),
        log.message(event("identify", customer="card-9", minute=4, identified_as="c1",
                          identifier_kind="loyalty_card")),
    ])
    await run(proc, log, [log.message(event("cart_add", customer=cid, minute=6))
                          for cid in ("anon-web", "anon-app", "card-9")])
    c1 = await profile(store, "c1")
    assert c1 is not None
    assert sorted(c1["aliases"]) == ["anon-app", "anon-web", "card-9"]
    assert c1["counts"]["page_view"] == 1 and c1["counts"]["product_view"] == 2
    assert c1["counts"]["cart_add"] == 3 and c1["purchases"]["orders"] == 1
    for alias in ("anon-web", "anon-app", "card-9"):
        p = await profile(store, alias)
        assert p is not None and p["alias_of"] == "c1" and not p["counts"]


async def test_identify_to_itself_or_to_another_customer_is_dead_lettered():
    proc, store = make()
    log = Log()
    bad = await proc.process([log.message(event("identify", customer="anon-1",
                                                identified_as="anon-1"))])
    assert len(bad.deadletters) == 1
    assert b"identifier itself" in bad.deadletters[0][1]
    await run(proc, log, [log.message(event("identify", customer="anon-1", minute=1,
                                            identified_as="c1"))])
    other = await proc.process([log.message(event("identify", customer="anon-1", minute=2,
                                                  identified_as="c2"))])
    assert len(other.deadletters) == 1 and b"unlink" in other.deadletters[0][1]
    assert (await profile(store, "anon-1") or {}).get("alias_of") == "c1"


async def test_erasing_the_customer_erases_every_alias():
    proc, store = make()
    log = Log()
    await run(proc, log, [log.message(event("cart_add", customer="anon-1")),
                          log.message(event("cart_add", customer="c1"))])
    await run(proc, log, [log.message(event("identify", customer="anon-1", minute=1,
                                            identified_as="c1"))])
    result = await proc.process([log.message(event("erase", customer="c1", minute=2))])
    assert await profile(store, "c1") is None and await profile(store, "anon-1") is None
    assert set(result.erased) == {b"c1", b"anon-1"}


async def test_unlink_ends_the_alias_and_the_customer_forgets_it():
    proc, store = make()
    log = Log()
    await run(proc, log, [log.message(event("identify", customer="anon-1", identified_as="c1"))])
    await run(proc, log, [log.message(event("unlink", customer="anon-1", minute=1))])
    c1 = await profile(store, "c1")
    assert c1 is not None and c1["aliases"] == []
    later = await run(proc, log, [log.message(event("cart_add", customer="anon-1", minute=2))])
    assert later.forwarded == 0
    anon = await profile(store, "anon-1")
    assert anon is not None and "alias_of" not in anon and anon["counts"]["cart_add"] == 1


async def test_consent_after_a_merge_is_the_stricter():
    proc, store = make()
    log = Log()
    await run(proc, log, [
        log.message(event("consent_update", customer="anon-1", purpose="email", granted=False)),
        log.message(event("consent_update", customer="c1", minute=1, purpose="email",
                          granted=True)),
        log.message(event("consent_update", customer="anon-1", minute=1, purpose="sms",
                          granted=True)),
    ])
    await run(proc, log, [log.message(event("identify", customer="anon-1", minute=2,
                                            identified_as="c1"))])
    c1 = await profile(store, "c1")
    assert c1 is not None
    assert c1["consent"]["email"]["granted"] is False and c1["consent"]["sms"]["granted"]
