"""A worker killed with SIGKILL mid-stream and restarted ends with exactly the true totals.

The events come from the simulator's pure generator (fixed seed), re-keyed to customer ids
unique to the run, with producer duplicates (the same event re-sent: same event_id, a new
offset) mixed in. The first worker is frozen (SIGSTOP) at a moment when it has written state
for messages whose offsets the consumer group has not committed yet, checked against Redis and
the group's committed offsets while nothing can move, and then killed with SIGKILL. So the
restarted worker is certain to get a redelivery (offsets ``committed .. last applied`` of some
partition), and must skip it: every customer's orders, purchase total (to the cent) and counts
per event type must equal the ground truth computed from the events, each event_id once.

Decisions may be published twice (a batch redelivered after the crash publishes its outbox
again) but always with the same decision id, trigger and action, and only for redelivered
messages; no cart add or purchase may be left without its decision.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    NotCoordinatorForGroupError,
)

from streamproc.events.schemas import load_event_schemas
from streamproc.simulator import Population, generate_events
from streamproc.state.store import RedisStore

from .conftest import Env

pytestmark = pytest.mark.integration

SEED = 11
CUSTOMERS = 200
EVENTS = 8000
START = datetime(2026, 3, 1, tzinfo=UTC)
DUPLICATE_EVERY = 40  # one producer duplicate per 40 events, re-sent a few events later
FIRST_CHUNK = 3000  # produced before the first worker starts
STREAMED_CHUNK = 3000  # produced while the first worker runs (it is killed during this part)
# the rest is produced only after the kill, so the first worker cannot have applied everything

# Faust's defaults keep a SIGKILLed member in the group for 60 s (the session timeout), which
# would stall the restarted worker's rebalance that long. Faust reads these from the
# environment; they only apply to the workers this test starts.
FAST_GROUP = {"BROKER_SESSION_TIMEOUT": "10", "BROKER_HEARTBEAT_INTERVAL": "1"}
EVENT_TYPES = tuple(load_event_schemas())


@dataclass
class Truth:
    counts: Counter[str] = field(default_factory=Counter)
    orders: int = 0
    cents: int = 0

    @property
    def events(self) -> int:
        return sum(self.counts.values())


Item = tuple[str, dict[str, Any]]  # (logical topic, event)


def build_stream(run: str) -> tuple[list[Item], dict[str, Truth], int]:
    """The simulated events re-keyed for this run, with producer duplicates mixed in.

    Returns the stream in send order, the ground truth per customer (each event_id once) and
    the number of duplicates. A duplicate follows its original by 3 to 15 events of the whole
    stream, so well within the customer's dedupe window (64 event ids).
    """
    population = Population.generate(CUSTOMERS, seed=SEED)
    stream: list[Item] = []
    truth: dict[str, Truth] = {}
    later: dict[int, list[Item]] = {}
    duplicates = 0
    sim = itertools.islice(generate_events(population, START, seed=SEED), EVENTS)
    for i, sim_event in enumerate(sim):
        event = dict(sim_event.event)
        event["customer_id"] = f"cr{run}-{event['customer_id']}"
        stream.append((sim_event.topic, event))
        t = truth.setdefault(event["customer_id"], Truth())
        t.counts[event["type"]] += 1
        if event["type"] == "purchase":
            t.orders += 1
            t.cents += round(event["amount"] * 100)
        if i % DUPLICATE_EVERY == 7:
            later.setdefault(i + 3 + i % 13, []).append((sim_event.topic, event))
            duplicates += 1
        stream.extend(later.pop(i, []))
    stream.extend(item for items in later.values() for item in items)
    return stream, truth, duplicates


def applied_total(profile: dict[str, Any]) -> int:
    counts = profile.get("counts", {})
    return sum(counts.get(t, 0) for t in EVENT_TYPES)


@dataclass
class Snapshot:
    applied: dict[str, int]  # events applied per customer
    last_offsets: dict[str, int]  # highest applied offset per "topic:partition"
    profiles: dict[str, dict[str, Any]]

    @property
    def total(self) -> int:
        return sum(self.applied.values())


async def snapshot(redis: aioredis.Redis, customers: Iterable[str]) -> Snapshot:
    # Through the store, which knows how documents are encoded (JSON, or compressed).
    store = RedisStore(redis)
    profiles = {}
    for cid in customers:
        stored = await store.read_profile(cid)
        if stored is not None:
            profiles[cid] = stored["profile"]
    last: dict[str, int] = {}
    for p in profiles.values():
        for source, offset in p.get("applied", {}).items():
            last[source] = max(last.get(source, -1), offset)
    return Snapshot({cid: applied_total(p) for cid, p in profiles.items()}, last, profiles)


async def committed_offsets(env: Env) -> dict[str, int]:
    """The consumer group's committed offsets (the next offset to read), by "topic:partition"."""
    admin = AIOKafkaAdminClient(bootstrap_servers=env.settings.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(env.settings.app_id)
    except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError,
            NotCoordinatorForGroupError):
        # A fresh broker creates its offsets topic on the first group lookup: until the
        # coordinator is ready, nothing can have been committed.
        return {}
    finally:
        await admin.close()
    return {f"{tp.topic}:{tp.partition}": om.offset for tp, om in offsets.items() if om.offset >= 0}


async def end_offsets(env: Env) -> dict[str, int]:
    """The last offset of every non-empty input partition, by "topic:partition"."""
    consumer = AIOKafkaConsumer(bootstrap_servers=env.settings.kafka_bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for topic in env.settings.topics.inputs
               for p in range(env.settings.partitions)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {f"{tp.topic}:{tp.partition}": end - 1 for tp, end in ends.items() if end > 0}


async def produce_chunk(env: Env, items: list[Item]) -> None:
    """Through the fixture's helper, one topic at a time (order within a topic is kept)."""
    for logical in ("browsing", "purchases", "profiles"):
        events = [e for t, e in items if t == logical]
        if events:
            await env.produce_events(getattr(env.settings.topics, logical), events)


async def stream_chunk(env: Env, items: list[Item], per_tick: int = 50,
                       tick_s: float = 0.1) -> None:
    """Send ``items`` at a steady pace (about 500 a second, so the offset
    commits, every 2.8 s, happen in the middle of it), as live traffic would arrive."""
    producer = AIOKafkaProducer(bootstrap_servers=env.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for start in range(0, len(items), per_tick):
            for logical, event in items[start:start + per_tick]:
                await producer.send(getattr(env.settings.topics, logical), orjson.dumps(event),
                                    key=event["customer_id"].encode())
            await asyncio.sleep(tick_s)
        await producer.flush()
    finally:
        await producer.stop()


def alive(env: Env, proc: subprocess.Popen[bytes]) -> None:
    assert proc.poll() is None, f"worker exited with {proc.returncode}:\n{env.worker_log()}"


async def uncommitted(env: Env, redis: aioredis.Redis, cids: list[str],
                      warm_up: int) -> dict[str, tuple[int, int]]:
    """Per "topic:partition", the applied offsets at or past the committed one (both ends
    inclusive); empty unless ``warm_up`` events were applied and something was committed."""
    committed = await committed_offsets(env)
    state = await snapshot(redis, cids)
    if state.total < warm_up or not committed:
        return {}
    return {
        source: (committed.get(source, 0), last)
        for source, last in state.last_offsets.items()
        if last >= committed.get(source, 0)
    }


def size(window: dict[str, tuple[int, int]]) -> int:
    return sum(last - committed + 1 for committed, last in window.values())


async def kill_mid_stream(env: Env, redis: aioredis.Redis, proc: subprocess.Popen[bytes],
                          customers: Iterable[str], sender: asyncio.Task[None],
                          warm_up: int, wanted: int,
                          timeout: float = 60.0) -> tuple[Snapshot, dict[str, tuple[int, int]]]:
    """SIGKILL ``proc`` once it has applied messages that are not committed yet: ``wanted`` of
    them while ``sender`` still streams, any number once it is done.

    Returns the state at the kill and, per "topic:partition", the offsets that will be
    redelivered and were already applied: (committed, last applied), both inclusive.
    """
    cids = list(customers)
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, (
            f"no applied-but-uncommitted messages seen within {timeout}s:\n{env.worker_log()}")
        alive(env, proc)
        await asyncio.sleep(0.2)
        if size(await uncommitted(env, redis, cids, warm_up)) < (1 if sender.done() else wanted):
            continue
        # Freeze the worker, let in-flight writes and commits land, then look again: now
        # nothing moves. (Freezing it on every poll would hold back its commit timer.)
        proc.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(0.3)
            window = await uncommitted(env, redis, cids, warm_up)
            if window:
                state = await snapshot(redis, cids)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                return state, window
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)


async def wait_complete(env: Env, redis: aioredis.Redis, proc: subprocess.Popen[bytes],
                        truth: dict[str, Truth], timeout: float = 90.0) -> Snapshot:
    """Until every customer has its expected number of events applied and every input
    message (duplicates included) has been consumed and recorded."""
    ends = await end_offsets(env)
    deadline = time.monotonic() + timeout
    while True:
        alive(env, proc)
        state = await snapshot(redis, truth)
        behind = [cid for cid, t in truth.items() if state.applied.get(cid, 0) < t.events]
        unread = {s: e for s, e in ends.items() if state.last_offsets.get(s, -1) < e}
        if not behind and not unread:
            return state
        if time.monotonic() > deadline:
            expected = sum(t.events for t in truth.values())
            pytest.fail(f"after {timeout}s {len(behind)} customers are behind "
                        f"({state.total} of {expected} events applied), partitions not fully "
                        f"read: {unread}. Worker log:\n{env.worker_log()}")
        await asyncio.sleep(0.5)


async def stream_once_consuming(env: Env, redis: aioredis.Redis, truth: dict[str, Truth],
                                proc: subprocess.Popen[bytes], items: list[Item],
                                timeout: float = 60.0) -> None:
    """Once the worker has applied its first event, send ``items`` as live traffic."""
    deadline = time.monotonic() + timeout
    while (await snapshot(redis, truth)).total == 0:
        if proc.poll() not in (None, -signal.SIGKILL):
            pytest.fail(f"worker exited with {proc.returncode}:\n{env.worker_log()}")
        assert time.monotonic() < deadline, f"worker not consuming:\n{env.worker_log()}"
        await asyncio.sleep(0.2)
    await stream_chunk(env, items)


async def test_sigkilled_worker_restarts_with_exact_totals(stack_env: Env,
                                                           test_redis: aioredis.Redis) -> None:
    began = time.monotonic()
    run = uuid.uuid4().hex[:8]
    stream, truth, duplicates = build_stream(run)
    expected_total = sum(t.events for t in truth.values())
    assert expected_total == EVENTS and len(stream) == EVENTS + duplicates
    assert sum(t.orders for t in truth.values()) > 20, "the stream should include purchases"
    stack_env.env.update(FAST_GROUP)
    first, streamed = stream[:FIRST_CHUNK], stream[FIRST_CHUNK:FIRST_CHUNK + STREAMED_CHUNK]
    rest = stream[FIRST_CHUNK + STREAMED_CHUNK:]

    try:
        await produce_chunk(stack_env, first)
        worker = stack_env.start_worker()
        # Traffic keeps arriving while the first worker runs; it is killed in the middle of it.
        sender = asyncio.create_task(
            stream_once_consuming(stack_env, test_redis, truth, worker, streamed))
        at_kill, window = await kill_mid_stream(stack_env, test_redis, worker, truth, sender,
                                                warm_up=FIRST_CHUNK // 3, wanted=300)
        killed_at = time.monotonic() - began
        assert 0 < at_kill.total < expected_total
        redelivered = size(window)
        assert redelivered > 0
        await sender
        await produce_chunk(stack_env, rest)

        restarted_at = time.monotonic()
        restarted = stack_env.start_worker()  # same consumer group: resumes from the commits
        final = await wait_complete(stack_env, test_redis, restarted, truth)
        recovered_s = time.monotonic() - restarted_at

        wrong = {}
        for cid, t in truth.items():
            p = final.profiles[cid]
            got = (p["purchases"]["orders"], round(p["purchases"]["total"] * 100),
                   {k: v for k, v in p["counts"].items() if k in EVENT_TYPES})
            want = (t.orders, t.cents, dict(t.counts))
            if got != want:
                wrong[cid] = {"got": got, "want": want}
        assert not wrong, f"{len(wrong)} customers differ from the ground truth: " + str(
            dict(itertools.islice(wrong.items(), 3)))
        stored = [k async for k in test_redis.scan_iter(match=f"sp:{{cr{run}-*", count=1000)]
        assert len(stored) == len(truth)

        # Every cart add and purchase has its decision; a decision seen twice is the same one,
        # republished for a redelivered message.
        needed = {e["event_id"] for _, e in stream if e["type"] in {"cart_add", "purchase"}}
        seen: set[str] = set()
        read = 0

        def all_decided(records: list[dict[str, Any]]) -> bool:
            nonlocal read
            seen.update(r["value"]["trigger"]["event_id"] for r in records[read:])
            read = len(records)
            return needed <= seen

        records = await stack_env.consume_until(stack_env.settings.topics.decisions,
                                                all_decided, timeout=60)
        by_id: dict[str, list[dict[str, Any]]] = {}
        # One event may fire several catalogue triggers (a cart add that makes intent hot):
        # one id per event and trigger.
        ids_by_trigger: dict[tuple[str, str], set[str]] = {}
        for r in records:
            d = r["value"]
            by_id.setdefault(d["decision_id"], []).append(d)
            ids_by_trigger.setdefault((d["trigger"]["event_id"], d["trigger"]["name"]),
                                      set()).add(d["decision_id"])
        assert all(len(ids) == 1 for ids in ids_by_trigger.values()), "a replay changed an id"
        republished = 0
        for copies in by_id.values():
            one = copies[0]
            for other in copies[1:]:
                republished += 1
                assert (other["trigger"], other["action"]) == (one["trigger"], one["action"])
                source = f"{one['trigger']['topic']}:{one['trigger']['partition']}"
                assert source in window, f"republished decision outside the redelivery: {one}"
                low, high = window[source]
                assert low <= one["trigger"]["offset"] <= high, one
        print(f"\ncrash recovery: {len(stream)} messages ({EVENTS} events + {duplicates} "
              f"producer duplicates) for {len(truth)} customers; SIGKILL at {killed_at:.1f}s "
              f"with {at_kill.total} events applied; {redelivered} applied-but-uncommitted "
              f"messages redelivered on {len(window)} partitions; {len(by_id)} decisions, "
              f"{republished} published twice; the restarted worker caught up in "
              f"{recovered_s:.1f}s; done in {time.monotonic() - began:.1f}s")
    finally:
        # Through the store's erase, which also takes the customers out of the (global) RFM
        # histograms of database 15, so other tests find them as they were.
        store = RedisStore(test_redis)
        for cid in truth:
            await store.erase(cid)
        keys = [k async for k in test_redis.scan_iter(match=f"sp:{{cr{run}-*", count=1000)]
        if keys:
            await test_redis.delete(*keys)
