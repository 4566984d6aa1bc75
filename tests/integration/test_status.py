"""`streamproc status` against the real stack: no worker, a live worker, Kafka unreachable."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from .conftest import Env

pytestmark = pytest.mark.integration


async def test_status_shows_a_live_worker_its_partitions_and_lag(stack_env: Env) -> None:
    idle = stack_env.cli("status")
    assert idle.returncode == 3, idle.stderr
    assert "none has sent a heartbeat" in idle.stdout and "lag: 0 messages" in idle.stdout

    cid = stack_env.customer()
    await stack_env.produce(stack_env.settings.topics.browsing, [(cid.encode(), b"not json")])
    stack_env.start_worker()
    deadline = time.monotonic() + 60
    while True:
        done = stack_env.cli("status", "--json")
        if done.returncode == 0:
            status = orjson.loads(done.stdout)
            if status["lag"] == 0 and status["workers"][0]["deadletters"] == 1:
                break
        assert time.monotonic() < deadline, f"{done.stdout}{done.stderr}{stack_env.worker_log()}"
        await asyncio.sleep(1)
    [worker] = status["workers"]
    assert worker["alive"] and worker["state"] == "running" and worker["messages"] == 1
    inputs = set(stack_env.settings.topics.inputs)
    assert set(worker["partitions"]) == inputs
    assert all(sorted(ps) == [0, 1, 2] for ps in worker["partitions"].values())
    assert {(p["topic"], p["owner"]) for p in status["partitions"]} == {
        (t, worker["worker_id"]) for t in inputs}
    table = stack_env.cli("status")
    assert table.returncode == 0 and "1 alive, 0 stale" in table.stdout
    assert worker["worker_id"] in table.stdout


async def test_status_with_kafka_away_says_so(stack_env: Env) -> None:
    stack_env.env["STREAMPROC_KAFKA_BOOTSTRAP"] = "127.0.0.1:1"
    done = stack_env.cli("status")
    assert done.returncode == 2
    assert "cannot read offsets from Kafka at 127.0.0.1:1" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
