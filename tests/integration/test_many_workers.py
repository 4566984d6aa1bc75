"""Many workers on the real stack: scale out mid-stream, lose one to SIGKILL, finish with two.

One worker starts on a backlog (with a few malformed messages in it); two more join while
traffic streams in; once the newest one is processing its share it is killed with SIGKILL; the
rest of the traffic is produced after the kill. At the end every message is accounted for, in
the customers' state in Redis (orders, spend and counts per type exactly as produced: nothing
lost, nothing counted twice) or in the dead-letter topic with its reason; decisions are
published for the events produced after the kill; and the heartbeats show the two survivors
sharing every partition.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from streamproc.worker.heartbeat import WorkerBeat, read_beats

from .conftest import Env
from .streams import (
    build_stream,
    forget_run,
    mismatches,
    produce_chunk,
    snapshot,
    stream_chunk,
    wait_complete,
)

pytestmark = [pytest.mark.integration, pytest.mark.core]

CUSTOMERS = 150
EVENTS = 6000
BACKLOG = 2000  # before the first worker starts
STREAMED = 2000  # while the other two join (20 a second); the newest is killed during it
# the rest is produced after the kill


def malformed(cids: list[str]) -> list[tuple[bytes | None, bytes | None, str]]:
    """(key, value, expected reason), keyed by customers of the run (so on their partitions)."""
    a, b = cids[0], cids[1]
    ok = {"event_id": f"bad-{a}", "type": "page_view", "customer_id": a,
          "ts": "2026-03-01T10:00:00Z", "url": "https://shop.example/", "page_type": "home"}
    return [
        (a.encode(), b"{not json", "invalid_json"),
        (a.encode(), orjson.dumps({**ok, "ts": "yesterday"}), "schema_violation"),
        (b.encode(), orjson.dumps({**ok, "type": "teleport"}), "unknown_type"),
        (b.encode(), orjson.dumps(ok), "key_mismatch"),
        (a.encode(), None, "empty_message"),
    ]


async def beats_until(env: Env, redis: aioredis.Redis, ok: Any, what: str,
                      timeout: float = 40.0) -> list[WorkerBeat]:
    deadline = time.monotonic() + timeout
    while True:
        beats = await read_beats(redis, env.settings.app_id)
        if ok(beats):
            return beats
        assert time.monotonic() < deadline, f"{what}: {beats}\n{env.worker_log()}"
        await asyncio.sleep(0.5)


def owner_of(beats: list[WorkerBeat], pid: int) -> WorkerBeat | None:
    return next((b for b in beats if b.pid == pid and b.alive(time.time())), None)


async def test_scale_out_lose_a_worker_and_account_for_everything(
        stack_env: Env, test_redis: aioredis.Redis) -> None:
    began = time.monotonic()
    stack_env.env["STREAMPROC_SESSION_TIMEOUT_S"] = "6"  # the kill costs one session timeout
    run = uuid.uuid4().hex[:8]
    stream, truth, duplicates = build_stream(run, CUSTOMERS, EVENTS, tag="mw")
    bad = malformed(sorted(truth))
    backlog, streamed = stream[:BACKLOG], stream[BACKLOG:BACKLOG + STREAMED]
    rest = stream[BACKLOG + STREAMED:]
    topics = stack_env.settings.topics
    try:
        # Malformed messages first: valid events follow them on their partitions.
        await stack_env.produce(topics.browsing, [(k, v) for k, v, _ in bad])  # type: ignore[misc]
        await produce_chunk(stack_env, backlog)
        first = stack_env.start_worker()
        deadline = time.monotonic() + 60
        while (await snapshot(test_redis, truth)).total < BACKLOG // 2:
            assert first.poll() is None and time.monotonic() < deadline, stack_env.worker_log()
            await asyncio.sleep(0.3)

        # Live traffic, slow enough to last until the kill (then the rest of it at once).
        killed = asyncio.Event()
        # 20 a second: 100 s of traffic, time for two workers to start on a loaded machine.
        sender = asyncio.create_task(stream_chunk(stack_env, streamed, per_tick=2,
                                                  until=killed))
        second, third = stack_env.start_worker(), stack_env.start_worker()
        # Kill the newest worker once its heartbeat shows it owns partitions and has processed.
        await beats_until(stack_env, test_redis, lambda beats: (
            (w := owner_of(beats, third.pid)) is not None and w.partitions and w.messages > 0),
            "the third worker never processed anything", timeout=90)
        assert not sender.done(), "the traffic should still be flowing at the kill"
        third.send_signal(signal.SIGKILL)
        third.wait(timeout=10)
        killed.set()
        killed_at = time.monotonic() - began
        await sender
        await produce_chunk(stack_env, rest)

        survivors: list[subprocess.Popen[bytes]] = [first, second]
        final = await wait_complete(stack_env, test_redis, survivors, truth, timeout=90)
        wrong = mismatches(truth, final)
        assert not wrong, f"{len(wrong)} customers differ: {list(wrong.items())[:3]}"

        # The malformed messages are in the dead-letter topic, each with its reason (a
        # redelivery may publish one twice, never lose it).
        expected = {reason for _, _, reason in bad}

        def dead_lettered(records: list[dict[str, Any]]) -> bool:
            return expected <= {r["value"]["reason"] for r in records}

        dead = await stack_env.consume_until(topics.deadletter, dead_lettered, timeout=30)
        assert {r["value"]["reason"] for r in dead} == expected
        sources = {(r["value"]["source"]["partition"], r["value"]["source"]["offset"])
                   for r in dead}
        assert len(sources) == len(bad), sources

        # Decisions kept flowing: every cart add and purchase produced after the kill has one.
        needed = {e["event_id"] for _, e in rest if e["type"] in {"cart_add", "purchase"}}
        assert needed, "the last part should hold decision triggers"

        def decided(records: list[dict[str, Any]]) -> bool:
            return needed <= {r["value"]["trigger"]["event_id"] for r in records}

        decisions = await stack_env.consume_until(topics.decisions, decided, timeout=30)

        # The two survivors share every input partition (the killed one's included).
        everything = {(t, p) for t in topics.inputs for p in range(stack_env.settings.partitions)}

        def shared(beats: list[WorkerBeat]) -> bool:
            owned = [{(t, p) for t, ps in b.partitions.items() for p in ps}
                     for b in (owner_of(beats, w.pid) for w in survivors) if b is not None]
            return len(owned) == 2 and owned[0] | owned[1] == everything and \
                not owned[0] & owned[1] and all(owned)

        await beats_until(stack_env, test_redis, shared, "survivors do not share the partitions")
        assert first.poll() is None and second.poll() is None, stack_env.worker_log()
        print(f"\nmany workers: {len(stream)} messages ({EVENTS} events + {duplicates} "
              f"duplicates) + {len(bad)} malformed for {len(truth)} customers; 3 workers, one "
              f"SIGKILLed at {killed_at:.1f}s; exact totals, {len(dead)} dead letters, "
              f"{len(decisions)} decisions; done in {time.monotonic() - began:.1f}s")
    finally:
        await forget_run(test_redis, truth, f"sp:{{mw{run}-*")
