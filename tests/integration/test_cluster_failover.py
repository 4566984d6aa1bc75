"""Three failures at once, on both clusters together: nothing is lost or doubled.

Three workers consume from the session's three-broker Kafka (``kafka_cluster``: topics of
replication factor 3, ``min.insync.replicas`` 2) and keep their state in the session's Redis
Cluster (``redis_cluster``: three primaries, one replica each, reached by its cluster URL).
While events stream in, one worker, the broker that leads the most input partitions and a Redis
primary are each SIGKILLed; the broker's partitions move to the two left, the primary's replica
takes over, the two workers left take the dead one's partitions. Every event is then applied
once (orders, spend and counts per type exact to the cent), every cart add and purchase has its
decision, and none has two with different ids.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from streamproc.stack import redis_cluster as redis_cluster_stack

from .conftest import KafkaCluster, LocalCluster, isolated_env
from .failover import (
    all_working,
    decided_once,
    kill_a_primary,
    kill_broker,
    leaders_moved,
    leading_broker,
    replicated_topics,
)
from .streams import (
    build_stream,
    mismatches,
    produce_chunk,
    stream_chunk,
    streaming,
    wait_complete,
)

pytestmark = pytest.mark.integration

CUSTOMERS = 100
EVENTS = 2400
REPLICATED = {"REPLICATION_FACTOR": "3", "MIN_INSYNC_REPLICAS": "2", "SESSION_TIMEOUT_S": "10"}


async def test_a_worker_a_leading_broker_and_a_redis_primary_killed_mid_stream(
        kafka_cluster: KafkaCluster, redis_cluster: LocalCluster, cluster_redis: Any,
        tmp_path: Path) -> None:
    began = time.monotonic()
    run = uuid.uuid4().hex[:8]
    stream, truth, duplicates = build_stream(run, CUSTOMERS, EVENTS, tag="cf")
    third = len(stream) // 3  # a backlog, a third streamed (50 a second) through the kills,
    backlog, streamed, rest = stream[:third], stream[third:2 * third], stream[2 * third:]
    async with isolated_env(tmp_path, kafka_cluster.bootstrap, REDIS_URL=redis_cluster.url,
                            **REPLICATED) as env:
        before = await replicated_topics(env)
        await produce_chunk(env, backlog)
        workers = [env.start_worker() for _ in range(3)]
        await all_working(cluster_redis, env, {w.pid for w in workers})

        dead = 0  # the broker killed, started again at the end
        killed = asyncio.Event()
        sender = asyncio.create_task(stream_chunk(env, streamed, per_tick=5, until=killed))
        try:
            await streaming(env, len(backlog))  # traffic in flight
            assert not sender.done(), "the traffic should still be flowing at the kills"
            workers[0].kill()
            workers[0].wait()
            broker, led = leading_broker(env, before)
            kill_broker(kafka_cluster, broker)
            dead = broker
            primary, replica, took = await kill_a_primary(redis_cluster)
            assert not sender.done(), "the traffic should still be flowing after the kills"
            after = await leaders_moved(env, broker)
            killed.set()
            await sender
            await produce_chunk(env, rest)  # the rest of the traffic, after the kills

            survivors = workers[1:]
            final = await wait_complete(env, cluster_redis, survivors, truth, timeout=180)
            wrong = mismatches(truth, final)
            assert not wrong, f"{len(wrong)} customers differ: {list(wrong.items())[:3]}"
            decisions = await decided_once(env, stream, timeout=90)
            assert all(w.poll() is None for w in survivors), env.worker_log()
        finally:
            killed.set()
            # For the tests after this one: the killed Redis node comes back as a replica of
            # the promoted one, the killed broker as a follower.
            await asyncio.to_thread(redis_cluster_stack.up, redis_cluster.settings, 3,
                                    io.StringIO())
            if dead:
                await asyncio.to_thread(kafka_cluster.revive, dead)
        print(f"\ncluster failover: {len(stream)} messages ({len(stream) - duplicates} events "
              f"+ {duplicates} duplicates) for {len(truth)} customers; 3 workers, one "
              f"SIGKILLed; broker {broker} (leader of {led} input partitions) SIGKILLed, leaders "
              f"moved to {sorted({v[0] for v in after.values()})}; Redis primary {primary} "
              f"SIGKILLed, replica {replica} took over in {took:.1f}s; exact totals, "
              f"{len(decisions)} decisions, none doubled; done in "
              f"{time.monotonic() - began:.1f}s")
