"""The processor's cache of the profiles it wrote (STREAMPROC_PROFILE_CACHE): the same results as
parsing what the store holds, in every path that reads a customer (events, redeliveries, lost
writes, timers, erasure, a poison event), and nothing left behind by a batch that failed."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis.exceptions

from streamproc import processor as processor_module
from streamproc.events.codec import RawMessage, parse_ts
from streamproc.events.partitioner import partition_for
from streamproc.learning.scorer import IntentScorer
from streamproc.processor import Processor
from streamproc.segments.segmenter import Segmenter
from streamproc.settings import Settings
from streamproc.simulator import Population, generate_events
from streamproc.state.keys import customer_key
from streamproc.state.memory import MemoryStore
from streamproc.state.store import Stored

from .helpers import SETTINGS, Partition, event

NOW_MS = 1_772_359_200_050
PARTITIONS = 3


def simulated_log(customers: int, events: int) -> list[RawMessage]:
    """Simulated events as a worker reads them (a few partitions per topic), with an erasure
    of one customer in the middle."""
    sims = list(itertools.islice(
        generate_events(Population.generate(customers, 5), datetime(2026, 3, 2, tzinfo=UTC), 5),
        events))
    offsets: dict[tuple[str, int], int] = {}
    log = []
    for i, sim in enumerate(sims):
        body = sim.event
        if i == events // 2:  # the first customer asks to be forgotten, then comes back
            body = {"event_id": "erase-1", "type": "erase", "customer_id": sims[0].key,
                    "ts": body["ts"]}
        topic = getattr(SETTINGS.topics, "profiles" if body["type"] == "erase" else sim.topic)
        partition = partition_for(sim.key.encode(), PARTITIONS)
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        log.append(RawMessage(topic, partition, offset, body["customer_id"].encode(),
                              orjson.dumps(body), parse_ts(body["ts"])))
    return log


class LosingEveryFifthWrite(MemoryStore):
    """Another writer bumps the first customer of every fifth write: that write loses and the
    customer is read and computed again."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def _race(self, writes: Any) -> None:
        self.writes += 1
        if writes and self.writes % 5 == 0:
            key = customer_key(writes[0].customer_id)
            now = self.rows.get(key, Stored(0, None, None))
            self.rows[key] = Stored(now.version + 1, now.doc, now.outbox)

    async def save(self, writes):  # type: ignore[no-untyped-def]
        self._race(writes)
        return await super().save(writes)

    async def save_then_due(self, writes, *args):  # type: ignore[no-untyped-def]
        self._race(writes)
        return await super().save_then_due(writes, *args)


def make(settings: Settings, store: MemoryStore) -> Processor:
    return Processor(settings, store, clock_ms=lambda: NOW_MS,
                     segmenter=Segmenter(settings, clock=lambda: 0.0),
                     scorer=IntentScorer(settings))


async def replay(cache: int, log: list[RawMessage]) -> dict[str, Any]:
    """Everything ``log`` gives in batches of 37, with two ranges read again (a crash before
    the commit), on a store that loses some writes: outputs per batch and what is stored."""
    settings = dataclasses.replace(SETTINGS, timer_lateness_seconds=0, profile_cache=cache)
    store = LosingEveryFifthWrite()
    proc = make(settings, store)
    batches = [log[i:i + 37] for i in range(0, len(log), 37)]
    batches[9:9] = batches[5:8]  # redelivered
    outputs = []
    for batch in batches:
        result = await proc.process(batch)
        await proc.settle(result)
        outputs.append((result.decisions, result.segments, result.learning, result.deadletters,
                        result.erased, result.applied, result.redelivered, result.timers_fired))
    return {"outputs": outputs, "rows": store.rows, "zsets": store.zsets,
            "latest": store.latest, "kept": len(proc._kept), "hits": proc.cache_hits,
            "lost": store.writes, "shared": [cid for cid, k in proc._kept.items()
                                             if shares_containers(k.profile, k.outputs)]}


def containers(root: Any) -> list[int]:
    """The ids of the dicts and lists reachable from ``root``, once per time reached."""
    found, todo = [], [root]
    while todo:
        node = todo.pop()
        if isinstance(node, dict | list):
            found.append(id(node))
            todo.extend(node.values() if isinstance(node, dict) else node)
    return found


def shares_containers(profile: Any, outputs: Any) -> bool:
    """Whether a dict or list of a kept profile is reached twice, from the profile or from its
    outputs. Parsing never gives that, so such a profile could change where its parsed copy
    would not. (Outputs may share what nobody changes: one event's segment moves share its
    trigger.)"""
    inside = containers(profile)
    return len(set(inside)) < len(inside) or not set(inside).isdisjoint(containers(outputs))


@pytest.fixture(scope="module")
def stream() -> list[RawMessage]:
    return simulated_log(customers=40, events=1500)


async def test_cached_profiles_give_what_parsing_the_store_gives(stream, monkeypatch) -> None:
    real_apply = processor_module.apply_event

    def poisoned(p, type_, ts_ms, data, config):  # type: ignore[no-untyped-def]
        real_apply(p, type_, ts_ms, data, config)  # changes the profile, then fails
        if type_ == "search" and (ts_ms // 1000) % 4 == 0:
            raise RuntimeError("profile bug")

    monkeypatch.setattr(processor_module, "apply_event", poisoned)
    parsed = await replay(0, stream)
    assert parsed["kept"] == parsed["hits"] == 0
    for cache in (5, 10_000):  # some evicted, and all kept
        cached = await replay(cache, stream)
        assert 0 < cached["kept"] <= cache and cached["hits"] > 0
        assert cached["outputs"] == parsed["outputs"]
        assert cached["rows"] == parsed["rows"]
        assert cached["zsets"] == parsed["zsets"]
        assert cached["latest"] == parsed["latest"]
        assert cached["shared"] == []
    # The stream went through every path the cache must follow.
    outputs = parsed["outputs"]
    assert sum(o[6] for o in outputs) > 0, "no redelivery"
    assert sum(o[7] for o in outputs) > 0, "no timer fired"
    assert any(o[4] for o in outputs), "no erasure"
    assert any(o[3] for o in outputs), "no poison event"
    assert parsed["lost"] >= 5, "no lost write"
    assert parsed["latest"], "no latest decision"


class CountingParses:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = processor_module.unpack_doc

        def counting(blob: bytes) -> dict[str, Any]:
            self.calls += 1
            return real(blob)

        monkeypatch.setattr(processor_module, "unpack_doc", counting)


async def test_a_customer_written_by_this_worker_is_not_parsed_again(monkeypatch) -> None:
    parses = CountingParses(monkeypatch)
    store = MemoryStore()
    proc = make(SETTINGS, store)
    part = Partition()
    await proc.process([part.message(event("page_view"))])
    await proc.process([part.message(event("cart_add", minute=1))])
    assert parses.calls == 0
    # Another writer changed the stored profile: it is parsed, not taken from the cache.
    key = customer_key("c1")
    other = make(SETTINGS, store)
    await other.process([Partition(partition=1).message(event("search"))])
    parses.calls = 0
    await proc.process([part.message(event("checkout", minute=2))])
    assert parses.calls == 1
    found = await store.read_profile("c1")
    assert found is not None and found["profile"]["counts"]["search"] == 1
    assert store.rows[key].version == 4


async def test_a_batch_that_failed_leaves_no_changed_profile_behind(monkeypatch) -> None:
    class FailingOnce(MemoryStore):
        failed = False

        async def save_then_due(self, writes, *args):  # type: ignore[no-untyped-def]
            if not self.failed:
                self.failed = True
                raise redis.exceptions.ConnectionError("Redis went away")
            return await super().save_then_due(writes, *args)

    part = Partition()
    first = part.message(event("page_view"))
    second = [part.message(event("cart_add", minute=1)), part.message(event("checkout",
                                                                              minute=2))]
    clean_store = MemoryStore()
    clean = make(SETTINGS, clean_store)
    await clean.process([first])
    want = await clean.process(second)

    store = FailingOnce()
    store.failed = True  # the first batch goes through
    proc = make(SETTINGS, store)
    await proc.process([first])
    store.failed = False
    with pytest.raises(redis.exceptions.ConnectionError):
        await proc.process(second)  # applied to the cached profile, never written
    got = await proc.process(second)  # the worker retries the batch
    assert got.applied == 2 and got.redelivered == 0
    assert got.decisions == want.decisions and got.segments == want.segments
    assert store.rows == clean_store.rows
