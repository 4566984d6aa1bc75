"""Simulated traffic with a ground truth, for the integration tests that start workers.

The events come from the simulator's pure generator (fixed seed), re-keyed to customer ids
unique to the run, with producer duplicates (the same event re-sent: same event_id, a new
offset) mixed in; :class:`Truth` is what every customer's profile must add up to, each event_id
counted once. Used by the crash-recovery, SIGTERM and many-workers tests.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from streamproc.decisions.decision_log import read_topic
from streamproc.events.schemas import load_event_schemas
from streamproc.processor import event_token
from streamproc.simulator import Population, generate_events
from streamproc.state.store import RedisStore
from streamproc.worker import status
from streamproc.worker.heartbeat import read_beats

from .conftest import Env
from .polling import until

SEED = 11
START = datetime(2026, 3, 1, tzinfo=UTC)
DUPLICATE_EVERY = 40  # one producer duplicate per 40 events, re-sent a few events later
EVENT_TYPES = tuple(load_event_schemas())


@dataclass
class Truth:
    counts: Counter[str] = field(default_factory=Counter)
    orders: int = 0
    cents: int = 0
    ids: dict[str, str] = field(default_factory=dict)  # event_id -> type, in send order

    @property
    def events(self) -> int:
        return sum(self.counts.values())


Item = tuple[str, dict[str, Any]]  # (logical topic, event)


def profiled_throughout(event: dict[str, Any]) -> bool:
    """False for a simulated customer's withdrawal of personalisation consent (their banner's
    "no", or a later change): the tests built on these streams add up what every profile and
    the learner must hold, which a withdrawal would cut short (the profile reduced to its
    consent record: tests/integration/test_consent.py tests that), so they leave those out."""
    return not (event["type"] == "consent_update" and event["purpose"] == "personalisation"
                and not event["granted"])


def build_stream(run: str, customers: int, events: int, seed: int = SEED,
                 tag: str = "cr") -> tuple[list[Item], dict[str, Truth], int]:
    """The simulated events re-keyed for this run, with producer duplicates mixed in.

    Returns the stream in send order, the ground truth per customer (each event_id once) and
    the number of duplicates. A duplicate follows its original by 3 to 15 events of the whole
    stream, so well within the customer's dedupe window (64 event ids).
    """
    population = Population.generate(customers, seed=seed)
    stream: list[Item] = []
    truth: dict[str, Truth] = {}
    later: dict[int, list[Item]] = {}
    duplicates = 0
    sim = itertools.islice((e for e in generate_events(population, START, seed=seed)
                            if profiled_throughout(e.event)), events)
    for i, sim_event in enumerate(sim):
        event = dict(sim_event.event)
        event["customer_id"] = f"{tag}{run}-{event['customer_id']}"
        stream.append((sim_event.topic, event))
        t = truth.setdefault(event["customer_id"], Truth())
        t.counts[event["type"]] += 1
        t.ids[event["event_id"]] = event["type"]
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
    found = await status.committed_offsets(env.settings)
    return {f"{topic}:{p}": offset for (topic, p), offset in found.items()}


async def end_offsets(env: Env) -> dict[str, int]:
    """The last offset of every non-empty input partition, by "topic:partition"."""
    found = await status.end_offsets(env.settings)
    return {f"{topic}:{p}": end - 1 for (topic, p), end in found.items() if end > 0}


async def streaming(env: Env, beyond: int, timeout: float = 60.0) -> None:
    """Until the test's input topics hold more than ``beyond`` records: the live traffic sent
    after a backlog of ``beyond`` is on them (the moment to break something mid-stream)."""
    async def flowing() -> bool:
        return sum(last + 1 for last in (await end_offsets(env)).values()) > beyond

    await until(f"live traffic after the {beyond} records of the backlog", flowing, timeout,
                env.worker_log)


async def produce_chunk(env: Env, items: list[Item]) -> None:
    """Through the fixture's helper, one topic at a time (order within a topic is kept)."""
    for logical in ("browsing", "purchases", "profiles"):
        events = [e for t, e in items if t == logical]
        if events:
            await env.produce_events(getattr(env.settings.topics, logical), events)


async def stream_chunk(env: Env, items: list[Item], per_tick: int = 50,
                       tick_s: float = 0.1, until: asyncio.Event | None = None) -> None:
    """Send ``items`` at a steady pace (about 500 a second, so the offset
    commits, every 2.8 s, happen in the middle of it), as live traffic would arrive; once
    ``until`` is set, send what is left at once."""
    async with env.producer() as sends:
        for start in range(0, len(items), per_tick):
            for logical, event in items[start:start + per_tick]:
                await sends.send(getattr(env.settings.topics, logical), orjson.dumps(event),
                                 key=event["customer_id"].encode())
            if until is None or not until.is_set():
                await asyncio.sleep(tick_s)  # pacing the traffic, not waiting on a result


async def dead_letters_of(env: Env, customers: set[str]) -> list[str]:
    """The dead letters keyed by these customers (reason and error), to say why a customer is
    behind: an event dead-lettered is accounted for, one missing is lost."""
    try:
        async with asyncio.timeout(20):
            records = await read_topic(env.settings, env.settings.topics.deadletter)
    except TimeoutError:
        return ["(gave up reading the dead-letter topic after 20 s)"]
    return [f"{r['reason']}: {r['error']}"[:400] for r in records
            if r and (r.get("key") or {}).get("data") in customers]


async def missing_events(env: Env, behind: dict[str, Truth], state: Snapshot) -> list[str]:
    """For customers behind: per customer, the types short of the truth, and the events their
    profile's dedupe window does not name (where the window holds all of the customer's
    events), each with where it was read from (topic:partition@offset), to find it in the
    worker logs."""
    wanted: dict[str, str] = {}
    lines = []
    for cid, t in behind.items():
        profile = state.profiles.get(cid, {})
        counts = profile.get("counts", {})
        short = {k: f"{counts.get(k, 0)}/{n}" for k, n in t.counts.items()
                 if counts.get(k, 0) != n}
        recent = set(profile.get("recent_event_ids", []))
        ids = [i for i in t.ids if event_token(i) not in recent]
        if len(t.ids) > len(recent):  # the window dropped some: they may have been applied
            ids = [f"(window of {len(recent)} for {len(t.ids)} events)"]
        else:
            wanted.update(dict.fromkeys(ids, cid))
        lines.append(f"{cid}: short {short}, applied {profile.get('applied')}, not in window "
                     f"{ids}")
    if not wanted:
        return lines
    try:
        async with asyncio.timeout(30):
            for topic in env.settings.topics.inputs:
                for partition, offset, record in await read_topic(env.settings, topic,
                                                                  offsets=True):
                    if record is not None and (eid := record.get("event_id")) in wanted:
                        lines.append(f"{eid} of {wanted[eid]} at {topic}:{partition}@{offset}")
    except TimeoutError:
        lines.append("(gave up reading the input topics after 30 s)")
    return lines


async def consumers(env: Env, redis: aioredis.Redis, unread: dict[str, int]) -> str:
    """Where the group stands on the partitions not read to their end: its committed offsets
    (read past what Redis shows applied, or not) and each worker's last heartbeat (its
    partitions, messages so far and its last batch): a worker that stopped fetching or one
    that stopped applying."""
    committed = await committed_offsets(env)
    now = time.time()
    beats = [(b.pid, b.state, b.partitions, b.messages,
              round(now - b.last_batch, 1) if b.last_batch else None)
             for b in await read_beats(redis, env.settings.app_id)]
    return (f"Committed: { {s: committed.get(s) for s in unread} }. Heartbeats (pid, state, "
            f"partitions, messages, seconds since the last batch): {beats}. ")


def alive(env: Env, proc: subprocess.Popen[bytes]) -> None:
    assert proc.poll() is None, f"worker exited with {proc.returncode}:\n{env.worker_log()}"


async def wait_complete(env: Env, redis: aioredis.Redis, procs: list[subprocess.Popen[bytes]],
                        truth: dict[str, Truth], timeout: float = 90.0) -> Snapshot:
    """Until every customer has its expected number of events applied and every input
    message (duplicates included) has been consumed and recorded; ``procs`` must keep running.
    """
    ends = await end_offsets(env)
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            alive(env, proc)
        state = await snapshot(redis, truth)
        behind = [cid for cid, t in truth.items() if state.applied.get(cid, 0) < t.events]
        unread = {s: e for s, e in ends.items() if state.last_offsets.get(s, -1) < e}
        if not behind and not unread:
            return state
        if time.monotonic() > deadline:
            expected = sum(t.events for t in truth.values())
            dead = await dead_letters_of(env, set(behind))
            missing = await missing_events(env, {c: truth[c] for c in behind}, state)
            pytest.fail(f"after {timeout}s {len(behind)} customers are behind "
                        f"({state.total} of {expected} events applied), partitions not fully "
                        f"read: {unread}. Missing: {missing}. Their dead letters: {dead}. "
                        f"{await consumers(env, redis, unread)}"
                        f"Worker logs in {env.tmp}:\n{env.worker_log()}")
        await asyncio.sleep(0.5)



def mismatches(truth: dict[str, Truth], final: Snapshot) -> dict[str, dict[str, Any]]:
    """Customers whose orders, spend (to the cent) or counts per type differ from the truth."""
    wrong = {}
    for cid, t in truth.items():
        p = final.profiles[cid]
        got = (p["purchases"]["orders"], round(p["purchases"]["total"] * 100),
               {k: v for k, v in p["counts"].items() if k in EVENT_TYPES})
        want = (t.orders, t.cents, dict(t.counts))
        if got != want:
            wrong[cid] = {"got": got, "want": want}
    return wrong


async def forget_run(redis: aioredis.Redis, customers: Iterable[str], pattern: str) -> None:
    """Through the store's erase, which also takes the customers out of the (global) RFM
    histograms of database 15, so other tests find them as they were; then any leftover key."""
    store = RedisStore(redis)
    for cid in customers:
        await store.erase(cid)
    keys = [k async for k in redis.scan_iter(match=pattern, count=1000)]
    if keys:
        await redis.delete(*keys)


async def forget_counters(redis: aioredis.Redis, app_id: str) -> None:
    """The app's KPI counters (days, cohorts, segment moves and sizes)."""
    keys = [k async for k in redis.scan_iter(match=f"sp:kpi:{{{app_id}}}:*")]
    if keys:
        await redis.delete(*keys)
