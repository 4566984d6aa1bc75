"""``streamproc status``: the workers, their partitions, the consumer lag and errors at a glance.

Workers come from their heartbeats in Redis (:mod:`streamproc.worker.heartbeat`); the lag of every
input partition is the broker's end offset minus the consumer group's committed offset (what
a worker taking the partition over would start from), read with aiokafka's admin client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    GroupCoordinatorNotAvailableError,
    KafkaError,
    NotCoordinatorForGroupError,
)

from streamproc.errors import StreamprocError, masked_url, redis_unreachable
from streamproc.kafka_options import kafka_options
from streamproc.redis_options import UNREACHABLE as REDIS_UNREACHABLE
from streamproc.redis_options import redis_client
from streamproc.settings import Settings
from streamproc.tail import topic_partitions
from streamproc.worker.heartbeat import STALE_AFTER_S, TTL_S, WorkerBeat, read_beats

TIMEOUT_S = 15.0
Partition = tuple[str, int]


async def committed_offsets(settings: Settings) -> dict[Partition, int]:
    """The workers' group's committed offsets (the next offset to read), by partition."""
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.app_id)
    except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError,
            NotCoordinatorForGroupError):
        # A fresh broker creates its offsets topic on the first group lookup: until the
        # coordinator is ready, nothing can have been committed.
        return {}
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): om.offset for tp, om in offsets.items() if om.offset >= 0}


async def end_offsets(settings: Settings) -> dict[Partition, int]:
    """The end offset (the next offset to be written) of every input partition."""
    tps = [TopicPartition(topic, p) for topic in settings.topics.inputs
           for p in await topic_partitions(settings, topic)]
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(**kafka_options(settings))
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): end for tp, end in ends.items()}


@dataclass(frozen=True)
class PartitionRow:
    topic: str
    partition: int
    end: int
    committed: int | None
    owner: str | None

    @property
    def lag(self) -> int:
        return max(0, self.end - (self.committed or 0))


@dataclass
class Status:
    settings: Settings
    now: float
    workers: list[WorkerBeat] = field(default_factory=list)
    partitions: list[PartitionRow] = field(default_factory=list)

    @property
    def alive(self) -> list[WorkerBeat]:
        return [w for w in self.workers if w.alive(self.now)]

    @property
    def lag(self) -> int:
        return sum(row.lag for row in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "app_id": self.settings.app_id,
            "kafka": self.settings.kafka_bootstrap,
            "redis": masked_url(self.settings.redis_url),
            "workers_alive": len(self.alive),
            "workers": [w.as_dict(self.now) for w in self.workers],
            "lag": self.lag,
            "events_per_s": round(sum(w.events_per_s for w in self.alive), 2),
            "partitions": [{**row.__dict__, "lag": row.lag} for row in self.partitions],
        }

    def render(self) -> str:
        alive, stale = len(self.alive), len(self.workers) - len(self.alive)
        rows: list[tuple[str, ...]]
        lines = [f"app {self.settings.app_id} (consumer group) on Kafka "
                 f"{self.settings.kafka_bootstrap}, "
                 f"Redis {masked_url(self.settings.redis_url)}", ""]
        if self.workers:
            lines.append(f"workers: {alive} alive, {stale} stale (no heartbeat for "
                         f"{STALE_AFTER_S:.0f}s); {sum(w.events_per_s for w in self.alive):.1f} "
                         "events/s in all")
            rows = [("WORKER", "HOST", "PID", "STATE", "SEEN", "PARTITIONS", "EVENTS/S",
                     "MESSAGES", "DEAD LETTERS", "ERRORS", "LAST BATCH")]
            rows += [(w.worker_id, w.host, str(w.pid),
                      w.state if w.alive(self.now) else "STALE", _ago(self.now, w.seen),
                      str(sum(len(ps) for ps in w.partitions.values())), f"{w.events_per_s:.1f}",
                      str(w.messages), str(w.deadletters), str(w.errors),
                      _ago(self.now, w.last_batch) if w.last_batch else "never")
                     for w in self.workers]
            lines += _table(rows)
        else:
            lines.append(f"workers: none has sent a heartbeat in the last {TTL_S}s; start one "
                         "with `streamproc worker` (same STREAMPROC_APP_ID and Redis)")
        lines.append("")
        if self.partitions:
            lines.append(f"lag: {self.lag} messages behind the committed offsets")
            rows = [("TOPIC", "PARTITION", "END", "COMMITTED", "LAG", "OWNER")]
            rows += [(r.topic, str(r.partition), str(r.end),
                      "-" if r.committed is None else str(r.committed), str(r.lag),
                      r.owner or "-") for r in self.partitions]
            lines += _table(rows)
        else:
            lines.append("lag: the input topics do not exist yet (a starting worker or "
                         "`streamproc stack up` creates them)")
        return "\n".join(lines)


def _ago(now: float, then: float) -> str:
    return f"{max(0.0, now - then):.0f}s ago"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def owners(workers: list[WorkerBeat], now: float) -> dict[Partition, str]:
    """Which live worker says it owns each partition."""
    return {(topic, p): w.worker_id for w in workers if w.alive(now)
            for topic, ps in w.partitions.items() for p in ps}


def build_status(settings: Settings, now: float, workers: list[WorkerBeat],
                 ends: Mapping[Partition, int], committed: Mapping[Partition, int]) -> Status:
    owned = owners(workers, now)
    rows = [PartitionRow(topic, p, end, committed.get((topic, p)), owned.get((topic, p)))
            for (topic, p), end in sorted(ends.items())]
    return Status(settings, now, workers, rows)


async def collect_status(settings: Settings) -> Status:
    """Everything ``streamproc status`` shows; a clear error when Kafka or Redis is away."""
    client = redis_client(settings, socket_timeout=5, socket_connect_timeout=5)
    try:
        workers = await read_beats(client, settings.app_id)
    except REDIS_UNREACHABLE + (redis.exceptions.TimeoutError, OSError) as exc:
        raise redis_unreachable(settings.redis_url, exc,
                                why="the workers' heartbeats live there") from None
    finally:
        await client.aclose()
    try:
        async with asyncio.timeout(TIMEOUT_S):
            ends = await end_offsets(settings)
            committed = await committed_offsets(settings)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise StreamprocError(
            f"cannot read offsets from Kafka at {settings.kafka_bootstrap} "
            f"({type(exc).__name__}: {exc}). Is the stack up? Run `streamproc stack up` or set "
            "STREAMPROC_KAFKA_BOOTSTRAP"
        ) from None
    return build_status(settings, time.time(), workers, ends, committed)
