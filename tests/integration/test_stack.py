"""The real local stack: a Kafka broker and a Redis server, on this test's own free ports.

Its own ports and stack dir keep it apart from the developer's stack (and from a concurrent
run); the jar cache is the real one, so Maven runs only if nothing is cached yet.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamproc.errors import StackError
from streamproc.settings import Settings
from streamproc.stack import ensure_topics, kafka, redis, stack_down, stack_status, stack_up
from streamproc.stack.process import pid_alive, port_in_use, write_pid

pytestmark = pytest.mark.integration


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    broker, controller, redis_port = free_ports(3)
    s = Settings(
        kafka_bootstrap=f"127.0.0.1:{broker}",
        kafka_controller_port=controller,
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        stack_dir=tmp_path / "stack",
        partitions=3,
        kafka_heap="512m",
    )
    yield s
    stack_down(s, io.StringIO())  # whatever happened, leave nothing running


def redis_command(settings: Settings, *args: str) -> bytes:
    host, port = settings.redis_host_port
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(redis._resp(*args))
        return sock.recv(1024)


async def partition_counts(settings: Settings) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}
    finally:
        await admin.close()


async def round_trip(settings: Settings) -> bytes:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(settings.topics.browsing, b"hello", key=b"c1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(settings.topics.browsing, meta.partition)
        consumer.assign([tp])
        message = await asyncio.wait_for(consumer.getone(), 20)
        return bytes(message.value or b"")
    finally:
        await consumer.stop()


def test_up_status_topics_down(settings: Settings) -> None:
    assert [c.state for c in stack_status(settings).components] == ["stopped", "stopped"]

    out = io.StringIO()
    status = stack_up(settings, out)
    assert status.running, out.getvalue()
    assert "kafka: ready" in out.getvalue() and "redis: ready" in out.getvalue()
    assert status.kafka.pid and status.redis.pid
    # Detached: own sessions, so they outlive the CLI that started them.
    assert os.getsid(status.kafka.pid) != os.getsid(0)
    assert os.getsid(status.redis.pid) != os.getsid(0)

    again = io.StringIO()
    assert stack_up(settings, again) == status  # a no-op
    assert "already running" in again.getvalue() and "starting" not in again.getvalue()

    counts = asyncio.run(partition_counts(settings))
    assert {name: counts.get(name) for name in settings.topics.all()} == {
        name: 1 if name in (settings.topics.learning, settings.topics.products) else 3
        for name in settings.topics.all()}
    assert asyncio.run(ensure_topics(settings)) == []
    with pytest.raises(StackError, match="STREAMPROC_PARTITIONS=4"):
        asyncio.run(ensure_topics(replace(settings, partitions=4)))

    assert asyncio.run(round_trip(settings)) == b"hello"
    assert redis_command(settings, "PING") == b"+PONG\r\n"
    assert redis_command(settings, "SET", "k", "v") == b"+OK\r\n"
    assert (settings.stack_dir / "kafka" / "server.log").stat().st_size > 0
    assert (settings.stack_dir / "redis" / "appendonlydir").is_dir()

    down = io.StringIO()
    stack_down(settings, down)
    assert f"kafka: stopped (pid {status.kafka.pid})" in down.getvalue()
    assert f"redis: stopped (pid {status.redis.pid})" in down.getvalue()
    assert not pid_alive(status.kafka.pid) and not pid_alive(status.redis.pid)
    assert [c.state for c in stack_status(settings).components] == ["stopped", "stopped"]
    stack_down(settings, down)  # nothing running is fine
    assert down.getvalue().endswith("kafka: not running\nredis: not running\n")


def test_stale_pid_files_are_cleaned_up(settings: Settings) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    kafka_paths, redis_paths = kafka.KafkaPaths.of(settings), redis.RedisPaths.of(settings)
    kafka_paths.root.mkdir(parents=True)
    redis_paths.root.mkdir(parents=True)
    write_pid(kafka_paths.pid, dead.pid)  # crashed
    write_pid(redis_paths.pid, os.getpid())  # pid reused by another program: never killed
    assert [c.state for c in stack_status(settings).components] == ["stale", "stale"]

    out = io.StringIO()
    status = stack_up(settings, out)
    assert status.running
    assert out.getvalue().count("cleaning up a stale pid file") == 2
    assert status.redis.pid != os.getpid()
    stack_down(settings, io.StringIO())
    assert not stack_status(settings).running


def _listened(port: int) -> bool:
    """Something listens on ``port``, or holds it (a connection's local end: a port picked
    from the ephemeral range can be one), so that a server could not bind it."""
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            return True
    return port_in_use("127.0.0.1", port)  # the stack's own check before it starts a server


def free_run(count: int, bus: int = 0, avoid: Settings | None = None) -> int:
    """The first of ``count`` consecutive free ports (a three-node Kafka's extra ports); with
    ``bus``, each port's ``port + bus`` is free too (a Redis Cluster node's bus port: 10000);
    none of them a port ``avoid`` gives Kafka or Redis (not listening before they start)."""
    taken = set() if avoid is None else {avoid.kafka_host_port[1], avoid.kafka_controller_port,
                                         avoid.redis_host_port[1]}
    for _ in range(50):
        first = free_ports(1)[0]
        ports = [*range(first, first + count), *range(first + bus, first + bus + count)]
        if (max(ports) < 65_536 and not taken & set(ports)
                and not any(map(_listened, ports))):
            return first
    raise AssertionError(f"found no {count} consecutive free ports")


def test_a_three_broker_stack_is_seen_whole_without_the_flag(settings: Settings) -> None:
    """`stack up --kafka-brokers 3`, then `status` and `up` without the flag report all three
    brokers (the count is recorded in the stack dir), and `down` stops all of them."""
    three = replace(settings, kafka_brokers=3, kafka_extra_port=free_run(4, avoid=settings),
                    kafka_heap="384m")
    started = stack_up(three, io.StringIO())
    assert started.running and len(started.brokers) == 2
    pids = [c.pid for c in (started.kafka, *started.brokers)]

    plain = replace(three, kafka_brokers=1)  # what a `streamproc status` without flags has
    seen = stack_status(plain)
    assert [(c.name, c.state, c.pid) for c in (seen.kafka, *seen.brokers)] == [
        (name, "running", pid) for name, pid in zip(("kafka", "kafka-2", "kafka-3"), pids,
                                                     strict=True)]
    out = io.StringIO()
    assert stack_up(plain, out).running
    assert "made with 3 brokers" in out.getvalue()
    assert f"already running (3 Kafka brokers: STREAMPROC_KAFKA_BOOTSTRAP=" \
           f"{kafka.bootstrap_of(three)})" in out.getvalue()

    down = io.StringIO()
    stack_down(plain, down)
    for name, pid in zip(("kafka", "kafka-2", "kafka-3"), pids, strict=True):
        assert f"{name}: stopped (pid {pid})" in down.getvalue()
        assert pid is not None and not pid_alive(pid)
    assert not any(c.running for c in stack_status(plain).components)


def test_up_with_a_redis_cluster_names_its_nodes_not_a_pid(settings: Settings) -> None:
    """`stack up --redis-cluster 3` from nothing starts Kafka, Redis and the cluster and
    reports the cluster once; a later `stack up` that has Kafka to start says the cluster runs,
    naming its nodes (a cluster has a process per node, no one pid)."""
    settings = replace(settings, redis_cluster_port=free_run(6, bus=10_000,
                                                                  avoid=settings))
    out = io.StringIO()
    assert stack_up(settings, out, redis_cluster_primaries=3).running, out.getvalue()
    said = out.getvalue()
    assert "redis-cluster: creating 3 primaries" in said and "redis-cluster: ready" in said
    assert "already running" not in said and "None" not in said, said

    kafka.stop(settings, io.StringIO())
    again = io.StringIO()
    status = stack_up(settings, again)
    assert status.running and status.redis_cluster is not None, again.getvalue()
    said = again.getvalue()
    assert "kafka: ready" in said, said
    assert f"redis: already running (pid {status.redis.pid})" in said, said
    assert "redis-cluster: already running (6 of 6 nodes; STREAMPROC_REDIS_URL=" \
           "redis+cluster://" in said, said
    assert "None" not in said, said
