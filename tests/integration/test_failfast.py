"""A worker fails fast and always stops: docs/operations.md ("Stopping a worker", "When something
fails").

- Started with a Redis or a Kafka it cannot reach, it exits 2 with the reason within
  STREAMPROC_STARTUP_TIMEOUT_S, before joining the consumer group.
- Cut off from Redis while it runs, it leaves the group after STREAMPROC_REDIS_OUTAGE_LEAVE_S
  (exit 75), and a worker that reaches Redis takes its partitions: nothing lost, nothing twice.
- SIGTERM stops it within seconds even while a batch is retrying an unreachable Redis, and it
  commits nothing it did not apply.

One worker reaches the real Redis through a TCP relay in the test (:class:`Relay`); cutting the
relay is a Redis outage for that worker alone, while the others keep theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from streamproc.state.store import RedisStore

from .conftest import BASE, TEST_REDIS_DB, Env
from .polling import until
from .streams import committed_offsets, snapshot
from .test_stack import free_ports

pytestmark = pytest.mark.integration

STARTUP_TIMEOUT_S = 3


class Relay:
    """A TCP relay on a free local port to ``host:port``; :meth:`cut` closes it and every
    connection through it, :meth:`restore` listens again on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_ports(1)[0]
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.close()
        self.writers.clear()
        await self.server.wait_closed()


def redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/{TEST_REDIS_DB}"


def view(customer: str, tag: str) -> dict[str, Any]:
    return {"event_id": f"{customer}-{tag}", "type": "page_view", "customer_id": customer,
            "ts": "2026-03-01T10:00:00.000Z", "url": "https://shop.example.com/c/shoes",
            "page_type": "category", "category": "shoes",
            "context": {"session_id": f"s-{customer}", "device": "mobile"}}


async def page_views(redis: aioredis.Redis, customers: list[str]) -> dict[str, int]:
    store = RedisStore(redis)
    found = {}
    for cid in customers:
        stored = await store.read_profile(cid)
        found[cid] = 0 if stored is None else stored["profile"]["counts"].get("page_view", 0)
    return found


async def exit_code(proc: subprocess.Popen[bytes], env: Env, timeout: float) -> int:
    await until("the worker exits", lambda: proc.poll() is not None, timeout, env.worker_log)
    return int(proc.returncode)


def log_of(env: Env, n: int) -> str:
    return (env.tmp / f"worker-{n}.log").read_text(errors="replace")


async def test_a_worker_that_cannot_reach_redis_exits_2_with_the_reason(stack_env: Env) -> None:
    port = free_ports(1)[0]  # nothing listens there
    started = time.monotonic()
    worker = stack_env.start_worker(settings={
        "STREAMPROC_REDIS_URL": redis_url(port),
        "STREAMPROC_STARTUP_TIMEOUT_S": str(STARTUP_TIMEOUT_S)})
    assert await exit_code(worker, stack_env, STARTUP_TIMEOUT_S + 30) == 2, stack_env.worker_log()
    took = time.monotonic() - started
    log = log_of(stack_env, 0)
    assert f"cannot reach Redis at {redis_url(port)}: Connection refused" in log, log
    assert "streamproc stack up" in log and "STREAMPROC_REDIS_URL" in log, log
    assert "Joined group" not in log and "Kafka" not in log, log  # Kafka answered; no join
    assert took >= STARTUP_TIMEOUT_S, f"gave up after {took:.1f}s: it should retry until then"
    assert not await committed_offsets(stack_env)


async def test_a_worker_that_cannot_reach_kafka_exits_2_with_the_reason(stack_env: Env) -> None:
    port = free_ports(1)[0]
    started = time.monotonic()
    worker = stack_env.start_worker(settings={
        "STREAMPROC_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        "STREAMPROC_STARTUP_TIMEOUT_S": str(STARTUP_TIMEOUT_S)})
    assert await exit_code(worker, stack_env, STARTUP_TIMEOUT_S + 30) == 2, stack_env.worker_log()
    took = time.monotonic() - started
    log = log_of(stack_env, 0)
    assert f"cannot reach Kafka at 127.0.0.1:{port}: Connection refused" in log, log
    assert "STREAMPROC_KAFKA_BOOTSTRAP" in log and "cannot reach Redis" not in log, log
    assert took >= STARTUP_TIMEOUT_S, f"gave up after {took:.1f}s: it should retry until then"


async def test_a_worker_cut_off_from_redis_leaves_and_a_healthy_one_takes_over(
        stack_env: Env, test_redis: aioredis.Redis) -> None:
    host, port = BASE.redis_host_port
    relay = Relay(host, port)
    await relay.start()
    customers = [stack_env.customer("ff") for _ in range(24)]  # on every partition
    cut_off = stack_env.start_worker(settings={
        "STREAMPROC_REDIS_URL": redis_url(relay.port), "STREAMPROC_REDIS_OUTAGE_LEAVE_S": "4"})
    await stack_env.produce_events(stack_env.settings.topics.browsing,
                                   [view(c, "before") for c in customers])
    await until("the first events applied",
                lambda: _all_equal(test_redis, customers, 1), log=stack_env.worker_log)
    healthy = stack_env.start_worker()
    await until("the partitions shared", lambda: "Worker ready" in log_of(stack_env, 1),
                log=stack_env.worker_log)

    await relay.cut()
    cut_at = time.monotonic()
    await stack_env.produce_events(stack_env.settings.topics.browsing,
                                   [view(c, "during") for c in customers])
    assert await exit_code(cut_off, stack_env, 60) == 75, stack_env.worker_log()
    left_after = time.monotonic() - cut_at
    log = log_of(stack_env, 0)
    assert "unreachable for" in log and "leaving the group" in log, log
    assert 4 <= left_after < 40, f"left {left_after:.0f}s after the cut"
    # The healthy worker takes every partition: each event applied, once.
    await until("every event applied by the healthy worker",
                lambda: _all_equal(test_redis, customers, 2), log=stack_env.worker_log)
    assert healthy.poll() is None, stack_env.worker_log()
    assert set((await page_views(test_redis, customers)).values()) == {2}


async def test_sigterm_during_a_redis_outage_stops_the_worker_and_commits_nothing_unapplied(
        stack_env: Env, test_redis: aioredis.Redis) -> None:
    host, port = BASE.redis_host_port
    relay = Relay(host, port)
    await relay.start()
    customers = [stack_env.customer("st") for _ in range(24)]
    worker = stack_env.start_worker(settings={
        "STREAMPROC_REDIS_URL": redis_url(relay.port), "STREAMPROC_REDIS_OUTAGE_LEAVE_S": "0"})
    await stack_env.produce_events(stack_env.settings.topics.browsing,
                                   [view(c, "before") for c in customers])
    await until("the first events applied",
                lambda: _all_equal(test_redis, customers, 1), log=stack_env.worker_log)

    await relay.cut()
    await stack_env.produce_events(stack_env.settings.topics.browsing,
                                   [view(c, "during") for c in customers])
    await until("a batch retrying", lambda: "retrying in" in log_of(stack_env, 0),
                log=stack_env.worker_log)
    worker.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert await exit_code(worker, stack_env, 20) == 75, stack_env.worker_log()
    took = time.monotonic() - signalled
    log = log_of(stack_env, 0)
    assert "not finished" in log and "Connection" in log, log
    print(f"\nstopped {took:.1f}s after SIGTERM during the outage")

    # Nothing committed past what was applied...
    applied = await snapshot(test_redis, customers)
    committed = await committed_offsets(stack_env)
    assert all(committed[s] <= applied.last_offsets.get(s, -1) + 1 for s in committed), (
        committed, applied.last_offsets)
    # ...so a successor applies the events of the outage, each once.
    stack_env.start_worker()
    await until("the outage's events applied by the successor",
                lambda: _all_equal(test_redis, customers, 2), log=stack_env.worker_log)


async def _all_equal(redis: aioredis.Redis, customers: list[str], n: int) -> bool:
    counts = await page_views(redis, customers)
    assert max(counts.values()) <= n, counts  # never applied twice
    return set(counts.values()) == {n}
