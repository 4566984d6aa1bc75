"""A running worker through a Redis outage and a Kafka outage, on a stack of this test's own.

docs/operations.md ("When something fails") says what a worker does when Redis or Kafka goes
away: it stays up, says it is not ready (Redis), retries, and when the server is back it goes on
from where it was: nothing lost, nothing applied twice. These tests stop and restart the real
servers under a real worker. The stack is the test's own (free ports, its own dir, as in
test_stack.py), so the shared stack the other tests use is never touched.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamproc.learning.modelstore import RedisModelStore
from streamproc.learning.scorer import snapshot_stats
from streamproc.settings import Settings
from streamproc.stack import kafka, redis, stack_down, stack_up
from streamproc.state.store import RedisStore

from .conftest import CONSENT_GRANTED, REPO, stop_process
from .polling import until
from .test_stack import free_ports
from .test_web import get

pytestmark = pytest.mark.integration

SECRET = "outage-test-secret"


@dataclass
class Running:
    settings: Settings
    worker: subprocess.Popen[bytes]
    log: Path
    port: int

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    async def until(self, what: str, check: Callable[[], Any], timeout: float = 90.0) -> Any:
        """Poll ``check`` while the worker runs until it returns something truthy; fail with
        the worker's log."""
        def running() -> Any:
            assert self.worker.poll() is None, (
                f"the worker exited with {self.worker.returncode}:\n{self.log_text()}")
            return check()

        return await until(what, running, timeout, self.log_text)

    def readyz(self) -> int:
        status, _ = get(self.port, "/readyz")
        return status


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    broker, controller, redis_port, web = free_ports(4)
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{broker}", kafka_controller_port=controller,
                        redis_url=f"redis://127.0.0.1:{redis_port}/0",
                        stack_dir=tmp_path / "stack", partitions=3, kafka_heap="512m")
    await asyncio.to_thread(stack_up, settings, io.StringIO())
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    env.update({"STREAMPROC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                "STREAMPROC_REDIS_URL": settings.redis_url,
                "STREAMPROC_STACK_DIR": str(settings.stack_dir),
                "STREAMPROC_PARTITIONS": "3", "STREAMPROC_WEB_PORT": str(web),
                "STREAMPROC_MODEL_SECRET": SECRET, "STREAMPROC_MODEL_SNAPSHOT_SECONDS": "1",
                "STREAMPROC_LOG_LEVEL": "info", "PYTHONPATH": str(REPO), **CONSENT_GRANTED})
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "streamproc.cli", "worker"], env=env,
                                  stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    run = Running(settings, worker, log, web)
    try:
        await run.until("the worker is ready", lambda: run.readyz() == 200)
        yield run
    finally:
        stop_process(worker, 30)
        await asyncio.to_thread(stack_down, settings, io.StringIO())


def events(customer: str, tag: str) -> list[dict[str, Any]]:
    """A page view, and a cart add that the decision engine answers (a cart reminder)."""
    return [{"event_id": f"{tag}-view", "type": "page_view", "customer_id": customer,
             "ts": "2026-03-01T10:00:00.000Z", "url": "https://shop.example.com/c/shoes",
             "page_type": "category", "category": "shoes",
             "context": {"session_id": f"s-{customer}", "device": "mobile"}},
            {"event_id": f"{tag}-add", "type": "cart_add", "customer_id": customer,
             "ts": "2026-03-01T10:01:00.000Z", "quantity": 1,
             "product": {"product_id": "p1", "category": "shoes", "price": 80.0}}]


async def produce(settings: Settings, records: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        for e in records:
            await producer.send_and_wait(settings.topics.browsing, orjson.dumps(e),
                                         key=e["customer_id"].encode())
    finally:
        await producer.stop()


async def counts(settings: Settings, customer: str) -> dict[str, int] | None:
    """The customer's event counts in Redis (None: no profile, or Redis unreachable)."""
    store = RedisStore.from_url(settings.redis_url)
    try:
        found = await store.read_profile(customer)
    except Exception:
        return None
    finally:
        await store.close()
    return None if found is None else found["profile"]["counts"]


async def decisions_for(settings: Settings, customer: str, want: int) -> list[dict[str, Any]]:
    """The decisions topic's records for ``customer``, from the start, once there are ``want``."""
    consumer = AIOKafkaConsumer(settings.topics.decisions,
                                bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(60):
            while len(found) < want:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    found += [orjson.loads(m.value) for m in batch
                              if m.key == customer.encode() and m.value]
    finally:
        await consumer.stop()
    return found


async def test_a_worker_waits_out_a_redis_outage_and_applies_everything_once(
        running: Running) -> None:
    s = running.settings
    cid = await applied_before(running, "r")

    await asyncio.to_thread(redis.stop, s, io.StringIO())
    # Not ready while Redis is away (/readyz 503), and the worker keeps running.
    await running.until("/readyz says Redis does not answer",
                        lambda: _not_ready(running, b"Redis does not answer"))
    await produce(s, events(cid, "during"))  # Kafka holds them meanwhile
    await running.until("a failed batch retried", lambda: "retrying" in running.log_text())

    await asyncio.to_thread(stack_up, s, io.StringIO())  # Redis again, from its append-only file
    await both_applied_once(running, cid, "during")
    await running.until("ready again", lambda: running.readyz() == 200)


async def test_a_worker_rides_out_a_kafka_outage_and_goes_on_where_it_was(
        running: Running) -> None:
    s = running.settings
    cid = await applied_before(running, "k")

    await asyncio.to_thread(kafka.stop, s, io.StringIO())
    await running.until("/readyz says Kafka does not answer",
                        lambda: _not_ready(running, b"Kafka does not answer"))
    assert running.worker.poll() is None
    await asyncio.to_thread(stack_up, s, io.StringIO())  # the same broker, its data kept

    await produce(s, events(cid, "after"))
    await both_applied_once(running, cid, "after")
    await running.until("ready again", lambda: running.readyz() == 200)
    # The learner (in the worker) goes on too: its snapshot covers the learning topic's end.
    end = await learning_end(s)
    await running.until("the learner past the outage", lambda: learnt_up_to(s, end - 1))


async def learning_end(settings: Settings) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(settings.topics.learning, 0)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


async def learnt_up_to(settings: Settings, offset: int) -> bool:
    """Whether the learner's latest snapshot covers the learning topic up to ``offset``."""
    client = aioredis.from_url(settings.redis_url)
    try:
        blob = await RedisModelStore(client, settings.app_id).get("serving")
    finally:
        await client.aclose()
    return blob is not None and \
        snapshot_stats(blob, SECRET.encode())["learner"]["offset"] >= offset


def _not_ready(running: Running, reason: bytes) -> tuple[int, bytes] | None:
    status, body = get(running.port, "/readyz")
    return (status, body) if status == 503 and reason in body else None


async def applied_before(running: Running, prefix: str) -> str:
    """A new customer whose events tagged "before" are applied; returns its id."""
    cid = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await produce(running.settings, events(cid, "before"))
    await running.until("the first events applied", lambda: counts(running.settings, cid))
    return cid


async def both_applied_once(running: Running, cid: str, tag: str) -> None:
    """The events tagged "before" and ``tag`` are in the customer's state once each, and each
    cart add was decided."""
    s = running.settings

    async def twice() -> dict[str, int] | None:
        found = await counts(s, cid)
        done = found and found.get("page_view", 0) >= 2 and found.get("cart_add", 0) >= 2
        return found if done else None

    applied = await running.until(f"the {tag} events applied", twice)
    assert applied["page_view"] == 2 and applied["cart_add"] == 2, applied  # each once
    decided = await decisions_for(s, cid, 2)
    assert [d["trigger"]["event_id"] for d in decided] == ["before-add", f"{tag}-add"], decided
