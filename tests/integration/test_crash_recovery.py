"""A worker killed with SIGKILL mid-stream and restarted ends with exactly the true totals.

The events come from the simulator's pure generator (fixed seed), re-keyed to customer ids
unique to the run, with producer duplicates (the same event re-sent: same event_id, a new
offset) mixed in. The first worker is frozen (SIGSTOP) at a moment when it has written state
for messages whose offsets the consumer group has not committed yet, checked against Redis and
the group's committed offsets while nothing can move, and then killed with SIGKILL. So the
restarted worker is certain to get a redelivery (offsets ``committed .. last applied`` of some
partition), and must skip it: every customer's orders, purchase total (to the cent) and counts
per event type must equal the ground truth computed from the events, each event_id once.

Decisions may be published twice (a batch redelivered after the crash publishes its outbox
again) but always with the same decision id, trigger and action, and only for redelivered
messages; no cart add or purchase may be left without its decision.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable
from typing import Any

import pytest
import redis.asyncio as aioredis

from .conftest import Env
from .streams import (
    Item,
    Snapshot,
    Truth,
    alive,
    build_stream,
    committed_offsets,
    forget_run,
    mismatches,
    produce_chunk,
    snapshot,
    stream_chunk,
    wait_complete,
)

pytestmark = [pytest.mark.integration, pytest.mark.core]

CUSTOMERS = 200
EVENTS = 8000
FIRST_CHUNK = 3000  # produced before the first worker starts
STREAMED_CHUNK = 3000  # produced while the first worker runs (it is killed during this part)
# the rest is produced only after the kill, so the first worker cannot have applied everything

# The group keeps a SIGKILLed member for the session timeout (30 s by default), which would
# stall the restarted worker's rebalance that long; only the workers this test starts use 10 s.
FAST_GROUP = {"STREAMPROC_SESSION_TIMEOUT_S": "10"}


async def uncommitted(env: Env, redis: aioredis.Redis, cids: list[str],
                      warm_up: int) -> dict[str, tuple[int, int]]:
    """Per "topic:partition", the applied offsets at or past the committed one (both ends
    inclusive); empty unless ``warm_up`` events were applied and something was committed."""
    committed = await committed_offsets(env)
    state = await snapshot(redis, cids)
    if state.total < warm_up or not committed:
        return {}
    return {
        source: (committed.get(source, 0), last)
        for source, last in state.last_offsets.items()
        if last >= committed.get(source, 0)
    }


def size(window: dict[str, tuple[int, int]]) -> int:
    return sum(last - committed + 1 for committed, last in window.values())


async def kill_mid_stream(env: Env, redis: aioredis.Redis, proc: subprocess.Popen[bytes],
                          customers: Iterable[str], sender: asyncio.Task[None],
                          warm_up: int, wanted: int,
                          timeout: float = 60.0) -> tuple[Snapshot, dict[str, tuple[int, int]]]:
    """SIGKILL ``proc`` once it has applied messages that are not committed yet: ``wanted`` of
    them while ``sender`` still streams, any number once it is done.

    Returns the state at the kill and, per "topic:partition", the offsets that will be
    redelivered and were already applied: (committed, last applied), both inclusive.
    """
    cids = list(customers)
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, (
            f"no applied-but-uncommitted messages seen within {timeout}s:\n{env.worker_log()}")
        alive(env, proc)
        await asyncio.sleep(0.2)
        if size(await uncommitted(env, redis, cids, warm_up)) < (1 if sender.done() else wanted):
            continue
        # Freeze the worker, let in-flight writes and commits land, then look again: now
        # nothing moves. (Freezing it on every poll would hold back its commit timer.)
        proc.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(0.3)
            window = await uncommitted(env, redis, cids, warm_up)
            if window:
                state = await snapshot(redis, cids)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                return state, window
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)


async def stream_once_consuming(env: Env, redis: aioredis.Redis, truth: dict[str, Truth],
                                proc: subprocess.Popen[bytes], items: list[Item],
                                timeout: float = 60.0) -> None:
    """Once the worker has applied its first event, send ``items`` as live traffic."""
    deadline = time.monotonic() + timeout
    while (await snapshot(redis, truth)).total == 0:
        if proc.poll() not in (None, -signal.SIGKILL):
            pytest.fail(f"worker exited with {proc.returncode}:\n{env.worker_log()}")
        assert time.monotonic() < deadline, f"worker not consuming:\n{env.worker_log()}"
        await asyncio.sleep(0.2)
    await stream_chunk(env, items)


async def test_sigkilled_worker_restarts_with_exact_totals(stack_env: Env,
                                                           test_redis: aioredis.Redis) -> None:
    began = time.monotonic()
    run = uuid.uuid4().hex[:8]
    stream, truth, duplicates = build_stream(run, CUSTOMERS, EVENTS)
    expected_total = sum(t.events for t in truth.values())
    assert expected_total == EVENTS and len(stream) == EVENTS + duplicates
    assert sum(t.orders for t in truth.values()) > 20, "the stream should include purchases"
    stack_env.env.update(FAST_GROUP)
    first, streamed = stream[:FIRST_CHUNK], stream[FIRST_CHUNK:FIRST_CHUNK + STREAMED_CHUNK]
    rest = stream[FIRST_CHUNK + STREAMED_CHUNK:]

    try:
        await produce_chunk(stack_env, first)
        worker = stack_env.start_worker()
        # Traffic keeps arriving while the first worker runs; it is killed in the middle of it.
        sender = asyncio.create_task(
            stream_once_consuming(stack_env, test_redis, truth, worker, streamed))
        at_kill, window = await kill_mid_stream(stack_env, test_redis, worker, truth, sender,
                                                warm_up=FIRST_CHUNK // 3, wanted=300)
        killed_at = time.monotonic() - began
        assert 0 < at_kill.total < expected_total
        redelivered = size(window)
        assert redelivered > 0
        await sender
        await produce_chunk(stack_env, rest)

        restarted_at = time.monotonic()
        restarted = stack_env.start_worker()  # same consumer group: resumes from the commits
        final = await wait_complete(stack_env, test_redis, [restarted], truth)
        recovered_s = time.monotonic() - restarted_at

        wrong = mismatches(truth, final)
        assert not wrong, f"{len(wrong)} customers differ from the ground truth: " + str(
            dict(itertools.islice(wrong.items(), 3)))
        stored = [k async for k in test_redis.scan_iter(match=f"sp:{{cr{run}-*", count=1000)]
        assert len(stored) == len(truth)

        # Every cart add and purchase has its decision; a decision seen twice is the same one,
        # republished for a redelivered message.
        needed = {e["event_id"] for _, e in stream if e["type"] in {"cart_add", "purchase"}}
        seen: set[str] = set()
        read = 0

        def all_decided(records: list[dict[str, Any]]) -> bool:
            nonlocal read
            seen.update(r["value"]["trigger"]["event_id"] for r in records[read:])
            read = len(records)
            return needed <= seen

        records = await stack_env.consume_until(stack_env.settings.topics.decisions,
                                                all_decided, timeout=60)
        by_id: dict[str, list[dict[str, Any]]] = {}
        # One event may fire several catalogue triggers (a cart add that makes intent hot):
        # one id per event and trigger.
        ids_by_trigger: dict[tuple[str, str], set[str]] = {}
        for r in records:
            d = r["value"]
            by_id.setdefault(d["decision_id"], []).append(d)
            ids_by_trigger.setdefault((d["trigger"]["event_id"], d["trigger"]["name"]),
                                      set()).add(d["decision_id"])
        assert all(len(ids) == 1 for ids in ids_by_trigger.values()), "a replay changed an id"
        republished = 0
        for copies in by_id.values():
            one = copies[0]
            for other in copies[1:]:
                republished += 1
                assert (other["trigger"], other["action"]) == (one["trigger"], one["action"])
                trigger = one["trigger"]
                if trigger["topic"].startswith("timer."):
                    # A timer fires in a batch of its partition (its "offset" is the due time):
                    # the batch's outbox is published again when that partition's messages are
                    # redelivered.
                    assert any(k.rsplit(":", 1)[1] == str(trigger["partition"]) for k in window), (
                        f"republished timer decision outside the redelivery: {one}")
                    continue
                source = f"{trigger['topic']}:{trigger['partition']}"
                assert source in window, f"republished decision outside the redelivery: {one}"
                low, high = window[source]
                assert low <= trigger["offset"] <= high, one
        print(f"\ncrash recovery: {len(stream)} messages ({EVENTS} events + {duplicates} "
              f"producer duplicates) for {len(truth)} customers; SIGKILL at {killed_at:.1f}s "
              f"with {at_kill.total} events applied; {redelivered} applied-but-uncommitted "
              f"messages redelivered on {len(window)} partitions; {len(by_id)} decisions, "
              f"{republished} published twice; the restarted worker caught up in "
              f"{recovered_s:.1f}s; done in {time.monotonic() - began:.1f}s")
    finally:
        await forget_run(test_redis, truth, f"sp:{{cr{run}-*")
