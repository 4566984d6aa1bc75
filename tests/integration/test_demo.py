"""The real-time demo on the real stack: the simulator in its default (wall-clock) mode with a
worker gives decisions stamped at the wall clock and a bandit that learns from the simulated
customers' feedback; a second stack on the same ports is told whose ports they are."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Any

import pytest

from streamproc.events.codec import parse_ts
from tests.integration.conftest import BASE, REPO, Env, stop_process

pytestmark = pytest.mark.integration

OUTCOMES = re.compile(r"over (\d+) outcomes")


def outcomes_learnt(record: dict[str, Any]) -> int:
    return max((int(m.group(1)) for r in record.get("reasons") or []
                if (m := OUTCOMES.search(r))), default=0)


async def test_wall_clock_simulation_gives_timely_decisions_and_a_learning_bandit(
        stack_env: Env) -> None:
    env = stack_env
    env.env["STREAMPROC_MODEL_SNAPSHOT_SECONDS"] = "3"  # the served bandit follows the learner
    env.start_worker()
    started_ms = time.time_ns() // 1_000_000
    simulate = subprocess.Popen(
        [sys.executable, "-m", "streamproc.cli", "simulate", "--customers", "150", "--rate",
         "40", "--duration", "150", "--seed", "5"],
        env=env.env, cwd=env.tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        decisions = await env.consume_until(
            env.settings.topics.decisions,
            lambda rs: any(r["value"] and outcomes_learnt(r["value"]) > 0 for r in rs),
            timeout=140)
    finally:
        stop_process(simulate, 20)
    ended_ms = time.time_ns() // 1_000_000
    records = [r["value"] for r in decisions if r["value"]]
    # Event time is the wall clock: never ahead of it (the accelerated clock ran hours ahead)
    for record in records:
        ts = parse_ts(record["ts"])
        assert started_ms - 1_000 <= ts <= ended_ms, (record["ts"], started_ms, ended_ms)
        assert parse_ts(record["decided_at"]) >= ts
    late = [parse_ts(r["decided_at"]) - parse_ts(r["ts"]) for r in records[-20:]]
    assert max(late) < 5_000, late  # once the worker runs, decided within seconds of the event
    # The pages asked for their slots, the hero among them, and feedback taught the bandit.
    slot_requests = [r for r in records if r["trigger"]["type"] == "slot_request"]
    assert {r["slot"] for r in slot_requests} >= {"homepage_hero", "product_recs"}
    feedback = await env.consume_until(env.settings.topics.feedback,
                                       lambda rs: any(r["value"]["outcome"] == "click"
                                                      for r in rs), timeout=10)
    for r in feedback:
        assert parse_ts(r["value"]["ts"]) <= time.time_ns() // 1_000_000  # never ahead
    assert max(outcomes_learnt(r) for r in records) > 0


def test_a_second_stack_on_the_same_ports_is_told_whose_they_are(tmp_path: Any) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
           "STREAMPROC_KAFKA_BOOTSTRAP": BASE.kafka_bootstrap,
           "STREAMPROC_KAFKA_CONTROLLER_PORT": str(BASE.kafka_controller_port),
           "STREAMPROC_REDIS_URL": BASE.redis_url,
           "STREAMPROC_STACK_DIR": str(tmp_path / "second")}
    result = subprocess.run([sys.executable, "-m", "streamproc.cli", "stack", "up"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    ours = BASE.stack_dir.expanduser().resolve()
    assert f"held by another streamproc stack in {ours} (kafka, pid " in result.stderr
    assert f"held by another streamproc stack in {ours} (redis, pid " in result.stderr
    assert f"STREAMPROC_STACK_DIR={ours} streamproc stack down" in result.stderr
    assert not (tmp_path / "second" / "kafka").exists()  # nothing started or written
    status = subprocess.run([sys.executable, "-m", "streamproc.cli", "stack", "status"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 3
    assert [line.split()[1] for line in status.stdout.splitlines()[1:]] == ["other-stack"] * 2
