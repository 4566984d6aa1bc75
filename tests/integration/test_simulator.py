"""run_simulation against the real local Kafka (STREAMPROC_KAFKA_BOOTSTRAP, by default
127.0.0.1:9092; topic auto-creation disabled).

Each test run creates its own uniquely prefixed topics and deletes them afterwards, so it can run
beside a developer's stack and other test runs.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamproc.events.schemas import load_event_schemas
from streamproc.settings import Settings, Topics
from streamproc.simulator import KafkaUnavailableError, run_simulation
from streamproc.simulator.sessions import SIMULATED_TOPICS

pytestmark = pytest.mark.integration

BOOTSTRAP = Settings.from_env().kafka_bootstrap
PARTITIONS = 3
TIMEOUT_S = 30.0


async def _wait_for(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` until it is true; fail if the deadline passes first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT_S
    while not await condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def settings() -> AsyncIterator[Settings]:
    settings = Settings(kafka_bootstrap=BOOTSTRAP,
                        topics=Topics.with_prefix(f"simtest-{uuid.uuid4().hex[:12]}."))
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    names = list(settings.topics.all())
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=PARTITIONS, replication_factor=1) for name in names])

        async def all_ready() -> bool:
            described = await admin.describe_topics(names)
            return all(t["error_code"] == 0 and len(t["partitions"]) == PARTITIONS
                       and all(p["leader"] >= 0 for p in t["partitions"]) for t in described)

        await _wait_for(all_ready, "the test topics")
        yield settings
    finally:
        try:
            await admin.delete_topics(names)
        finally:
            await admin.close()


async def _consume(settings: Settings, expected: int) -> list[tuple[str, bytes, bytes]]:
    """Every message of the simulated topics, reading until ``expected`` have arrived."""
    names = [getattr(settings.topics, t) for t in SIMULATED_TOPICS]
    consumer = AIOKafkaConsumer(*names, bootstrap_servers=BOOTSTRAP, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[tuple[str, bytes, bytes]] = []
    try:
        async def have_all() -> bool:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                out.extend((r.topic, r.key, r.value) for r in records)
            return len(out) >= expected

        await _wait_for(have_all, f"{expected} messages")
        # anything beyond the expected count would be a duplicate: read a little more
        extra = await consumer.getmany(timeout_ms=500)
        out.extend((r.topic, r.key, r.value) for records in extra.values() for r in records)
    finally:
        await consumer.stop()
    return out


async def test_simulation_round_trip(settings: Settings) -> None:
    progress = io.StringIO()
    stats = await run_simulation(settings, customers=300, rate=5_000, duration=None,
                                 max_events=2_000, seed=11, progress=progress)
    assert stats.events == stats.delivered == 2_000
    assert "simulation done" in progress.getvalue()

    messages = await _consume(settings, 2_000)
    assert len(messages) == 2_000

    schemas = load_event_schemas()
    logical = {getattr(settings.topics, t): t for t in SIMULATED_TOPICS}
    per_topic: Counter[str] = Counter()
    ids = set()
    for topic, key, value in messages:
        event = orjson.loads(value)
        assert key == event["customer_id"].encode(), "message key must equal customer_id"
        schemas[event["type"]].validate(event)
        assert schemas[event["type"]].topic == logical[topic]
        per_topic[logical[topic]] += 1
        ids.add(event["event_id"])
    assert dict(per_topic) == stats.by_topic
    assert per_topic["browsing"] > per_topic["purchases"] > 0
    assert len(ids) == 2_000


async def test_missing_topics_are_reported() -> None:
    settings = Settings(kafka_bootstrap=BOOTSTRAP,
                        topics=Topics.with_prefix(f"simtest-missing-{uuid.uuid4().hex[:12]}."))
    with pytest.raises(KafkaUnavailableError, match=r"has no topic .*stack up"):
        await run_simulation(settings, customers=5, rate=10, duration=1, progress=None)
