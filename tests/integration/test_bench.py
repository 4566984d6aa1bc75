"""`streamproc bench --quick` on the real local Kafka and Redis: every stage, counts, latencies.

No timing assertions: the figures of a quick run mean nothing; what is checked is that every
stage ran on every produced event, that the percentiles are consistent, and that the bench
leaves neither topics nor Redis keys behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient

from streamproc.settings import Settings

from .conftest import LocalCluster

pytestmark = pytest.mark.integration

BASE = Settings.from_env()
REPO = Path(__file__).resolve().parents[2]
# The bench flushes its database: not 0 (a developer's), 13 (the bench's default) nor 15 (the
# other tests'). The tests only ever flush it when they found it empty.
BENCH_DB = 12


def _env(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    host, port = BASE.redis_host_port
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    env.update({
        "STREAMPROC_KAFKA_BOOTSTRAP": BASE.kafka_bootstrap,
        "STREAMPROC_REDIS_URL": f"redis://{host}:{port}/0",
        "STREAMPROC_STACK_DIR": str(tmp_path / "stack"),
        "PYTHONPATH": str(REPO),
        "TMPDIR": str(tmp_path),  # where the bench keeps its worker logs while it runs
        **(extra or {}),
    })
    return env


def _bench(tmp_path: Path, *args: str,
           extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamproc.cli", "bench", *args],
                          env=_env(tmp_path, extra), capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)


async def _topics_with_prefix(prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=BASE.kafka_bootstrap)
    await admin.start()
    try:
        return [t for t in await admin.list_topics() if t.startswith(prefix)]
    finally:
        await admin.close()


async def test_quick_bench_runs_every_stage_on_every_event(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    profile = tmp_path / "worker.prof"
    host, port = BASE.redis_host_port
    client = redis.Redis(host=host, port=port, db=BENCH_DB)
    assert client.dbsize() == 0, f"Redis database {BENCH_DB} is in use: the bench test needs it"
    client.set("left-over-from-before", "x")  # --flush empties the database first
    done = _bench(tmp_path, "--quick", "--redis-db", str(BENCH_DB), "--flush", "--partitions",
                  "3", "--json", str(out), "--profile", str(profile), "--profile-top", "5")
    assert done.returncode == 0, done.stderr[-4000:]
    report = orjson.loads(out.read_bytes())

    produced = report["events"]["count"]
    assert produced == 3000
    assert sum(report["events"]["by_topic"].values()) == produced
    stages = report["stages"]
    assert set(stages) == {"raw_aiokafka", "bare_faust", "pipeline_1_worker",
                           "pipeline_2_workers"}
    for name, stage in stages.items():
        assert stage["events"] == produced, name
        assert stage["events_per_s"] > 0, name
        # Cores used while the rate was measured (none for spans too short to tell, as here)
        for value in stage["cpu"].values():
            assert value is None or 0 <= value <= report["machine"]["cores"], name
    assert stages["pipeline_2_workers"]["workers"] == 2
    for name in ("pipeline_1_worker", "pipeline_2_workers"):
        outputs = stages[name]["outputs"]
        assert outputs["deadletter"] == 0, name
        assert outputs["decisions"] > 0 and outputs["segments"] > 0, name
        # Read back from the topics: a record published again (a rebalance) counts once.
        distinct = stages[name]["distinct_outputs"]
        assert set(distinct) == set(outputs), name
        assert all(0 < distinct[k] <= outputs[k] for k in ("decisions", "segments")), name
    assert stages["bare_faust"]["outputs"] == {"decisions": 0, "segments": 0, "deadletter": 0}
    assert stages["bare_faust"]["distinct_outputs"] == stages["bare_faust"]["outputs"]

    latency = report["latency"]
    assert [r["offered_per_s"] for r in latency] == [200, 1000]
    for r in latency:
        assert r["events"] == r["offered_per_s"] * 3
        assert r["measured"] > 0 and r["decisions"] >= r["measured"]
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert 0 <= r["queued_p50_ms"] <= r["queued_p99_ms"]
        # the floor: the same events to the bare Faust app and to a raw consumer in the bench
        assert set(r["floor"]) == {"bare_faust", "raw_aiokafka"}
        for name, f in r["floor"].items():
            assert 0 < f["measured"] <= r["events"], name
            assert 0 < f["p50_ms"] <= f["p95_ms"] <= f["p99_ms"] <= f["max_ms"], name

    assert set(report["ratios"]) == {"bare_faust_vs_raw", "pipeline_vs_bare_faust",
                                     "pipeline_vs_raw", "two_vs_one_worker"}
    assert report["options"]["quick"] is True
    assert report["targets"] == []  # a smoke test's figures are not judged
    assert report["machine"]["cores"] >= 1 and report["machine"]["kafka_local_stack"]

    assert profile.stat().st_size > 0
    assert report["profile"]["total_s"] > 0 and len(report["profile"]["top_cumulative"]) == 5
    assert "processor (dedupe, outbox, records)" in report["profile"]["groups"]

    # progress and the table
    assert "stage 1: raw aiokafka" in done.stderr and "stage 4: latency" in done.stderr
    assert "bare Faust app (decode + ack)" in done.stdout and "streamproc pipeline" in done.stdout
    assert "targets: not judged (--quick" in done.stdout and "NOT met" not in done.stdout
    assert "the floor: the same events sent at the same rates" in done.stdout
    # nothing left behind
    assert await _topics_with_prefix(f"bench-{report['run_id']}") == []
    assert not list(tmp_path.glob("streamproc-bench-*"))  # worker logs removed after success
    try:
        assert client.dbsize() == 0
    finally:
        client.close()


async def test_rounds_repeat_the_stages_on_fresh_topics_and_report_the_median(
        tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = _bench(tmp_path, "--quick", "--stages", "raw,faust", "--rounds", "3", "--redis-db",
                  str(BENCH_DB), "--partitions", "3", "--json", str(out))
    assert done.returncode == 0, done.stderr[-4000:]
    report = orjson.loads(out.read_bytes())
    assert report["options"]["rounds"] == 3
    for name in ("raw_aiokafka", "bare_faust"):
        stage = report["stages"][name]
        rates = stage["rounds_events_per_s"]
        assert len(rates) == 3 and all(r > 0 for r in rates), name
        assert stage["events_per_s"] == sorted(rates)[1], name  # the median round
        assert stage["events"] == report["events"]["count"] == 3000, name
    assert report["ratios"]["bare_faust_vs_raw"] == round(
        report["stages"]["bare_faust"]["events_per_s"]
        / report["stages"]["raw_aiokafka"]["events_per_s"], 3)
    # every round produced the same events to topics of its own, all deleted at the end
    for n in (1, 2, 3):
        assert f"round {n} of 3" in done.stderr
        assert f"producing them to bench-{report['run_id']}-r{n}.* (3 partitions)" in done.stderr
    assert done.stderr.count("-> bare_faust: 3,000 events") == 3
    assert "each rate above is the median of 3 rounds (stages alternated)" in done.stdout
    assert await _topics_with_prefix(f"bench-{report['run_id']}") == []


@pytest.mark.parametrize(("key", "flags", "message"), [
    ("not-the-bench", (), "keys; the bench flushes its database"),
    # another bench's lock: refused even with --flush
    ("streamproc:bench:lock", ("--flush",), "in use by another streamproc bench (pid 1 since"),
])
def test_bench_refuses_a_redis_database_it_does_not_own(
        tmp_path: Path, key: str, flags: tuple[str, ...], message: str) -> None:
    host, port = BASE.redis_host_port
    client = redis.Redis(host=host, port=port, db=BENCH_DB)
    assert client.set(key, "pid 1 since 2026-11-23T17:00:00+00:00", ex=300, nx=True)
    try:
        done = _bench(tmp_path, "--quick", "--redis-db", str(BENCH_DB), *flags)
        assert done.returncode == 2, done.stderr
        assert f"Redis database {BENCH_DB}" in done.stderr and message in done.stderr
        assert "--flush" in done.stderr or "another --redis-db" in done.stderr
        assert client.get(key) == b"pid 1 since 2026-11-23T17:00:00+00:00"
        assert not list(tmp_path.glob("streamproc-bench-*"))
    finally:
        client.delete(key)
        client.close()


async def test_bench_on_a_redis_cluster_counts_every_primary_and_leaves_it_empty(
        tmp_path: Path, redis_cluster: LocalCluster, cluster_redis: Any) -> None:
    """A cluster has database 0 only: the bench refuses one holding keys (counted on every
    primary, not the one node DBSIZE asks), and with --flush runs its pipeline stages with one
    and two workers on it, leaving it empty."""
    foreign = [f"not-the-bench-{n}" for n in range(12)]  # spread over the primaries' slots
    for key in foreign:
        await cluster_redis.set(key, "x")
    primaries = {cluster_redis.get_node_from_key(k).name for k in foreign}
    assert len(primaries) > 1
    env = {"STREAMPROC_REDIS_URL": redis_cluster.url}
    refused = _bench(tmp_path, "--quick", "--stages", "pipeline", extra=env)
    assert refused.returncode == 2, refused.stderr
    assert f"the Redis Cluster at {redis_cluster.url} holds {len(foreign)} keys" in \
        refused.stderr
    assert "a cluster of its own" in refused.stderr and "--flush" in refused.stderr
    assert await cluster_redis.dbsize(target_nodes="primaries") == len(foreign)

    out = tmp_path / "bench.json"
    done = _bench(tmp_path, "--quick", "--flush", "--stages", "pipeline,pipeline2",
                  "--partitions", "3", "--json", str(out), extra=env)
    assert done.returncode == 0, done.stderr[-4000:]
    report = orjson.loads(out.read_bytes())
    stages = report["stages"]
    assert set(stages) == {"pipeline_1_worker", "pipeline_2_workers"}
    for name, stage in stages.items():
        assert stage["events"] == report["events"]["count"] > 0, name
        assert stage["outputs"]["deadletter"] == 0, name
        assert stage["outputs"]["decisions"] > 0, name
    assert await cluster_redis.dbsize(target_nodes="primaries") == 0
