"""The worker's emitter on the real broker: a record batch per partition, records where their
keys belong (Kafka's murmur2 partitioner, as a per-record ``send`` put them), in order, each
once, tombstones and keyless records included, more records per partition than one batch
holds."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer

from streamproc.events.partitioner import partition_for
from streamproc.worker.emitter import KafkaEmitter, Record

from .conftest import Env

pytestmark = pytest.mark.integration


async def read_all(env: Env, topic: str, count: int,
                   timeout: float = 30) -> list[tuple[int, bytes | None, bytes | None]]:
    """The first ``count`` records of ``topic``, (partition, key, value), partition by
    partition in offset order; fails when fewer arrive within ``timeout`` seconds."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=env.settings.kafka_bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got: list[tuple[int, bytes | None, bytes | None]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, messages in sorted(batches.items()):
                got.extend((tp.partition, m.key, m.value) for m in messages)
        # Nothing more than expected: one more fetch finds no duplicate.
        extra = await consumer.getmany(timeout_ms=1000)
        got.extend((tp.partition, m.key, m.value) for tp, ms in extra.items() for m in ms)
    finally:
        await consumer.stop()
    assert len(got) == count, f"{len(got)} records on {topic}, expected {count}"
    return got


async def test_records_land_on_their_keys_partitions_in_order_each_once(stack_env: Env) -> None:
    topics = stack_env.settings.topics
    partitions = stack_env.settings.partitions
    customers = [f"emit-{i}".encode() for i in range(40)]
    # 1,200 records of about 300 bytes on 3 partitions: each partition's share (about 120 KB)
    # outgrows aiokafka's default 16 KB batch several times over.
    records: list[Record] = [(topics.decisions, customers[i % len(customers)],
                              b"%d:" % i + b"x" * 300) for i in range(1200)]
    records += [(topics.decisions, customers[0], None),  # a tombstone
                (topics.learning, None, b"keyless")]
    emitter = KafkaEmitter(stack_env.settings)
    try:
        await emitter.send(records)
        await emitter.send([(topics.decisions, customers[1], b"second call")])
    finally:
        await emitter.close()

    got = await read_all(stack_env, topics.decisions, 1202)
    by_key: dict[bytes | None, list[bytes | None]] = defaultdict(list)
    for partition, key, value in got:
        assert key is not None and partition == partition_for(key, partitions), (key, partition)
        by_key[key].append(value)
    for n, cid in enumerate(customers):
        sent = [v for _, k, v in records if k == cid] + ([b"second call"] if n == 1 else [])
        assert by_key[cid] == sent  # every record once, in the order sent
    assert by_key[customers[0]][-1] is None
    assert [v for _, _, v in await read_all(stack_env, topics.learning, 1)] == [b"keyless"]

