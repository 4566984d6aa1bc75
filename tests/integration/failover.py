"""What the failover tests share: the cluster's state (partition leaders, Redis primaries,
worker heartbeats), the kills (a Kafka broker that leads partitions, a Redis primary), and the
decisions check (every trigger decided, none twice with different ids).

Used by test_broker_failover.py, test_redis_cluster.py and test_cluster_failover.py, on the
session's clusters (``kafka_cluster``, ``redis_cluster`` in conftest.py).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter, defaultdict
from typing import Any

import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streamproc.stack import redis_cluster as redis_cluster_stack
from streamproc.stack.process import signal_process, wait_dead
from streamproc.worker.heartbeat import WorkerBeat, read_beats

from .conftest import Env, KafkaCluster, LocalCluster
from .polling import until
from .streams import Item

Leaders = dict[tuple[str, int], tuple[int, int]]  # (topic, partition) -> (leader, in-sync)


async def leaders(env: Env, topics: list[str]) -> Leaders:
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


async def replicated_topics(env: Env) -> Leaders:
    """The leaders of all the env's topics once every partition has three in-sync copies."""
    topics = env.settings.topics
    expected = sum(topics.partitions_of(t, env.settings.partitions) for t in topics.all())

    async def replicated() -> Leaders:
        found = await leaders(env, list(topics.all()))  # all there: a new topic's
        return found if len(found) == expected else {}  # metadata takes a moment

    before: Leaders = await until("the topics never showed up", replicated, 60,
                                  env.worker_log, every=0.5)
    assert {isr for _, isr in before.values()} == {3}, before
    return before


def working(beats: list[WorkerBeat], pids: set[int]) -> bool:
    now = time.time()
    live = [b for b in beats if b.pid in pids and b.alive(now)]
    return len(live) == len(pids) and all(b.partitions and b.messages > 0 for b in live)


async def all_working(redis: aioredis.Redis, env: Env, pids: set[int]) -> None:
    """Until every worker of ``pids`` beats with partitions and has processed messages."""
    async def show() -> bool:
        return working(await read_beats(redis, env.settings.app_id), pids)

    await until(f"the {len(pids)} workers never all processed", show, 120, env.worker_log,
                every=0.5)


def leading_broker(env: Env, before: Leaders) -> tuple[int, int]:
    """The node that leads the most input partitions, and how many it leads."""
    led = Counter(leader for (topic, _), (leader, _) in before.items()
                  if topic in env.settings.topics.inputs)
    return led.most_common(1)[0]


def kill_broker(cluster: KafkaCluster, node: int) -> None:
    signal_process(cluster.pids[node], signal.SIGKILL)
    assert wait_dead(cluster.pids[node], 30)


async def leaders_moved(env: Env, victim: int) -> Leaders:
    """Until no partition of the env's topics is led by ``victim`` (or by none)."""
    async def moved() -> Leaders:
        now = await leaders(env, list(env.settings.topics.all()))
        ok = all(leader not in (victim, -1) for leader, _ in now.values())
        return now if ok else {}

    found: Leaders = await until(f"partitions still led by the dead node {victim}", moved,
                                 90, env.worker_log, every=0.5)
    return found


async def primaries(cluster: LocalCluster, avoid: int = 0) -> dict[int, int | None]:
    """Primary port -> replica port, as a node that runs (not ``avoid``) sees the cluster."""
    node = next(n for n in redis_cluster_stack.running(cluster.settings) if n.port != avoid)
    return await asyncio.to_thread(redis_cluster_stack.primary_ports, node.port)


async def kill_a_primary(cluster: LocalCluster, timeout: float = 30) -> tuple[int, int, float]:
    """SIGKILL a primary that has a replica and wait until the replica took over (the
    cluster's node timeout, 2 s, plus an election): the primary's port, the replica's, and
    the seconds the takeover took. The caller restarts the node (``redis_cluster_stack.up``)."""
    before = await primaries(cluster)
    victim_port, replica = next((p, r) for p, r in sorted(before.items()) if r is not None)
    victim = next(n for n in redis_cluster_stack.existing_nodes(cluster.settings)
                  if n.port == victim_port)
    killed_at = time.monotonic()
    redis_cluster_stack.kill_node(victim)
    while True:
        now = await primaries(cluster, avoid=victim_port)
        if victim_port not in now and replica in now:
            return victim_port, replica, time.monotonic() - killed_at
        assert time.monotonic() < killed_at + timeout, f"no replica took over: {now}"
        await asyncio.sleep(0.2)


def decided_twice(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], set[str]]:
    """(trigger event id, slot, channel) -> the decision ids published for it, where there
    are several: empty when nothing was published twice with different ids."""
    ids: defaultdict[tuple[str, str, str], set[str]] = defaultdict(set)
    for r in records:
        if r["value"] is not None:
            d = r["value"]
            ids[(d["trigger"]["event_id"], d["slot"] or "", d["channel"] or "")].add(
                d["decision_id"])
    return {k: v for k, v in ids.items() if len(v) > 1}


async def decided_once(env: Env, stream: list[Item], timeout: float) -> list[dict[str, Any]]:
    """The decisions topic, read until every cart add and purchase of ``stream`` has its
    decision; asserts none has two with different ids."""
    needed = {e["event_id"] for _, e in stream if e["type"] in {"cart_add", "purchase"}}
    assert needed

    def decided(records: list[dict[str, Any]]) -> bool:
        return needed <= {r["value"]["trigger"]["event_id"] for r in records
                          if r["value"] is not None}

    decisions = await env.consume_until(env.settings.topics.decisions, decided, timeout)
    twice = decided_twice(decisions)
    assert not twice, f"{len(twice)} triggers decided twice: {list(twice.items())[:3]}"
    return decisions
