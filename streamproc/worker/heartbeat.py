"""Worker heartbeats in Redis, read by ``streamproc status``.

Every :data:`INTERVAL_S` each worker writes a hash ``sp:workers:{app_id}:{worker_id}`` (host,
pid, start time, assigned partitions, events/s over the last minute, totals of messages, dead
letters and errors, time of the last batch) that expires after :data:`TTL_S`, and scores itself
in the sorted set ``sp:workers:{app_id}`` with the time, so ``status`` finds the workers without
scanning the keyspace. The braces are literal: the app id is the keys' hash tag, so that the
two updates, one MULTI, stay in one Redis Cluster slot. A worker whose last heartbeat is older
than :data:`STALE_AFTER_S` is shown as stale (stopped, frozen, or cut off from Redis); after
:data:`TTL_S` it disappears.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis.asyncio as aioredis

from streamproc.state.keys import worker_key, workers_key
from streamproc.worker.agents import BatchStats

log = logging.getLogger(__name__)

INTERVAL_S = 5.0
STALE_AFTER_S = 3 * INTERVAL_S
TTL_S = 120
RATE_WINDOW_S = 60.0


def new_worker_id(host: str | None = None, pid: int | None = None) -> str:
    """``host-pid``, reduced to the characters a Redis key part allows.

    >>> new_worker_id("web 1.example:8", 42)
    'web-1.example-8-42'
    """
    host = re.sub(r"[^A-Za-z0-9._@-]+", "-", host or socket.gethostname())[:100] or "host"
    return f"{host}-{os.getpid() if pid is None else pid}"


def format_partitions(assigned: Iterable[tuple[str, int]]) -> str:
    """Assigned partitions as ``topic:p,p;topic:p`` (sorted).

    >>> format_partitions([("b", 2), ("a", 1), ("b", 0)])
    'a:1;b:0,2'
    """
    by_topic: dict[str, list[int]] = {}
    for topic, partition in assigned:
        by_topic.setdefault(topic, []).append(partition)
    return ";".join(f"{t}:{','.join(map(str, sorted(ps)))}" for t, ps in sorted(by_topic.items()))


def parse_partitions(text: str) -> dict[str, list[int]]:
    """The inverse of :func:`format_partitions`.

    >>> parse_partitions("a:1;b:0,2")
    {'a': [1], 'b': [0, 2]}
    >>> parse_partitions("")
    {}
    """
    out: dict[str, list[int]] = {}
    for part in filter(None, text.split(";")):
        topic, _, numbers = part.rpartition(":")
        out[topic] = [int(n) for n in numbers.split(",") if n]
    return out


class Heartbeat:
    """What one worker publishes about itself."""

    def __init__(self, app_id: str, worker_id: str, stats: BatchStats,
                 clock: Any = time.time) -> None:
        self.key = worker_key(app_id, worker_id)  # validated now: a bad id stops the start
        self.index = workers_key(app_id)
        self.worker_id = worker_id
        self.stats = stats
        self.clock = clock
        self.started = clock()
        # (time, messages so far): the oldest kept is the newest one at least a window old.
        self.samples: collections.deque[tuple[float, int]] = collections.deque(
            [(self.started, 0)])

    def events_per_s(self) -> float:
        """Messages per second over the last minute (since the start when younger)."""
        now = self.clock()
        self.samples.append((now, self.stats.messages))
        while len(self.samples) > 2 and self.samples[1][0] <= now - RATE_WINDOW_S:
            self.samples.popleft()
        base_at, base_count = self.samples[0]
        elapsed = now - base_at
        return round((self.stats.messages - base_count) / elapsed, 2) if elapsed > 0 else 0.0

    def fields(self, assigned: Iterable[tuple[str, int]], state: str) -> dict[str, str]:
        s = self.stats
        return {
            "worker_id": self.worker_id,
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "started": f"{self.started:.3f}",
            "seen": f"{self.clock():.3f}",
            "state": state,
            "partitions": format_partitions(assigned),
            "events_per_s": str(self.events_per_s()),
            "messages": str(s.messages),
            "decisions": str(s.decisions),
            "deadletters": str(s.deadletters),
            "errors": str(s.failures + s.retries),
            "last_batch": f"{s.last_batch_at:.3f}",
        }

    async def publish(self, client: aioredis.Redis, assigned: Iterable[tuple[str, int]],
                      state: str = "running") -> None:
        fields = self.fields(assigned, state)
        now_ms = int(float(fields["seen"]) * 1000)
        pipe = client.pipeline(transaction=True)
        pipe.hset(self.key, mapping=fields)  # type: ignore[arg-type]
        pipe.expire(self.key, TTL_S)
        pipe.zadd(self.index, {self.key: now_ms})
        # Workers gone longer than the TTL leave the index too.
        pipe.zremrangebyscore(self.index, "-inf", now_ms - TTL_S * 1000)
        pipe.expire(self.index, TTL_S)
        await pipe.execute()

    async def withdraw(self, client: aioredis.Redis) -> None:
        """On a clean stop: the worker leaves at once instead of turning stale."""
        pipe = client.pipeline(transaction=True)
        pipe.delete(self.key)
        pipe.zrem(self.index, self.key)
        await pipe.execute()


@dataclass(frozen=True)
class WorkerBeat:
    """A heartbeat as read back by ``streamproc status``."""

    worker_id: str
    host: str
    pid: int
    started: float
    seen: float
    state: str
    partitions: dict[str, list[int]]
    events_per_s: float
    messages: int
    decisions: int
    deadletters: int
    errors: int
    last_batch: float

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.seen)

    def alive(self, now: float) -> bool:
        return self.age_s(now) <= STALE_AFTER_S

    def as_dict(self, now: float) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["alive"] = self.alive(now)
        d["age_s"] = round(self.age_s(now), 1)
        return d


def parse_beat(raw: dict[bytes, bytes]) -> WorkerBeat | None:
    """A stored heartbeat, or None when it is not one (a foreign or half-written key)."""
    f = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
    try:
        return WorkerBeat(
            worker_id=f["worker_id"], host=f.get("host", "?"), pid=int(f.get("pid", 0)),
            started=float(f["started"]), seen=float(f["seen"]), state=f.get("state", "?"),
            partitions=parse_partitions(f.get("partitions", "")),
            events_per_s=float(f.get("events_per_s", 0)), messages=int(f.get("messages", 0)),
            decisions=int(f.get("decisions", 0)), deadletters=int(f.get("deadletters", 0)),
            errors=int(f.get("errors", 0)), last_batch=float(f.get("last_batch", 0)),
        )
    except (KeyError, ValueError):
        log.debug("not a heartbeat: %s", orjson.dumps(f)[:200])
        return None


async def read_beats(client: aioredis.Redis, app_id: str) -> list[WorkerBeat]:
    """Every worker of the app that sent a heartbeat within the TTL, by worker id."""
    keys = cast(list[bytes], await client.zrange(workers_key(app_id), 0, -1))
    if not keys:
        return []
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    beats = [parse_beat(raw) for raw in await pipe.execute() if raw]
    return sorted((b for b in beats if b is not None), key=lambda b: b.worker_id)
