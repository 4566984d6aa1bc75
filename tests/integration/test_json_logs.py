"""A real worker with STREAMPROC_LOG_FORMAT=json writes nothing but JSON objects, one a line."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from .conftest import Env

pytestmark = pytest.mark.integration


async def test_worker_logs_are_json_lines(stack_env: Env) -> None:
    stack_env.env["STREAMPROC_LOG_FORMAT"] = "json"
    worker = stack_env.start_worker()
    log_file = stack_env.tmp / "worker-0.log"
    deadline = time.monotonic() + 60
    while b"Worker]: Ready" not in log_file.read_bytes():
        assert worker.poll() is None and time.monotonic() < deadline, stack_env.worker_log()
        await asyncio.sleep(0.3)
    worker.terminate()  # the stop is logged too
    assert await asyncio.to_thread(worker.wait, 30) == 0, stack_env.worker_log()
    lines = [line for line in log_file.read_text().splitlines() if line.strip()]
    assert len(lines) > 10
    records = []
    for line in lines:
        record = orjson.loads(line)  # fails the test on any non-JSON line
        assert isinstance(record, dict), line
        assert {"ts", "level", "logger", "message", "worker_id"} <= set(record), line
        records.append(record)
    assert len({r["worker_id"] for r in records}) == 1
    assert any("Signal received" in r["message"] for r in records)
