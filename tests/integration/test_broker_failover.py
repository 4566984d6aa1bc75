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
import time
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from .conftest import Env, KafkaCluster, isolated_env
from .failover import (
    all_working,
    decided_once,
    kill_broker,
    leaders_moved,
    leading_broker,
    replicated_topics,
)
from .streams import (
    build_stream,
    forget_run,
    mismatches,
    produce_chunk,
    stream_chunk,
    streaming,
    wait_complete,
)

pytestmark = pytest.mark.integration

CUSTOMERS = 120
EVENTS = 3000
BACKLOG = 1000  # before the workers start
STREAMED = 1000  # while the broker is killed (50 a second); the rest is produced after
REPLICATED = {"REPLICATION_FACTOR": "3", "MIN_INSYNC_REPLICAS": "2",
              "SESSION_TIMEOUT_S": "10"}


async def test_a_leading_broker_killed_mid_stream_loses_and_doubles_nothing(
        kafka_cluster: KafkaCluster, test_redis: aioredis.Redis, tmp_path: Path) -> None:
    began = time.monotonic()
    run = uuid.uuid4().hex[:8]
    stream, truth, duplicates = build_stream(run, CUSTOMERS, EVENTS, tag="bf")
    backlog, streamed = stream[:BACKLOG], stream[BACKLOG:BACKLOG + STREAMED]
    rest = stream[BACKLOG + STREAMED:]
    dead = 0  # the broker killed, started again at the end
    async with isolated_env(tmp_path, kafka_cluster.bootstrap, **REPLICATED) as env:
        try:
            before = await replicated_topics(env)
            await produce_chunk(env, backlog)
            workers = [env.start_worker() for _ in range(3)]
            await all_working(test_redis, env, {w.pid for w in workers})

            killed = asyncio.Event()
            sender = asyncio.create_task(stream_chunk(env, streamed, per_tick=5, until=killed))
            await streaming(env, len(backlog))  # traffic in flight (paced: 50 events a second)
            victim, led = leading_broker(env, before)
            assert not sender.done(), "the traffic should still be flowing at the kill"
            kill_broker(kafka_cluster, victim)
            dead = victim
            killed_at = time.monotonic() - began
            after = await leaders_moved(env, victim)
            killed.set()
            await sender
            await produce_chunk(env, rest)

            final = await wait_complete(env, test_redis, workers, truth, timeout=180)
            wrong = mismatches(truth, final)
            assert not wrong, f"{len(wrong)} customers differ: {list(wrong.items())[:3]}"
            # Every cart add and purchase has its decision; none has two with different ids.
            decisions = await decided_once(env, stream, timeout=90)
            assert all(w.poll() is None for w in workers), env.worker_log()
            print(f"\nbroker failover: {len(stream)} messages ({EVENTS} events + {duplicates} "
                  f"duplicates) for {len(truth)} customers; 3 workers; node {victim} (leader of "
                  f"{led} input partitions) SIGKILLed at "
                  f"{killed_at:.1f}s; leaders moved to {sorted({v[0] for v in after.values()})}"
                  f"; exact totals, {len(decisions)} decisions, none doubled; done in "
                  f"{time.monotonic() - began:.1f}s")
        finally:
            await forget_run(test_redis, truth, f"sp:{{bf{run}-*")
            if dead:
                await asyncio.to_thread(kafka_cluster.revive, dead)


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
