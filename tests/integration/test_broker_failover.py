"""A Kafka broker dies mid-stream under three workers, and nothing is lost or doubled.

On the session's three-broker cluster (``kafka_cluster``: what `streamproc stack up
--kafka-brokers 3` starts), with topics of replication factor 3 and ``min.insync.replicas`` 2,
three workers consume a backlog and live traffic; the broker that leads the most input
partitions is killed with SIGKILL while events stream in; the rest of the traffic is produced
after the kill. Every event is applied once (orders, spend and counts per type exact to the
cent), every cart add and purchase gets its decision, and no trigger gets two decisions with
different ids. A worker also refuses topics with fewer copies than it is configured for.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streamproc.stack.process import signal_process, wait_dead
from streamproc.worker.heartbeat import WorkerBeat, read_beats

from .conftest import Env, KafkaCluster, isolated_env
from .streams import (
    build_stream,
    forget_run,
    mismatches,
    produce_chunk,
    stream_chunk,
    wait_complete,
)

pytestmark = pytest.mark.integration

CUSTOMERS = 120
EVENTS = 3000
BACKLOG = 1000  # before the workers start
STREAMED = 1000  # while the broker is killed (50 a second); the rest is produced after
REPLICATED = {"REPLICATION_FACTOR": "3", "MIN_INSYNC_REPLICAS": "2",
              "SESSION_TIMEOUT_S": "10"}


async def leaders(env: Env, topics: list[str]) -> dict[tuple[str, int], tuple[int, int]]:
    """``{(topic, partition): (leader node, in-sync replicas)}``; {} while no live broker
    answers (the admin client may ask the dead one first)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=env.settings.kafka_bootstrap,
                                request_timeout_ms=5000)
    try:
        await admin.start()
        return {(t["topic"], p["partition"]): (p["leader"], len(p["isr"]))
                for t in await admin.describe_topics(topics) for p in t["partitions"]}
    except KafkaError:
        return {}
    finally:
        await admin.close()


async def until(check: Any, what: str, env: Env, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}\n{env.worker_log()}"
        await asyncio.sleep(0.5)


def working(beats: list[WorkerBeat], pids: set[int]) -> bool:
    now = time.time()
    live = [b for b in beats if b.pid in pids and b.alive(now)]
    return len(live) == len(pids) and all(b.partitions and b.messages > 0 for b in live)


async def test_a_leading_broker_killed_mid_stream_loses_and_doubles_nothing(
        kafka_cluster: KafkaCluster, test_redis: aioredis.Redis, tmp_path: Path) -> None:
    began = time.monotonic()
    run = uuid.uuid4().hex[:8]
    stream, truth, duplicates = build_stream(run, CUSTOMERS, EVENTS, tag="bf")
    backlog, streamed = stream[:BACKLOG], stream[BACKLOG:BACKLOG + STREAMED]
    rest = stream[BACKLOG + STREAMED:]
    async with isolated_env(tmp_path, kafka_cluster.bootstrap, **REPLICATED) as env:
        topics = env.settings.topics
        try:
            expected = sum(topics.partitions_of(t, env.settings.partitions)
                           for t in topics.all())

            async def replicated() -> dict[tuple[str, int], tuple[int, int]]:
                found = await leaders(env, list(topics.all()))  # all there: a new topic's
                return found if len(found) == expected else {}  # metadata takes a moment

            before = await until(replicated, "the topics never showed up", env, timeout=60)
            assert {isr for _, isr in before.values()} == {3}, before
            await produce_chunk(env, backlog)
            workers = [env.start_worker() for _ in range(3)]
            pids = {w.pid for w in workers}
            await until(lambda: _beats_show(test_redis, env, pids),
                        "the three workers never all processed", env, timeout=120)

            killed = asyncio.Event()
            sender = asyncio.create_task(stream_chunk(env, streamed, per_tick=5, until=killed))
            await asyncio.sleep(1.0)  # traffic in flight (paced: 50 events a second)
            led = Counter(leader for (topic, _), (leader, _) in before.items()
                          if topic in topics.inputs)
            victim = led.most_common(1)[0][0]
            assert not sender.done(), "the traffic should still be flowing at the kill"
            signal_process(kafka_cluster.pids[victim], signal.SIGKILL)
            assert wait_dead(kafka_cluster.pids[victim], 30)
            killed_at = time.monotonic() - began

            async def moved() -> dict[tuple[str, int], tuple[int, int]]:
                now = await leaders(env, list(topics.all()))
                ok = all(leader not in (victim, -1) for leader, _ in now.values())
                return now if ok else {}

            after = await until(moved, f"partitions still led by the dead node {victim}", env,
                                timeout=90)
            killed.set()
            await sender
            await produce_chunk(env, rest)

            final = await wait_complete(env, test_redis, workers, truth, timeout=180)
            wrong = mismatches(truth, final)
            assert not wrong, f"{len(wrong)} customers differ: {list(wrong.items())[:3]}"

            # Every cart add and purchase has its decision; none has two with different ids.
            needed = {e["event_id"] for _, e in stream if e["type"] in {"cart_add", "purchase"}}

            def decided(records: list[dict[str, Any]]) -> bool:
                return needed <= {r["value"]["trigger"]["event_id"] for r in records
                                  if r["value"] is not None}

            decisions = await env.consume_until(topics.decisions, decided, timeout=90)
            ids: defaultdict[tuple[str, str, str], set[str]] = defaultdict(set)
            for r in decisions:
                if r["value"] is not None:
                    d = r["value"]
                    ids[(d["trigger"]["event_id"], d["slot"] or "", d["channel"] or "")].add(
                        d["decision_id"])
            twice = {k: v for k, v in ids.items() if len(v) > 1}
            assert not twice, f"{len(twice)} triggers decided twice: {list(twice.items())[:3]}"
            assert all(w.poll() is None for w in workers), env.worker_log()
            print(f"\nbroker failover: {len(stream)} messages ({EVENTS} events + {duplicates} "
                  f"duplicates) for {len(truth)} customers; 3 workers; node {victim} (leader of "
                  f"{led[victim]} of {sum(led.values())} input partitions) SIGKILLed at "
                  f"{killed_at:.1f}s; leaders moved to {sorted({v[0] for v in after.values()})}"
                  f"; exact totals, {len(decisions)} decisions, none doubled; done in "
                  f"{time.monotonic() - began:.1f}s")
        finally:
            await forget_run(test_redis, truth, f"sp:{{bf{run}-*")


async def _beats_show(redis: aioredis.Redis, env: Env, pids: set[int]) -> bool:
    return working(await read_beats(redis, env.settings.app_id), pids)


async def test_a_worker_refuses_topics_with_fewer_copies_than_configured(
        stack_env: Env) -> None:
    """The one-broker stack's topics have one replica: a worker configured for three refuses
    them, says which and how to fix it, and exits without a traceback."""
    worker = stack_env.start_worker(settings={"STREAMPROC_REPLICATION_FACTOR": "3",
                                              "STREAMPROC_MIN_INSYNC_REPLICAS": "2"})
    try:
        code = await asyncio.wait_for(asyncio.to_thread(worker.wait), 90)
    except TimeoutError:
        pytest.fail(f"the worker did not refuse the topics:\n{stack_env.worker_log()}")
    log = stack_env.worker_log()
    assert code == 2, log
    browsing = stack_env.settings.topics.browsing
    assert f"{browsing} (replication factor 1, min.insync.replicas 1)" in log
    assert "fewer copies than STREAMPROC_REPLICATION_FACTOR=3 and " \
        "STREAMPROC_MIN_INSYNC_REPLICAS=2" in log
    assert f"--entity-name {browsing} --add-config 'min.insync.replicas=2'" in log
    assert "Traceback" not in log
