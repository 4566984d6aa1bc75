"""The benchmark's pure parts: rates from commits, percentiles, ratios, options, the table."""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path

import pytest

from streamproc.benchmark import BenchError, BenchOptions, render
from streamproc.benchmark.machine import cpu_seconds, machine_jiffies
from streamproc.benchmark.measure import percentile, steady_rate
from streamproc.benchmark.run import Bench, on_topics, ratios_and_targets, with_db
from streamproc.benchmark.stages import distinct_records
from streamproc.benchmark.workers import PIPELINE, profiled, worker_env
from streamproc.cli import build_parser
from streamproc.settings import Settings, Topics


def test_steady_rate_leaves_out_start_up_and_the_late_final_commit():
    # Joined at t=10; commits every second at 1,000 events/s; the final commit comes 2.8 s late.
    samples = [(9.0, 0), (11.0, 500), (12.0, 1500), (13.0, 2500), (14.0, 3500), (17.3, 4000)]
    assert steady_rate(samples, 10.0, 4000) == (1000.0, "commits")


def test_steady_rate_ignores_commits_made_before_the_group_was_stable():
    # A commit at t=1 by a first worker alone, then a rebalance: the rate starts at t=5.
    samples = [(1.0, 900), (5.0, 1000), (6.0, 3000), (7.0, 5000), (8.0, 7000), (9.0, 8000)]
    assert steady_rate(samples, 4.0, 8000) == (2000.0, "commits")


def test_steady_rate_of_short_runs_falls_back_and_says_so():
    assert steady_rate([(2.0, 100), (4.0, 500)], 1.0, 500) == (200.0, "first-final")
    assert steady_rate([(0.5, 50), (3.0, 550)], 1.0, 550) == (250.0, "stable-final")
    with pytest.raises(ValueError, match="no commit"):
        steady_rate([(0.5, 50)], 1.0, 50)


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 0.99)) == (
        50.0, 95.0, 99.0)
    assert percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_targets_are_judged_on_the_issue_thresholds():
    report = {"stages": {"raw_aiokafka": {"events_per_s": 50_000.0},
                         "bare_faust": {"events_per_s": 8_000.0},
                         "pipeline_1_worker": {"events_per_s": 4_000.0},
                         "pipeline_2_workers": {"events_per_s": 6_400.0}},
              "latency": [{"offered_per_s": 1000, "p99_ms": 50.0},
                          {"offered_per_s": 5000, "p99_ms": 900.0}]}
    ratios, targets = ratios_and_targets(report)
    assert ratios == {"bare_faust_vs_raw": 0.16, "pipeline_vs_bare_faust": 0.5,
                      "pipeline_vs_raw": 0.08, "two_vs_one_worker": 1.6}
    assert [(t["name"], t["met"]) for t in targets] == [
        ("pipeline_vs_bare_faust", True), ("p99_ms_at_1000_per_s", True),
        ("two_vs_one_worker", True)]


def test_missing_stages_give_no_ratio_and_no_target():
    ratios, targets = ratios_and_targets({"stages": {"bare_faust": {"events_per_s": 1.0}}})
    assert ratios == {} and targets == []


def _report() -> dict:
    report = {
        "run_id": "abcd1234", "date": "2026-11-23T17:00:00+00:00", "seconds": 200.0,
        "machine": {"cpu": "Xeon", "cores": 2, "ram_gb": 23.5, "python": "3.11.7",
                    "kafka_local_stack": "4.1.2", "redis": "7.0.15",
                    "load_average_at_start": [1.5, 1.2, 1.0]},
        "options": {"partitions": 12}, "settings": {"batch_size": 500},
        "events": {"count": 1000, "active_customers": 90, "by_topic": {"browsing": 1000}},
        "stages": {"raw_aiokafka": {"workers": 0, "events": 1000, "events_per_s": 40_000.0},
                   "bare_faust": {"workers": 1, "events": 1000, "events_per_s": 10_000.0},
                   "pipeline_1_worker": {"workers": 1, "events": 1000, "events_per_s": 3_000.0,
                                         "cpu": {"processes_cores": 1.1,
                                                 "machine_busy_cores": 1.9}},
                   "pipeline_2_workers": {"workers": 2, "events": 1000, "events_per_s": 4_500.0,
                                          "cpu": {"processes_cores": 1.6,
                                                  "machine_busy_cores": 1.97}}},
        "latency": [{"offered_per_s": 1000, "achieved_per_s": 998.0, "events": 20_000,
                     "measured": 2_000, "p50_ms": 20.0, "p95_ms": 40.0, "p99_ms": 60.0,
                     "max_ms": 90.0, "queued_p50_ms": 10.0, "queued_p99_ms": 30.0,
                     "drain_s": 1.0,
                     "floor": {"bare_faust": {"measured": 2_000, "p50_ms": 8.0, "p95_ms": 20.0,
                                              "p99_ms": 30.0, "max_ms": 45.0},
                               "raw_aiokafka": {"measured": 2_000, "p50_ms": 2.0,
                                                "p95_ms": 5.0, "p99_ms": 12.0,
                                                "max_ms": 20.0}}}],
    }
    report["ratios"], report["targets"] = ratios_and_targets(report)
    return report


def test_the_table_shows_rates_ratios_latencies_and_verdicts():
    text = render(_report())
    assert "2 cores" in text and "Kafka 4.1.2" in text and "load average at start 1.5" in text
    assert re.search(r"bare Faust app \(decode \+ ack\)\s+1\s+1,000\s+10,000\s+0.250\s+1.000",
                     text)
    assert re.search(r"streamproc pipeline\s+1\s+1,000\s+3,000\s+0.075\s+0.300\s+1.10/1.90",
                     text)
    assert re.search(r"streamproc pipeline\s+2\s+1,000\s+4,500\s+0.113\s+0.450\s+1.60/1.97",
                     text)
    assert "two workers / one worker: 1.50x on 2 cores" in text
    assert "1.97 of them busy during the two workers' stage" in text
    assert re.search(r"1,000\s+998\s+20,000\s+2,000\s+20.0\s+40.0\s+60.0\s+90.0", text)
    # the floor, and how many times its p99 the pipeline's is
    assert re.search(r"1,000\s+bare Faust\s+8.0\s+20.0\s+30.0\s+45.0\s+2.0x", text)
    assert re.search(r"1,000\s+raw aiokafka\s+2.0\s+5.0\s+12.0\s+20.0\s+5.0x", text)
    assert re.search(r"pipeline \(one worker\) / bare Faust\s+>= 0.5\s+measured 0.3\s+NOT met",
                     text)
    assert re.search(r"p99 send-to-decision at 1,000 events/s, ms\s+<= 50\s+measured 60\s+NOT met",
                     text)


def test_a_quick_run_prints_its_figures_without_verdicts():
    report = _report()
    report["options"]["quick"] = True
    report["targets"] = []  # as Bench.run leaves them for --quick
    text = render(report)
    assert re.search(r"streamproc pipeline\s+1\s+1,000\s+3,000", text)  # the figures stay
    assert "NOT met" not in text and " met" not in text
    assert "targets: not judged (--quick" in text
    assert BenchOptions.quick_run().quick and not BenchOptions().quick
    assert BenchOptions.quick_run(events=500).events == 500


def test_redis_url_gets_the_bench_database():
    assert with_db("redis://h:1/0", 13) == "redis://h:1/13"
    assert with_db("redis://:secret@h:1/4?socket_timeout=5", 2) == (
        "redis://:secret@h:1/2?socket_timeout=5")


def test_worker_environment_points_at_the_bench_and_drops_topic_overrides():
    settings = dataclasses.replace(Settings(), topics=Topics.with_prefix("bench-x."),
                                   app_id="bench-x.pipeline", partitions=3,
                                   redis_url="redis://h:1/13", stack_dir=Path("/tmp/w"))
    env = worker_env({"PATH": "/bin", "STREAMPROC_TOPIC_DECISIONS": "prod.decisions",
                      "STREAMPROC_BATCH_SIZE": "200", "STREAMPROC_WEB_PORT": "6066"},
                     settings, "bench-x.")
    assert "STREAMPROC_TOPIC_DECISIONS" not in env
    assert env["PATH"] == "/bin" and env["STREAMPROC_BATCH_SIZE"] == "200"
    assert env["STREAMPROC_TOPIC_PREFIX"] == "bench-x."
    assert env["STREAMPROC_APP_ID"] == "bench-x.pipeline"
    assert env["STREAMPROC_REDIS_URL"] == "redis://h:1/13"
    assert env["STREAMPROC_PARTITIONS"] == "3" and env["STREAMPROC_WEB_PORT"] == "0"
    assert Settings.from_env(env).topics.decisions == "bench-x.decisions"


def test_profiled_worker_runs_under_cprofile():
    assert profiled(PIPELINE, Path("/tmp/p.prof")) == (
        "-m", "cProfile", "-o", "/tmp/p.prof", "-m", "streamproc.cli", "worker")


def test_events_are_addressed_to_the_stage_topics():
    topics = Topics.with_prefix("bench-1.")
    assert on_topics([("browsing", b"c1", b"{}"), ("purchases", b"c2", b"{}")], topics) == [
        ("bench-1.browsing", b"c1", b"{}"), ("bench-1.purchases", b"c2", b"{}")]


@pytest.mark.parametrize(("stages", "message"), [(("raw", "rwa"), "unknown stage"),
                                                  ((), "no stage")])
def test_unknown_or_no_stage_is_refused_with_the_choices(stages, message):
    with pytest.raises(BenchError, match=f"{message}.*choose from raw, faust"):
        Bench(Settings(), BenchOptions(stages=stages), {}, None)  # type: ignore[arg-type]


def test_cli_options_reach_the_bench_options():
    args = build_parser().parse_args(["bench", "--stages", "raw,latency", "--loads", "100,300",
                                      "--redis-db", "9", "--flush", "--quick", "--rounds", "3"])
    assert args.stages == ("raw", "latency") and args.loads == (100, 300)
    assert args.redis_db == 9 and args.flush and args.quick and args.rounds == 3


def test_rounds_below_one_are_refused():
    with pytest.raises(BenchError, match="--rounds 0: give 1 or more"):
        Bench(Settings(), BenchOptions(rounds=0), {}, None)  # type: ignore[arg-type]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--rounds", "0"])


def test_help_states_the_real_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    d = BenchOptions()
    for option, value in (("--events", d.events), ("--customers", d.customers),
                          ("--latency-seconds", f"{d.latency_seconds:g}"),
                          ("--warmup-seconds", f"{d.warmup_seconds:g}"),
                          ("--redis-db", d.redis_db), ("--profile-top", d.profile_top),
                          ("--seed", d.seed), ("--rounds", d.rounds)):
        assert re.search(rf"{option} \S+ .*?\(default: {value}\)", text), option
    assert f"(default: {','.join(map(str, d.loads))})" in text
    q = BenchOptions.quick_run()
    assert f"{q.events} events" in text and f"loads {','.join(map(str, q.loads))}" in text


@pytest.mark.parametrize(("learner", "pipeline", "expected"), [
    ("process", True, [("learner", "off"), ("worker", "off")]),
    ("worker", True, [("worker", "worker")]),
    ("process", False, [("bare", None)]),  # the bare Faust app has no learner
])
def test_the_pipeline_learner_runs_where_the_bench_says(monkeypatch, tmp_path, learner, pipeline,
                                                        expected):
    from streamproc.benchmark import stages
    from streamproc.benchmark.workers import BARE_FAUST, LEARNER

    started = []

    def fake_start(name, argv, count, env, logs):
        kind = {LEARNER: "learner", PIPELINE: "worker", BARE_FAUST: "bare"}[tuple(argv)]
        started.append((kind, env.get("STREAMPROC_LEARNER")))
        return []

    monkeypatch.setattr(stages, "start_workers", fake_start)
    run = stages.WorkerRun(Settings(), "bench-x.", {}, tmp_path, learner)
    stages.start_stage("s", PIPELINE if pipeline else BARE_FAUST, 1, run, pipeline)
    assert started == expected


def test_the_bench_signs_model_snapshots_with_a_secret_of_its_own():
    bench = Bench(Settings(), BenchOptions(), {"PATH": "/bin"}, None)  # type: ignore[arg-type]
    assert len(bench.environ["STREAMPROC_MODEL_SECRET"]) == 32
    kept = Bench(Settings(), BenchOptions(), {"STREAMPROC_MODEL_SECRET": "mine"}, None)  # type: ignore[arg-type]
    assert kept.environ["STREAMPROC_MODEL_SECRET"] == "mine"
    with pytest.raises(BenchError, match="--learner"):
        Bench(Settings(), BenchOptions(learner="elsewhere"), {}, None)  # type: ignore[arg-type]


def test_cpu_seconds_read_the_processes_own_counters() -> None:
    me = os.getpid()
    before = cpu_seconds([me])
    assert before is not None and before > 0
    end = time.process_time() + 0.2
    while time.process_time() < end:  # burn 0.2 s of CPU
        pass
    after = cpu_seconds([me])
    assert after is not None and 0.15 <= after - before <= 2.0
    assert cpu_seconds([me, me]) >= 2 * after - 0.05  # a sum over the processes
    assert cpu_seconds([2 ** 22 + 1]) is None  # no such process
    busy, total = machine_jiffies() or (0, 0)
    assert 0 < busy < total


def test_distinct_records_counts_a_record_published_again_once():
    # A segment move published twice with the same bytes (a redelivered batch's outbox) is one
    # move; two different moves for one event are two.
    move = (b"c1", b'{"segmentation":"rfm","from":null,"to":"prospect","trigger":{"offset":0}}')
    other = (b"c1", b'{"segmentation":"rfm","from":null,"to":"loyal","trigger":{"offset":0}}')
    assert distinct_records([]) == 0
    assert distinct_records([move, move, move]) == 1
    assert distinct_records([move, other, move]) == 2
    # the same value under another key, and a tombstone, are other records
    assert distinct_records([move, (b"c2", move[1]), (b"c1", None), (b"c1", None)]) == 3
    # a key and a value that would concatenate to the same bytes stay apart
    assert distinct_records([(b"ab", b"c"), (b"a", b"bc"), (None, b"abc")]) == 3
