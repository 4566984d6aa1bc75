"""A librdkafka producer (confluent-kafka) against a real worker: keys partitioned with CRC32,
librdkafka's default, land off the customer's murmur2 partition and are dead-lettered
(``wrong_partition``) or, with ``STREAMPROC_PARTITION_CHECK=warn``, processed and counted; with
``partitioner=murmur2_random`` the same events are applied and decided."""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaException, Producer

from streamproc.events.partitioner import partition_for
from streamproc.state.keys import customer_key
from tests.unit.helpers import event

from .conftest import Env
from .test_decisions import decisions_for, iso
from .test_web import free_port, poll, sample

pytestmark = pytest.mark.integration


def split_customer(env: Env) -> tuple[str, int, int]:
    """A customer whose CRC32 partition (librdkafka's default) and murmur2 partition differ:
    (id, CRC32 partition, murmur2 partition)."""
    n = env.settings.partitions
    for _ in range(1000):
        cid = env.customer("rdk")
        crc, murmur = zlib.crc32(cid.encode()) % n, partition_for(cid.encode(), n)
        if crc != murmur:
            return cid, crc, murmur
    raise AssertionError("no customer id with distinct CRC32 and murmur2 partitions")


def librdkafka_send(env: Env, topic: str, events: list[dict[str, Any]],
                    **config: str) -> list[int]:
    """Send ``events`` keyed by customer with a confluent-kafka producer; the partition of each,
    as the broker acknowledged it."""
    producer = Producer({"bootstrap.servers": env.settings.kafka_bootstrap, "acks": "all",
                         "enable.idempotence": True, **config})
    partitions: list[int] = []
    errors: list[Any] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            partitions.append(msg.partition())

    for e in events:
        producer.produce(topic, orjson.dumps(e), key=e["customer_id"].encode(),
                         on_delivery=delivered)
    left = producer.flush(30)
    if left or errors:
        raise KafkaException(f"{left} not delivered, errors {errors}")
    return partitions


def browsing(cid: str, now: float) -> list[dict[str, Any]]:
    return [
        event("page_view", customer=cid, ts=iso(now), event_id=f"{cid}-view"),
        event("slot_request", customer=cid, ts=iso(now + 1), event_id=f"{cid}-slot",
              slot="homepage_hero", page={"url": "https://shop.example/", "page_type": "home"}),
    ]


async def test_crc32_keys_are_dead_lettered_and_murmur2_random_keys_decided(
        stack_env: Env, test_redis) -> None:
    topics = stack_env.settings.topics
    cid, crc, murmur = split_customer(stack_env)
    stack_env.start_worker()
    events = browsing(cid, time.time())

    # librdkafka's default partitioner (consistent_random: CRC32 of the key).
    sent = await asyncio.to_thread(librdkafka_send, stack_env, topics.browsing, events)
    assert sent == [crc, crc]
    records = await stack_env.consume_until(topics.deadletter, lambda rs: sum(
        r["key"] == cid.encode() for r in rs) == 2)
    dead = [r["value"] for r in records if r["key"] == cid.encode()]
    assert [d["reason"] for d in dead] == ["wrong_partition", "wrong_partition"]
    assert [orjson.loads(d["value"]["data"]) for d in dead] == events  # the original bytes
    assert {d["source"]["partition"] for d in dead} == {crc}
    assert "partitioner=murmur2_random" in dead[0]["error"]
    assert f"belongs on partition {murmur} of 3" in dead[0]["error"]
    # Dead-lettered, not applied: the worker published the dead letters after the batch, and
    # nothing of the customer was written.
    assert await test_redis.exists(customer_key(cid)) == 0

    # The same events, with librdkafka partitioning as the Java clients do.
    sent = await asyncio.to_thread(librdkafka_send, stack_env, topics.browsing, events,
                                   partitioner="murmur2_random")
    assert sent == [murmur, murmur]
    records = await stack_env.consume_until(topics.decisions, lambda rs: any(
        d["trigger"]["event_id"] == f"{cid}-slot" for d in decisions_for(rs, cid)))
    decided = decisions_for(records, cid)
    assert [d["trigger"]["partition"] for d in decided] == [murmur]
    shown = stack_env.cli("profile", cid)
    assert shown.returncode == 0, shown.stderr
    profile = orjson.loads(shown.stdout)["profile"]
    assert profile["applied"] == {f"{topics.browsing}:{murmur}": 1}
    assert profile["counts"]["page_view"] == 1 and profile["counts"]["slot_request"] == 1


async def test_warn_mode_processes_and_counts_crc32_keys(stack_env: Env) -> None:
    topics = stack_env.settings.topics
    cid, crc, _ = split_customer(stack_env)
    port = free_port()
    stack_env.env.update({"STREAMPROC_PARTITION_CHECK": "warn",
                          "STREAMPROC_WEB_PORT": str(port)})
    stack_env.start_worker()
    events = browsing(cid, time.time())
    assert await asyncio.to_thread(librdkafka_send, stack_env, topics.browsing,
                                   events) == [crc, crc]

    records = await stack_env.consume_until(topics.decisions, lambda rs: any(
        d["trigger"]["event_id"] == f"{cid}-slot" for d in decisions_for(rs, cid)))
    assert [d["trigger"]["partition"] for d in decisions_for(records, cid)] == [crc]

    def counted(status: int, body: bytes) -> bool:
        return status == 200 and sample(body.decode(), "streamproc_wrong_partition_total",
                                        topic=topics.browsing, handling="warn") == 2

    _, body = await poll(stack_env, port, "/metrics", counted)
    assert sample(body.decode(), "streamproc_deadletters_total",
                  reason="wrong_partition") is None
    deadline = time.monotonic() + 30
    while "processed on the wrong partition" not in stack_env.worker_log():
        assert time.monotonic() < deadline, stack_env.worker_log()
        await asyncio.sleep(0.3)
    assert "partitioner=murmur2_random" in stack_env.worker_log()
