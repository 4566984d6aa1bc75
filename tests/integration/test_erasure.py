"""Erasure that erases, on the real stack: compacted output topics (and what compaction does with
a tombstone, measured on the broker), the worker's refusal of a topic that contradicts it, and
the suppression of an erased customer's replayed events."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streamproc.settings import Settings
from streamproc.stack import ensure_topics
from streamproc.stack.topics import compacted_configs, compacted_topics, topic_configs
from streamproc.worker.preflight import check_topic_configs
from tests.unit.helpers import event

from .conftest import Env
from .test_privacy import _keys_mentioning, _wait_for_profile

pytestmark = [pytest.mark.integration, pytest.mark.core]


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def test_output_topics_are_created_compacted_and_inputs_are_not(stack_env: Env) -> None:
    settings = stack_env.settings
    found = await topic_configs(settings, list(settings.topics.all()))
    wanted = compacted_configs(settings)
    for name in compacted_topics(settings):
        assert {k: found[name][k] for k in wanted} == wanted, name
    for name in settings.topics.inputs:  # expire by retention; never compacted
        assert found[name]["cleanup.policy"] == "delete", name
    assert found[settings.topics.decisions]["min.compaction.lag.ms"] == str(7 * 86_400_000)


async def test_a_worker_refuses_a_topic_that_is_not_compacted_and_stack_up_fixes_it(
        stack_env: Env) -> None:
    settings = stack_env.settings
    decisions = settings.topics.decisions
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:  # as a topic made before compaction, with a retention of its own (AlterConfigs
        # replaces every value set on the topic: its min.insync.replicas is given again)
        await admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, decisions,
            {"cleanup.policy": "delete", "retention.ms": "3600000",
             "min.insync.replicas": str(settings.min_insync_replicas)})])
    finally:
        await admin.close()
    async with asyncio.timeout(30):  # the brokers take the change a moment after the controller
        while (await topic_configs(settings, [decisions]))[decisions]["cleanup.policy"] != \
                "delete":
            await asyncio.sleep(0.1)
    worker = stack_env.start_worker()
    try:
        code = await asyncio.wait_for(asyncio.to_thread(worker.wait), 60)
    except TimeoutError:
        pytest.fail(f"the worker did not refuse the topic:\n{stack_env.worker_log()}")
    log = stack_env.worker_log()
    assert code == 2, log
    assert f"refusing to start: {decisions} (cleanup.policy=delete) is not compacted" in log
    assert "streamproc stack up" in log and f"--entity-name {decisions}" in log
    assert "Traceback" not in log

    fixed: list[str] = []
    assert await ensure_topics(settings, fix_configs=True, out=fixed) == []
    assert fixed == [decisions]
    found = (await topic_configs(settings, [decisions]))[decisions]
    assert found["cleanup.policy"] == "compact,delete"
    assert found["retention.ms"] == "3600000"  # the topic's own values are kept
    assert found["min.insync.replicas"] == str(settings.min_insync_replicas)
    await check_topic_configs(settings)  # no refusal now
    fixed.clear()
    await ensure_topics(settings, fix_configs=True, out=fixed)
    assert fixed == []  # nothing to do the second time


async def test_a_tombstone_removes_the_customers_earlier_records_once_the_cleaner_passes(
        stack_env: Env) -> None:
    """The shape of the decisions topic (compact,delete) with small values, so that the cleaner
    acts within seconds: after a tombstone, the customer's records are gone while the other
    customer's latest stays. Its earlier record goes too: past the compaction lag only each
    key's latest record is kept, which is why STREAMPROC_COMPACT_AFTER_DAYS keeps the history."""
    settings = Settings(kafka_bootstrap=stack_env.settings.kafka_bootstrap,
                        compact_after_days=0, tombstone_hours=0)
    topic = f"{stack_env.settings.topics.decisions}-probe-{uuid.uuid4().hex[:6]}"
    configs = {**compacted_configs(settings), "segment.ms": "200",
               "min.cleanable.dirty.ratio": "0.01"}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=configs)])
        for key, value in ((b"erased", b"e1"), (b"kept", b"k1"), (b"erased", b"e2"),
                           (b"kept", b"k2")):
            await producer.send_and_wait(topic, value, key=key)
        await producer.send_and_wait(topic, None, key=b"erased")
        started = time.monotonic()
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        seen: list[tuple[bytes | None, bytes | None]] = []
        filler = 0
        async with asyncio.timeout(120):
            while True:
                # The active segment is never compacted, and rolls only on an append after
                # segment.ms: keep appending (records of a third key) so that it rolls.
                filler += 1
                await producer.send_and_wait(topic, b"f", key=f"filler-{filler}".encode())
                await consumer.seek_to_beginning(tp)
                end = (await consumer.end_offsets([tp]))[tp]
                seen = []
                while await consumer.position(tp) < end:
                    batch = await consumer.getmany(tp, timeout_ms=1000)
                    seen.extend((m.key, m.value) for m in batch.get(tp, []))
                # Done when a whole read holds the other customer and none of the erased one's
                # values (a read that came back empty, as one did while the cleaner swapped
                # segments, proves nothing).
                if (any(k == b"kept" for k, _ in seen)
                        and not any(k == b"erased" and v is not None for k, v in seen)):
                    break
                await asyncio.sleep(1)
        took = time.monotonic() - started
    finally:
        await consumer.stop()
        await producer.stop()
        await admin.delete_topics([topic])
        await admin.close()
    print(f"erased customer's records gone {took:.1f} s after the tombstone")
    assert [v for k, v in seen if k == b"kept"] == [b"k2"]
    assert not [v for k, v in seen if k == b"erased" and v is not None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _metric(port: int, name: str) -> str:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


async def test_a_replayed_pre_erasure_event_does_not_bring_the_profile_back(
        stack_env: Env, test_redis) -> None:
    topics = stack_env.settings.topics
    cid = stack_env.customer("erased")
    port = _free_port()
    stack_env.start_worker(settings={"STREAMPROC_WEB_PORT": str(port)})
    now = datetime.now(UTC)
    cart = event("cart_add", customer=cid, ts=_iso(now - timedelta(minutes=10)))
    await stack_env.produce_events(topics.browsing, [cart])
    await stack_env.produce_events(topics.purchases, [
        event("purchase", customer=cid, ts=_iso(now - timedelta(minutes=9)))])
    async with asyncio.timeout(60):
        while (await _wait_for_profile(stack_env, cid))["profile"]["counts"].get(
                "purchase") is None:
            await asyncio.sleep(0.2)
    await stack_env.produce_events(topics.profiles, [
        event("erase", customer=cid, ts=_iso(datetime.now(UTC)), reason="GDPR test")])
    async with asyncio.timeout(60):
        while stack_env.cli("profile", cid).returncode == 0:
            await asyncio.sleep(0.2)
    erased = [k async for k in test_redis.scan_iter(match="sp:erased:*")]
    assert erased and not any(cid.encode() in k for k in erased)

    # The cart_add again, as a producer's retry or a replay sends it (same id, same time), then
    # the customer coming back: a search after the erasure, on the same partition, after it.
    back = event("search", customer=cid, ts=_iso(datetime.now(UTC)))
    await stack_env.produce_events(topics.browsing, [cart, back])
    profile = (await _wait_for_profile(stack_env, cid))["profile"]
    assert profile["counts"].get("search") == 1
    assert "cart_add" not in profile["counts"], profile["counts"]
    assert profile["purchases"]["orders"] == 0
    assert "cart" not in profile or not profile["cart"].get("items"), profile.get("cart")
    suppressed = _metric(port, "streamproc_suppressed_total")
    assert f'streamproc_suppressed_total{{topic="{topics.browsing}"}} 1.0' in suppressed, \
        suppressed
    log = stack_env.worker_log()
    assert "1 event(s) of erased customers suppressed" in log, log
    assert cid not in log
    # Only the new profile's keys name the customer: the suppression record does not.
    mentioning = {k.decode() for k in await _keys_mentioning(test_redis, cid)}
    assert all(k.startswith((f"sp:{{{cid}}}", "sp:timers:")) for k in mentioning), mentioning
