"""Follow an output topic and print its records for a person (``streamproc tail``)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from streamproc.errors import StreamprocError
from streamproc.settings import Settings


async def topic_partitions(settings: Settings, topic: str, wait_s: float = 0.0) -> list[int]:
    """The partition numbers of ``topic``, waiting up to ``wait_s`` for a new topic to appear."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            [found] = await admin.describe_topics([topic])
            if found["error_code"] == 0 and found["partitions"]:
                return sorted(p["partition"] for p in found["partitions"])
            if asyncio.get_running_loop().time() >= deadline:
                return []
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def open_consumer(settings: Settings, topic: str) -> tuple[AIOKafkaConsumer, list[int]]:
    """A started consumer outside any group (the caller assigns partitions and stops it) and
    the partitions of ``topic`` (empty when it does not exist); a clear error without Kafka."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_auto_commit=False)
    try:
        await consumer.start()
        partitions = await topic_partitions(settings, topic)
    except KafkaConnectionError as exc:
        await consumer.stop()
        raise StreamprocError(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc}); is the stack up? "
            "Run `streamproc stack up` or set STREAMPROC_KAFKA_BOOTSTRAP"
        ) from None
    return consumer, partitions


def format_decision(d: dict[str, Any]) -> str:
    action = d.get("action") or {}
    where = d.get("slot") or d.get("channel")
    reasons = "; ".join(d.get("reasons") or [])
    flag = "" if d.get("personalised", True) else " (neutral)"
    return (f"{d.get('ts', '?')}  {d.get('customer_id', '?'):<14} {action.get('id', '?')}"
            f"{flag} -> {d.get('channel')}/{where}  [{d.get('trigger', {}).get('type')}] "
            f"{reasons}  ({d.get('latency_ms', 0):.0f} ms)")


def format_deadletter(d: dict[str, Any]) -> str:
    src = d.get("source") or {}
    return (f"{src.get('topic')}:{src.get('partition')}@{src.get('offset')}  "
            f"{d.get('reason')}: {d.get('error')}")


def format_record(kind: str, key: bytes | None, value: bytes | None) -> str:
    if value is None:
        return f"tombstone for {key!r}"
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return f"(not JSON) {value[:200]!r}"
    if kind == "decisions":
        return format_decision(record)
    if kind == "deadletter":
        return format_deadletter(record)
    return str(orjson.dumps(record).decode())


async def tail_topic(
    settings: Settings, topic: str, kind: str, *, from_beginning: bool = False,
    limit: int | None = None, customer: str | None = None, raw: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    consumer, partitions = await open_consumer(settings, topic)
    shown = 0
    try:
        if not partitions:
            raise StreamprocError(f"topic {topic} does not exist; run `streamproc stack up`")
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        print(f"following {topic} (Ctrl-C to stop)", file=sys.stderr)
        async for msg in consumer:
            if customer is not None and msg.key != customer.encode():
                continue
            line = (msg.value or b"null").decode("utf-8", "replace") if raw else format_record(
                kind, msg.key, msg.value)
            print(line, file=out, flush=True)
            shown += 1
            if limit is not None and shown >= limit:
                break
    finally:
        await consumer.stop()
    return shown
