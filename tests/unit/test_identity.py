"""Identity (docs/identity.md): an identifier's profile merged into its customer's once, events
under an alias forwarded, erasure and unlink; the property that crashes and redeliveries in any
interleaving give the profile of one clean pass."""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka.errors import KafkaConnectionError
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.events.codec import RawMessage, parse_ts
from streamproc.learning.observations import parse
from streamproc.models.join import LabelJoin
from streamproc.processor import BatchResult, Processor
from streamproc.segments.segmenter import Segmenter
from streamproc.state.memory import MemoryStore
from streamproc.worker.agents import BatchStats, handle_batch
from streamproc.worker.metrics import WorkerMetrics

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


async def test_the_learner_s_pending_moments_follow_the_customer():
    proc, _ = make()
    log = Log()
    result = await proc.process([log.message(event("identify", customer="anon-1",
                                                   identified_as="c1"))])
    aliases = [parse(v) for _, v in result.learning if parse(v).kind == "alias"]
    assert [(o.customer_id, o.to) for o in aliases] == [("anon-1", "c1")]
    # The learner's join: a moment of the anonymous visitor, then the login, then a purchase
    # of the customer within the horizon: the moment is labelled a purchase.
    join = LabelJoin(horizon_ms=1_000, lateness_ms=0)
    join.snapshot("anon-1", "e1", 100, {"x": 1.0}, 0.2, "browsing:0")
    assert join.rename("anon-1", "c1") == 1
    join.purchase("c1", "e2", 500, "browsing:0")
    labels = join.snapshot("c9", "e3", 5_000, {"x": 0.0}, 0.1, "browsing:0")
    assert [(lab.customer_id, lab.label) for lab in labels] == [("c1", True)]


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


# -- the property: any interleaving, redeliveries and crashes give the clean pass's profile ----

PARTITION_OF = {"anon-1": 0, "anon-2": 0, "card-1": 2, "c1": 1}
# card-1 belongs to c1; anon-1 too; anon-2 to card-1 (a chain: it reaches c1 through card-1).
IDENTIFIED_AS = {"anon-1": "c1", "card-1": "c1", "anon-2": "card-1"}
CATEGORIES = ("shoes", "books", "toys")


class Broker:
    """Topic-partition logs with a committed offset each, as a consumer group sees them."""

    def __init__(self) -> None:
        self.logs: dict[tuple[str, int], list[RawMessage]] = {}
        self.committed: dict[tuple[str, int], int] = {}

    def append(self, body: dict[str, Any], topic: str) -> None:
        part = PARTITION_OF[body["customer_id"]]
        log = self.logs.setdefault((topic, part), [])
        value = orjson.dumps(body)
        log.append(RawMessage(topic, part, len(log), body["customer_id"].encode(), value,
                              parse_ts(body["ts"])))

    def pending(self) -> list[tuple[str, int]]:
        return sorted(p for p, log in self.logs.items() if self.committed.get(p, 0) < len(log))

    def batch(self, place: tuple[str, int], size: int) -> list[RawMessage]:
        start = self.committed.get(place, 0)
        return self.logs[place][start:start + size]

    def publish(self, result: BatchResult) -> None:
        for to, _, value in result.forwards:
            self.append(orjson.loads(value), TOPIC_NAMES[to])


def inputs(kinds: list[tuple[str, str, int]], identify_at: dict[str, int]
           ) -> list[tuple[dict[str, Any], str]]:
    """The producers' events, in order: (kind, customer, category) each, and each identifier's
    identify after that many of the events."""
    out: list[tuple[dict[str, Any], str]] = []
    for i, (kind, cid, cat) in enumerate(kinds):
        for ident, at in identify_at.items():
            if at == i:
                out.append((event("identify", customer=ident, minute=i % 60,
                                  identified_as=IDENTIFIED_AS[ident]), "profiles"))
        product = {"product_id": f"p{i}", "category": CATEGORIES[cat], "price": 10.0 + i}
        fields: dict[str, Any] = {
            "page_view": {"page_type": "category", "category": CATEGORIES[cat]},
            "product_view": {"product": product},
            "cart_add": {"product": product, "quantity": 1 + cat},
            "purchase": {"order_id": f"o{i}", "amount": 20.0 + i,
                         "lines": [{"product_id": f"b{i}", "category": CATEGORIES[cat],
                                    "quantity": 1, "unit_price": 20.0 + i}]},
        }[kind]
        out.append((event(kind, customer=cid, minute=i % 60, **fields),
                    "purchases" if kind == "purchase" else "browsing"))
    for ident, at in identify_at.items():
        if at >= len(kinds):
            out.append((event("identify", customer=ident, minute=59,
                              identified_as=IDENTIFIED_AS[ident]), "profiles"))
    return out


def merged_view(p: dict[str, Any]) -> dict[str, Any]:
    """What a merge must get right whatever the order of arrival (the current session and the
    latest-wins fields follow the order of arrival by design: docs/identity.md)."""
    return {
        "counts": {k: v for k, v in p["counts"].items() if k != "sessions"},
        "cart": {pid: line["qty"] for pid, line in p["cart"]["items"].items()},
        "cart_value": p["cart"]["value"],
        "purchases": {k: p["purchases"][k] for k in ("orders", "total", "days")},
        "categories": p["categories"],
        "activity": p["activity"],
        "affinities": sorted(p["affinities"]["categories"]),
        "aliases": sorted(p.get("aliases", [])),
        "first_seen_ms": p["first_seen_ms"], "last_seen_ms": p["last_seen_ms"],
    }


async def consume(broker: Broker, rnd: Any, crashes: int) -> MemoryStore:
    """Consume every log to the end in a random interleaving and batch cut, with up to
    ``crashes`` crashes: after the write and before the publish, or after the publish and
    before the commit (the next worker starts with an empty cache)."""
    proc, store = make()
    while pending := broker.pending():
        place = rnd.choice(pending)
        msgs = broker.batch(place, rnd.randint(1, 3))
        crash = rnd.choice(("none", "none", "written", "published")) if crashes else "none"
        result = await proc.process(msgs)
        if crash == "written":
            crashes -= 1
            proc, _ = make(store)
            continue
        broker.publish(result)
        if crash == "published":
            crashes -= 1
            proc, _ = make(store)
            continue
        broker.committed[place] = msgs[-1].offset + 1
    return store


@settings(max_examples=50, deadline=None)
@given(
    kinds=st.lists(st.tuples(st.sampled_from(["page_view", "product_view", "cart_add",
                                              "purchase"]),
                             st.sampled_from(sorted(PARTITION_OF)), st.integers(0, 2)),
                   min_size=1, max_size=14),
    at=st.tuples(*(st.integers(0, 15) for _ in IDENTIFIED_AS)),
    rnd=st.randoms(use_true_random=False),
    crashes=st.integers(0, 4),
)
async def test_any_interleaving_redeliveries_and_crashes_give_the_clean_pass(
        kinds: list[tuple[str, str, int]], at: tuple[int, ...], rnd: Any, crashes: int) -> None:
    produced = inputs(kinds, dict(zip(IDENTIFIED_AS, at, strict=True)))
    messy, clean = Broker(), Broker()
    for body, topic in produced:
        messy.append(body, TOPIC_NAMES[topic])
        clean.append(body, TOPIC_NAMES[topic])
    store = await consume(messy, rnd, crashes)
    # The clean pass: each log read whole, one after the other, no crash.
    proc, reference = make()
    while pending := clean.pending():
        msgs = clean.batch(pending[0], 10_000)
        clean.publish(await proc.process(msgs))
        clean.committed[pending[0]] = msgs[-1].offset + 1
    got, want = await profile(store, "c1"), await profile(reference, "c1")
    assert got is not None and want is not None
    assert merged_view(got) == merged_view(want)
    # ... and that is every event once, under one profile.
    typed: dict[str, int] = {}
    for kind, _, _ in kinds:
        typed[kind] = typed.get(kind, 0) + 1
    assert merged_view(got)["counts"] == typed
    assert merged_view(got)["aliases"] == sorted(IDENTIFIED_AS)
    for ident, target in IDENTIFIED_AS.items():
        alias = await profile(store, ident)
        assert alias is not None and alias["alias_of"] == target and not alias["counts"]


class FlakyEmitter:
    """Refuses every other publish (a transient Kafka error), so each batch is processed again
    after its writes went through: what it applied comes back as redelivered."""

    def __init__(self) -> None:
        self.calls = 0
        self.published: list[BatchResult] = []

    async def emit(self, result: BatchResult) -> None:
        self.calls += 1
        if self.calls % 2:
            raise KafkaConnectionError("the broker went away")
        self.published.append(result)


async def test_identity_steps_count_once_in_the_worker_metrics():
    """streamproc_identity_merges_total, _links_total{change} and _forwarded_total move once
    per applied step: not when a batch is processed again after a failed publish, nor for a
    profile_merge or an event published twice."""
    proc, store = make()
    log, emitter, stats, metrics = Log(), FlakyEmitter(), BatchStats(), WorkerMetrics()

    async def batch(msgs: list[RawMessage]) -> BatchResult:
        await handle_batch(msgs, proc, emitter, stats, metrics)  # type: ignore[arg-type]
        return emitter.published[-1]

    def value(name: str, **labels: str) -> float:
        return metrics.value(name, **labels) or 0.0

    await batch([log.message(event("product_view", customer="anon-1", minute=1))])
    linked = await batch([log.message(event("identify", customer="anon-1", minute=2,
                                            identified_as="c1"))])
    assert linked.redelivered == 1 and len(linked.forwards) == 1  # its outbox, published
    merge = log.forwarded(linked)
    await batch(merge)
    await batch([RawMessage(m.topic, m.partition, m.offset + 1, m.key, m.value, m.timestamp_ms)
                 for m in merge])  # the same profile_merge published twice
    assert value("streamproc_identity_links_total", change="linked") == 1
    assert value("streamproc_identity_merges_total") == 1
    c1 = await profile(store, "c1")
    assert c1 is not None and c1["aliases"] == ["anon-1"]

    later = log.message(event("cart_add", customer="anon-1", minute=3))
    forwarded = await batch([later])
    await batch([later])  # redelivered
    assert len(forwarded.forwards) == 1 and value("streamproc_identity_forwarded_total") == 1
    await batch([log.message(event("unlink", customer="anon-1", minute=4))])
    assert value("streamproc_identity_links_total", change="unlinked") == 1
    assert value("streamproc_identity_links_total", change="linked") == 1
    assert value("streamproc_identity_merges_total") == 1
    assert stats.retries == emitter.calls // 2
