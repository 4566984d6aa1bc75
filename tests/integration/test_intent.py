"""A worker learns purchase intent from live traffic, and keeps what it learnt across restarts.

Simulated traffic (the simulator's pure generator, re-keyed to customers unique to the run)
goes to a worker started with ``STREAMPROC_MODEL_SECRET``: its signed snapshot appears in Redis
with labels learnt. The worker is stopped (SIGTERM: a final snapshot), a second one learns from
more traffic and is killed (SIGKILL: only its periodic snapshots survive), and a third one
learns from more again. Each restarted worker loads the snapshot (its log says so, with the
count of labels) and its snapshots go on counting from there: the metrics never reset.

The snapshot key is global in the integration database (15): it is deleted before and after.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from streamproc.intent import MIN_LABELS, SNAPSHOT_KEY, snapshot_stats
from streamproc.simulator import Population, generate_events
from streamproc.state.store import RedisStore

from .conftest import Env

pytestmark = pytest.mark.integration

SECRET = "integration-test-secret"
SEED = 5
CUSTOMERS = 200
CHUNK = 2500
START = datetime(2026, 3, 1, tzinfo=UTC)
# A SIGKILLed member would otherwise stall the next worker's rebalance for the session timeout
# (30 s by default; see test_crash_recovery.py).
FAST_GROUP = {"STREAMPROC_SESSION_TIMEOUT_S": "10"}

Item = tuple[str, dict[str, Any]]


def build_stream(run: str, n: int) -> list[Item]:
    population = Population.generate(CUSTOMERS, seed=SEED)
    out: list[Item] = []
    for sim in itertools.islice(generate_events(population, START, seed=SEED), n):
        event = dict(sim.event)
        event["customer_id"] = f"in{run}-{event['customer_id']}"
        out.append((sim.topic, event))
    return out


async def send(env: Env, items: list[Item]) -> None:
    """In event-time order, across topics (a purchase arrives after the browsing before it)."""
    producer = AIOKafkaProducer(bootstrap_servers=env.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for logical, event in items:
            await producer.send(getattr(env.settings.topics, logical), orjson.dumps(event),
                                key=event["customer_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


async def read_stats(redis: aioredis.Redis) -> dict[str, Any] | None:
    blob = await redis.get(SNAPSHOT_KEY)
    return None if blob is None else snapshot_stats(blob, SECRET.encode())


async def wait_snapshot(env: Env, redis: aioredis.Redis, proc: subprocess.Popen[bytes],
                        more_than: int, timeout: float = 90.0) -> dict[str, Any]:
    """Until the snapshot in Redis has learnt more than ``more_than`` labels."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"worker exited with {proc.returncode}:\n{env.worker_log()}"
        stats = await read_stats(redis)
        if stats is not None and stats["n"] > more_than:
            return stats
        if time.monotonic() > deadline:
            pytest.fail(f"no snapshot with more than {more_than} labels after {timeout}s "
                        f"(last: {stats}). Worker log:\n{env.worker_log()}")
        await asyncio.sleep(0.3)


def loaded_count(env: Env, worker: int) -> int:
    """The label count the ``worker``-th worker's log says it loaded from the snapshot."""
    log = (env.tmp / f"worker-{worker}.log").read_text(errors="replace")
    found = re.search(r"intent model v\d+ loaded from \S+: (\d+) labels learnt", log)
    assert found, f"worker {worker} did not load the snapshot:\n{log[-4000:]}"
    return int(found[1])


async def wait_loaded(env: Env, worker: int, proc: subprocess.Popen[bytes],
                      timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"worker exited with {proc.returncode}:\n{env.worker_log()}"
        try:
            return loaded_count(env, worker)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.3)


async def test_worker_learns_intent_and_keeps_it_across_restarts(
        stack_env: Env, test_redis: aioredis.Redis) -> None:
    began = time.monotonic()
    run = uuid.uuid4().hex[:8]
    stream = build_stream(run, 3 * CHUNK)
    customers = {e["customer_id"] for _, e in stream}
    assert sum(e["type"] == "purchase" for _, e in stream[:CHUNK]) > 20
    stack_env.env.update({"STREAMPROC_MODEL_SECRET": SECRET,
                          "STREAMPROC_MODEL_SNAPSHOT_SECONDS": "1", **FAST_GROUP})
    await test_redis.delete(SNAPSHOT_KEY)
    try:
        # 1. A fresh worker learns from the first traffic; SIGTERM writes a last snapshot.
        await send(stack_env, stream[:CHUNK])
        first = stack_env.start_worker()
        learnt = await wait_snapshot(stack_env, test_redis, first, more_than=0)
        assert learnt["version"] >= 1
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
        after_term = await read_stats(test_redis)
        assert after_term is not None and after_term["n"] >= learnt["n"]

        # 2. A restarted worker goes on from the snapshot; it is then killed outright.
        second = stack_env.start_worker()
        await send(stack_env, stream[CHUNK:2 * CHUNK])  # the model loads before the first batch
        assert await wait_loaded(stack_env, 1, second) == after_term["n"]
        before_kill = await wait_snapshot(stack_env, test_redis, second,
                                          more_than=after_term["n"])
        second.send_signal(signal.SIGKILL)
        second.wait(timeout=10)
        at_kill = await read_stats(test_redis)  # the last periodic snapshot
        assert at_kill is not None and at_kill["n"] >= before_kill["n"] > after_term["n"]

        # 3. After the kill, again: the count goes on from the last periodic snapshot.
        third = stack_env.start_worker()
        await send(stack_env, stream[2 * CHUNK:])
        assert await wait_loaded(stack_env, 2, third) == at_kill["n"]
        final = await wait_snapshot(stack_env, test_redis, third, more_than=at_kill["n"])
        assert final["positives"] >= at_kill["positives"] and final["positives"] > 0
        assert 0.0 <= final["auc"] <= 1.0

        # The worker's profiles carry the score, the intent segment and pending snapshots.
        store = RedisStore(test_redis)
        scored = 0
        for cid in customers:
            found = await store.read_profile(cid)
            if found and "intent" in found["profile"].get("scores", {}):
                scored += 1
                assert found["profile"]["segments"]["intent"] in {"cold", "warm", "hot"}
        if final["n"] >= MIN_LABELS:  # trusted to score: the last traffic was scored
            assert scored > 0
        print(f"\nintent: {len(stream)} events, {len(customers)} customers; labels learnt "
              f"{learnt['n']} -> {after_term['n']} (SIGTERM) -> {at_kill['n']} (SIGKILL) -> "
              f"{final['n']}; AUC {final['auc']}; {scored} customers scored; "
              f"{time.monotonic() - began:.1f}s")
    finally:
        await test_redis.delete(SNAPSHOT_KEY)
        store = RedisStore(test_redis)
        for cid in customers:
            await store.erase(cid)
