"""Follow an output topic and print its records for a person (``streamproc tail``)."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from streamproc.errors import StreamprocError
from streamproc.events.codec import parse_ts
from streamproc.kafka_options import kafka_options
from streamproc.settings import Settings


async def topic_partitions(settings: Settings, topic: str, wait_s: float = 0.0) -> list[int]:
    """The partition numbers of ``topic``, waiting up to ``wait_s`` for a new topic to appear."""
    admin = AIOKafkaAdminClient(**kafka_options(settings))
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
    consumer = AIOKafkaConsumer(**kafka_options(settings),
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


REASON_WIDTH = 60
_NEUTRAL_REASON = re.compile(r"(?: for \S+:|,) neutral \S+$")
_BANDIT_REASON = re.compile(r"posterior success rate of (?P<rate>[0-9.]+) over (?P<n>\d+) "
                            r"outcomes; picked with probability [0-9.]+ among (?P<k>\d+) action")


def short_reason(reason: str, width: int = REASON_WIDTH) -> str:
    """A reason cut to ``width`` characters; the bandit's long one to its figures.

    >>> short_reason("bandit (thompson-v1) in context homepage_hero:new: shoes has a posterior "
    ...              "success rate of 0.500 over 0 outcomes; picked with probability 0.480 "
    ...              "among 2 actions")
    'posterior 0.500 over 0 outcomes, 1 of 2 actions'
    >>> short_reason("no eligible action for homepage_hero: neutral bestsellers_hero")
    'no eligible action'
    >>> short_reason("experiment hero-2026: control group, neutral bestsellers_hero")
    'experiment hero-2026: control group'
    >>> short_reason("x" * 70, width=10)
    'xxxxxxxxx…'
    """
    reason = _NEUTRAL_REASON.sub("", reason)  # the line shows the slot and the action
    found = _BANDIT_REASON.search(reason)
    if found:
        reason = (f"posterior {found['rate']} over {found['n']} outcomes, "
                  f"1 of {found['k']} actions")
    return reason if len(reason) <= width else reason[:width - 1] + "…"


def _clock(ts: Any) -> str:
    """HH:MM:SS of an event time, in UTC ('?' when it is not one)."""
    try:
        return time.strftime("%H:%M:%S", time.gmtime(parse_ts(ts) / 1000))
    except (TypeError, ValueError):
        return "?"


def format_decision(d: dict[str, Any], why: bool = False) -> str:
    """One line per decision: time (UTC), customer, slot (or channel), action, policy and
    experiment arm, propensity and the deciding reason, shortened; ``why`` adds every reason
    on a line of its own.

    >>> print(format_decision({"ts": "2026-03-01T10:01:00.000Z", "customer_id": "cust-42",
    ...     "slot": "homepage_hero", "channel": "web", "action": {"id": "running_shoes_10pct"},
    ...     "policy": "uniform", "experiment": {"id": "hero-2026", "arm": "uniform"},
    ...     "propensity": 0.5, "reasons": ["trigger slot_request: homepage_hero requested",
    ...     "chosen by uniform (propensity 0.50) for homepage_hero:active"]}))
    ... # doctest: +NORMALIZE_WHITESPACE
    10:01:00  cust-42  homepage_hero  running_shoes_10pct  uniform/uniform  p=0.50
        chosen by uniform (propensity 0.50) for homepage_hero:active
    """
    action = d.get("action") or {}
    where = d.get("slot") or d.get("channel") or "?"
    policy = str(d.get("policy") or "?")
    experiment = d.get("experiment") or {}
    if isinstance(experiment, dict) and experiment.get("arm"):
        policy = f"{policy}/{experiment['arm']}"
    propensity = d.get("propensity")
    p = f"p={propensity:.2f}" if isinstance(propensity, int | float) else "p=?"
    reasons = [str(r) for r in d.get("reasons") or []]
    top = short_reason(reasons[-1]) if reasons else ""
    line = (f"{_clock(d.get('ts'))}  {d.get('customer_id', '?'):<12}  {where:<18}  "
            f"{action.get('id', '?'):<21}  {policy:<18}  {p}  {top}").rstrip()
    if why:
        line += "".join(f"\n    {r}" for r in reasons)
    return line


def format_deadletter(d: dict[str, Any]) -> str:
    src = d.get("source") or {}
    return (f"{src.get('topic')}:{src.get('partition')}@{src.get('offset')}  "
            f"{d.get('reason')}: {d.get('error')}")


def format_record(kind: str, key: bytes | None, value: bytes | None, why: bool = False) -> str:
    if value is None:
        return f"tombstone for {key!r}"
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return f"(not JSON) {value[:200]!r}"
    if kind == "decisions":
        return format_decision(record, why) if isinstance(record, dict) else str(record)
    if kind == "deadletter":
        return format_deadletter(record)
    return str(orjson.dumps(record).decode())


async def tail_topic(
    settings: Settings, topic: str, kind: str, *, from_beginning: bool = False,
    limit: int | None = None, customer: str | None = None, raw: bool = False,
    why: bool = False, out: TextIO = sys.stdout,
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
                kind, msg.key, msg.value, why)
            print(line, file=out, flush=True)
            shown += 1
            if limit is not None and shown >= limit:
                break
    finally:
        await consumer.stop()
    return shown
