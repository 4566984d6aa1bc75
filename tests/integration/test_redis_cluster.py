"""streamproc on a real Redis Cluster (3 primaries, one replica each, started for the session by
the ``redis_cluster`` fixture): the store's scripts, a worker's whole flow, and a failover.

Every shared key (RFM histograms, KPI counters, timer indexes) lives in another slot than the
customers who update it: the compare-and-set logs those updates in the customer's slot and
:meth:`RedisStore.fold` applies them once. These tests check the sums come out exact: after a
process stopped between a write and its fold, after a primary was SIGKILLed mid-stream.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
import uuid
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions

from streamproc.decisions import timers
from streamproc.stack import redis_cluster as redis_cluster_stack
from streamproc.stack.redis_cluster import Node
from streamproc.state.keys import (
    aggregate_log_key,
    customer_key,
    customer_slot,
    kpi_sizes_key,
    timer_index_key,
)
from streamproc.state.store import RedisStore, Write

from .conftest import Env, LocalCluster
from .failover import decided_once, kill_a_primary, primaries
from .streams import (
    build_stream,
    mismatches,
    produce_chunk,
    snapshot,
    stream_chunk,
    streaming,
    wait_complete,
)

pytestmark = pytest.mark.integration


def cid() -> str:
    return f"cl-{uuid.uuid4().hex[:8]}"


def write(customer: str, version: int, buckets: tuple[str, ...], due: int = 0) -> Write:
    timers = ((timer_index_key("cl", 0), f"{customer}|t|{due}"),) if due else ()
    return Write(customer, version, b"{}", b"[]", buckets,
                 kpis=((kpi_sizes_key("cl"), 86_400_000, (("rfm:x", 1),)),),
                 timers=timers, timers_add=tuple((k, m, due) for k, m in timers))


async def test_the_store_keeps_shared_counts_exact_across_slots(cluster_redis: Any) -> None:
    store = RedisStore(cluster_redis)
    assert store.cluster
    a, b, c = cid(), cid(), cid()
    assert len({customer_slot(x) for x in (a, b, c)}) == 3  # (one in 16,384 that two share)
    lost, due = await store.save_then_due(
        [write(a, 0, ("100", "0", "5"), due=50), write(b, 0, ("100", "0", "7"), due=5000),
         write(c, 0, ("101", "1", "7"))], "cl", {0: 100}, 0, 10)
    assert lost == []
    # The timer armed in this very write is due at once (the fold ran before the query).
    assert [d.members for d in due] == [[f"{a}|t|50"]]
    assert await store.histograms() == {"last_purchase_day": {"100": 2, "101": 1},
                                        "frequency": {"0": 2, "1": 1},
                                        "monetary": {"5": 1, "7": 2}}
    assert await cluster_redis.hget(kpi_sizes_key("cl"), "rfm:x") == b"3"
    # A stale write is refused and logs nothing.
    assert await store.save([write(a, 0, ("200", "2", "9"))]) == [a]
    assert await cluster_redis.hget(kpi_sizes_key("cl"), "rfm:x") == b"3"
    # Erasure takes the customer out of the histograms and the timer index, on their slot.
    assert await store.erase(a) == 1
    assert await cluster_redis.exists(customer_key(a)) == 0
    assert (await store.histograms())["monetary"] == {"7": 2}
    assert await cluster_redis.zrange(timer_index_key("cl", 0), 0, -1) == [f"{b}|t|5000".encode()]
    assert await cluster_redis.llen(aggregate_log_key(customer_slot(a))) == 0  # folded, trimmed
    await store.close()


class CrashingBeforeFold(RedisStore):
    """A process that stops between its writes and their fold."""

    async def _fold_logs(self, logs: Any) -> int:
        return 0


async def test_updates_left_by_a_crash_are_folded_once_by_the_next_start(
        cluster_redis: Any, redis_cluster: LocalCluster) -> None:
    crashed = CrashingBeforeFold(cluster_redis)
    customers = [cid() for _ in range(30)]
    assert await crashed.save([write(x, 0, ("100", "0", "5")) for x in customers]) == []
    assert await cluster_redis.hget(kpi_sizes_key("cl"), "rfm:x") is None  # not folded yet
    pending = sum([await cluster_redis.llen(aggregate_log_key(customer_slot(x)))
                   for x in customers])
    assert pending == 30
    fresh = RedisStore(redis_cluster.client())
    # Two sweeps at once (two workers starting) and one more after: each update applied once.
    first, second = await asyncio.gather(fresh.fold(), fresh.fold())
    # per customer: 3 histogram moves, a KPI increment and its expiry
    assert first + second == 30 * 5
    assert await fresh.fold() == 0
    assert await cluster_redis.hget(kpi_sizes_key("cl"), "rfm:x") == b"30"
    assert (await fresh.histograms())["frequency"] == {"0": 30}
    await fresh.close()


class FoldFailingOnce(RedisStore):
    """A fold that fails once (a failover between the write and its fold)."""

    failed = False

    async def _fold_logs(self, logs: Any) -> int:
        if not self.failed:
            self.failed = True
            raise redis.exceptions.ConnectionError("the primary went away")
        return await super()._fold_logs(logs)


async def test_a_failed_fold_is_retried_with_the_next_write_whatever_it_writes(
        cluster_redis: Any) -> None:
    store = FoldFailingOnce(cluster_redis)
    a, b = cid(), cid()
    with pytest.raises(redis.exceptions.ConnectionError):
        await store.save([write(a, 0, ("100", "0", "5"))])
    assert await cluster_redis.hget(kpi_sizes_key("cl"), "rfm:x") is None
    # The retried batch has nothing left to write for a (applied): another customer's write
    # folds a's slot too.
    assert await store.save([write(b, 0, ("100", "0", "5"))]) == []
    assert await cluster_redis.hget(kpi_sizes_key("cl"), "rfm:x") == b"2"
    assert (await store.histograms())["frequency"] == {"0": 2}


async def replica_of(cluster: LocalCluster, client: Any, customer: str) -> Node:
    """The replica of the primary that holds ``customer``."""
    primary = client.nodes_manager.get_node_from_slot(customer_slot(customer)).port
    port = (await primaries(cluster))[primary]
    assert port is not None, f"primary {primary} has no replica"
    return next(n for n in redis_cluster_stack.existing_nodes(cluster.settings)
                if n.port == port)


async def test_a_batchs_writes_are_on_the_replica_once_the_store_returns(
        cluster_redis: Any, redis_cluster: LocalCluster) -> None:
    # Redis replicates after it answers: without the WAIT the worker could commit a batch's
    # offsets while only the primary has its writes, and a failover would lose them.
    store = RedisStore(cluster_redis, replica_wait_ms=5000)
    customers = [cid() for _ in range(12)]  # on every primary
    assert await store.save([write(c, 0, ("1", "2", "3")) for c in customers]) == []
    assert store.replication.short == 0 and set(store.replication.replicas.values()) == {1}
    for customer in customers:
        node = await replica_of(redis_cluster, cluster_redis, customer)
        replica = redis.asyncio.Redis(port=node.port, single_connection_client=True)
        try:
            await replica.execute_command("READONLY")  # a replica serves its primary's slots
            assert await replica.hget(customer_key(customer), "ver") == b"1", node.port
        finally:
            await replica.aclose()


async def test_a_replica_that_does_not_answer_delays_a_batch_only_so_long(
        cluster_redis: Any, redis_cluster: LocalCluster) -> None:
    store = RedisStore(cluster_redis, replica_wait_ms=300)
    customer = cid()
    assert await store.save([write(customer, 0, ("1", "2", "3"))]) == []
    node = await replica_of(redis_cluster, cluster_redis, customer)
    pid = int(node.pid.read_text())
    os.kill(pid, signal.SIGSTOP)  # well within the cluster's node timeout (2 s)
    try:
        began = time.monotonic()
        assert await store.save([write(customer, 1, ("1", "2", "3"))]) == []
        waited = time.monotonic() - began
    finally:
        os.kill(pid, signal.SIGCONT)
    # The write stands on its primary (logged), after one WAIT's timeout (two when the fold's
    # shared keys live on the same primary): not refused, and not retried until the replica
    # answers.
    short = store.replication.short
    assert short in (1, 2) and 0.3 * short <= waited < 0.3 * short + 1.5, (short, waited)
    assert await cluster_redis.hget(customer_key(customer), "ver") == b"2"


async def timers_not_indexed(redis: Any, app_id: str, customers: Any) -> tuple[int, list[str]]:
    """The timers armed in the customers' profiles, and those missing from their partition's
    index (which would then never fire)."""
    store = RedisStore(redis)
    armed, missing = 0, []
    for customer in customers:
        stored = await store.read_profile(customer)
        for part, due, name in timers.indexed(stored["profile"] if stored else {}):
            armed += 1
            key, entry = timer_index_key(app_id, part), timers.member(customer, name, due)
            if await redis.zscore(key, entry) is None:
                missing.append(f"{key} {entry}")
    return armed, missing


async def run_stream(env: Env, redis: Any, customers: int, events: int, workers: int,
                     during: Any = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A third of the stream as a backlog, a third streamed while ``during()`` runs (after
    the workers processed some), the rest at once; returns the truth and the decisions once
    every event is applied exactly (to the cent) and every decision trigger has one (none two
    with different ids)."""
    run = uuid.uuid4().hex[:8]
    stream, truth, _ = build_stream(run, customers, events, tag="rc")
    third = len(stream) // 3
    await produce_chunk(env, stream[:third])
    procs = [env.start_worker() for _ in range(workers)]
    deadline = time.monotonic() + 60
    while (await snapshot(redis, truth)).total < third // 3:
        assert all(p.poll() is None for p in procs), env.worker_log()
        assert time.monotonic() < deadline, env.worker_log()
        await asyncio.sleep(0.3)
    done = asyncio.Event()
    sender = asyncio.create_task(stream_chunk(env, stream[third:2 * third], per_tick=20,
                                              until=done))
    if during is not None:
        await streaming(env, third)  # into the streamed third
        await during()
    done.set()
    await sender
    await produce_chunk(env, stream[2 * third:])
    final = await wait_complete(env, redis, procs, truth, timeout=90)
    wrong = mismatches(truth, final)
    assert not wrong, f"{len(wrong)} customers differ: {list(wrong.items())[:3]}"
    return truth, await decided_once(env, stream, timeout=60)


async def test_a_worker_on_the_cluster_applies_every_event_once(
        cluster_env: Env, cluster_redis: Any) -> None:
    truth, _ = await run_stream(cluster_env, cluster_redis, 60, 1500, workers=1)
    # The shared aggregates add up over customers in thousands of slots: every customer with
    # a profile counted once in each histogram it has a bucket in (at most once).
    histograms = await RedisStore(cluster_redis).histograms()
    assert 0 < sum(histograms["frequency"].values()) <= len(truth)
    sizes = {k: int(v) for k, v in (await cluster_redis.hgetall(
        kpi_sizes_key(cluster_env.settings.app_id))).items()}
    lifecycle = sum(v for k, v in sizes.items() if k.startswith(b"lifecycle:"))
    assert lifecycle == len(truth), sizes
    held, missing = await timers_not_indexed(cluster_redis, cluster_env.settings.app_id, truth)
    assert held > 0 and not missing, missing[:3]


async def test_a_primary_killed_mid_stream_loses_and_doubles_nothing(
        cluster_env: Env, cluster_redis: Any, redis_cluster: LocalCluster) -> None:
    began = time.monotonic()
    promoted: dict[str, Any] = {}

    async def kill_a_primary_into_the_stream() -> None:
        promoted["primary"], promoted["replica"], promoted["after_s"] = \
            await kill_a_primary(redis_cluster)

    try:
        truth, decisions = await run_stream(cluster_env, cluster_redis, 80, 2400, workers=2,
                                            during=kill_a_primary_into_the_stream)
    finally:
        # The killed node comes back as a replica of the promoted one.
        await asyncio.to_thread(redis_cluster_stack.up, redis_cluster.settings, 3,
                                io.StringIO())
    assert "after_s" in promoted
    sizes = {k: int(v) for k, v in (await cluster_redis.hgetall(
        kpi_sizes_key(cluster_env.settings.app_id))).items()}
    assert sum(v for k, v in sizes.items() if k.startswith(b"lifecycle:")) == len(truth), sizes
    # Timers armed before and after the failover are found in their partitions' indexes.
    held, missing = await timers_not_indexed(cluster_redis, cluster_env.settings.app_id, truth)
    assert held > 0 and not missing, missing[:3]
    print(f"\nredis failover: primary {promoted['primary']} SIGKILLed mid-stream, replica "
          f"{promoted['replica']} promoted after {promoted['after_s']:.1f}s; "
          f"{sum(t.events for t in truth.values())} events for {len(truth)} customers exact, "
          f"{len(decisions)} decisions, none twice; done in {time.monotonic() - began:.1f}s")
