"""SIGTERM stops a worker cleanly: the batch in hand is finished, offsets are committed exactly
up to what was applied, the worker leaves the status, closes its clients and exits 0.

Checked while traffic is flowing: at the moment the worker has exited, every partition's
committed offset is the one after the last message applied to the state in Redis (nothing
applied is left uncommitted, so nothing will be redelivered; nothing committed was left
unapplied, so nothing is lost). A second worker then takes over and the totals are exact.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import pytest
import redis.asyncio as aioredis

from streamproc.state.keys import workers_key

from .conftest import Env
from .streams import (
    build_stream,
    committed_offsets,
    forget_run,
    mismatches,
    snapshot,
    stream_chunk,
    wait_complete,
)

pytestmark = pytest.mark.integration


async def test_sigterm_finishes_the_batch_commits_and_exits_0(stack_env: Env,
                                                              test_redis: aioredis.Redis) -> None:
    run = uuid.uuid4().hex[:8]
    stream, truth, _ = build_stream(run, customers=80, events=3000, tag="st")
    try:
        worker = stack_env.start_worker()
        # Live traffic, slow enough to last until the SIGTERM (then the rest of it at once).
        stopping = asyncio.Event()
        sender = asyncio.create_task(stream_chunk(stack_env, stream, per_tick=10, until=stopping))
        deadline = time.monotonic() + 60
        while (await snapshot(test_redis, truth)).total < 400:
            assert worker.poll() is None, stack_env.worker_log()
            assert time.monotonic() < deadline, f"worker not consuming:\n{stack_env.worker_log()}"
            await asyncio.sleep(0.2)
        assert not sender.done(), "the traffic should still be flowing at the SIGTERM"

        worker.send_signal(signal.SIGTERM)
        stopping.set()
        stop_deadline = time.monotonic() + 30
        while worker.poll() is None:
            assert time.monotonic() < stop_deadline, f"no exit 30s after SIGTERM:\n" \
                                                     f"{stack_env.worker_log()}"
            await asyncio.sleep(0.1)
        assert worker.returncode == 0, stack_env.worker_log()

        at_stop = await snapshot(test_redis, truth)
        committed = await committed_offsets(stack_env)
        expected = sum(t.events for t in truth.values())
        assert 0 < at_stop.total < expected
        assert at_stop.last_offsets, "nothing applied before the SIGTERM"
        assert {s: o + 1 for s, o in at_stop.last_offsets.items()} == {
            s: committed.get(s) for s in at_stop.last_offsets}, (at_stop.last_offsets, committed)
        assert set(committed) <= set(at_stop.last_offsets), "committed past what was applied"
        assert await test_redis.zcard(workers_key(stack_env.settings.app_id)) == 0
        log = stack_env.worker_log()
        assert "Traceback" not in log and "Closing event loop" in log, log

        await sender
        successor = stack_env.start_worker()
        final = await wait_complete(stack_env, test_redis, [successor], truth)
        assert not mismatches(truth, final)
        print(f"\nsigterm: {at_stop.total} of {expected} events applied and committed at the "
              f"stop, on {len(at_stop.last_offsets)} partitions; the successor finished exact")
    finally:
        await forget_run(test_redis, truth, f"sp:{{st{run}-*")
