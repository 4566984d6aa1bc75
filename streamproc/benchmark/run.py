"""``streamproc bench``: raw aiokafka, a bare Faust app and the pipeline on the same events.

One run generates the events once with the simulator, produces them to fresh topics (a unique
prefix), then runs each stage on them with a fresh consumer group, and the latency stage on
topics of its own (its floor, the bare Faust app and a raw consumer, on others). With
``--rounds N`` stages 1-3 run N times, one stage after the other in each round, each round on
topics of its own holding the same events, and each stage reports its median round. Redis state
goes to a database of its own (``--redis-db``), which must be empty (or ``--flush``) and is
flushed between stages and at the end; the topics are deleted at the end unless
``--keep-topics``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import pstats
import secrets
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import orjson

from streamproc.benchmark.machine import machine
from streamproc.benchmark.offsets import KafkaProbe, partitions_of
from streamproc.benchmark.profiling import summarise_profile
from streamproc.benchmark.stages import (
    LatencyResult,
    Message,
    Progress,
    StageResult,
    WorkerRun,
    floor_stage,
    latency_stage,
    produce,
    raw_stage,
    worker_stage,
)
from streamproc.benchmark.workers import BARE_FAUST, PIPELINE, BenchError, profiled
from streamproc.errors import redis_unreachable, shown_url
from streamproc.redis_options import UNREACHABLE as REDIS_UNREACHABLE
from streamproc.redis_options import redis_client
from streamproc.settings import Settings, Topics
from streamproc.simulator import Population, generate_events
from streamproc.stack import ensure_topics

STAGES = ("raw", "faust", "pipeline", "pipeline2", "pipeline3", "latency")
# pipeline3 (three workers) only when asked: capacity planning on a cluster stack.
DEFAULT_STAGES = tuple(s for s in STAGES if s != "pipeline3")
LEARNER_PLACES = ("process", "worker")
LOCK_KEY = "streamproc:bench:lock"
LOCK_TTL_S = 6 * 3600
# Targets of the issue: pipeline / bare Faust, two workers / one, p99 at 1,000 events/s.
TARGET_PIPELINE_VS_FAUST = 0.5
TARGET_TWO_VS_ONE = 1.6
TARGET_P99_MS = 50.0
TARGET_P99_LOAD = 1000
# The profiled worker stops after this many events: cProfile slows it down about three times.
PROFILE_EVENTS = 30_000


@dataclass(frozen=True)
class BenchOptions:
    events: int = 100_000
    customers: int = 10_000
    partitions: int | None = None  # None: STREAMPROC_PARTITIONS
    stages: tuple[str, ...] = DEFAULT_STAGES
    loads: tuple[int, ...] = (1000, 5000)
    latency_seconds: float = 15.0
    warmup_seconds: float = 3.0
    redis_db: int = 13
    flush: bool = False
    keep_topics: bool = False
    profile: Path | None = None
    profile_top: int = 25
    seed: int = 7
    # Where the pipeline's learner runs: "process" (its own, as recommended) or "worker".
    learner: str = "process"
    # Times stages 1-3 run (alternated); each reports its median round.
    rounds: int = 1
    # A smoke test's sizes: the figures are printed, the targets not judged.
    quick: bool = False

    @classmethod
    def quick_run(cls, **overrides: Any) -> BenchOptions:
        """Tiny sizes for a smoke test: a minute or two, figures not meaningful."""
        small: dict[str, Any] = {"events": 3000, "customers": 300, "latency_seconds": 3.0,
                                 "warmup_seconds": 0.5, "loads": (200, 1000), "quick": True}
        return cls(**(small | overrides))


def with_db(url: str, db: int) -> str:
    """``url`` pointing at database ``db``.

    >>> with_db("redis://127.0.0.1:6379/0", 13)
    'redis://127.0.0.1:6379/13'
    >>> with_db("rediss://:pw@host:6380", 2)
    'rediss://:pw@host:6380/2'
    """
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def simulated_events(customers: int, seed: int) -> Iterator[tuple[str, bytes, bytes]]:
    """The simulator's events as (logical topic, key, value), endlessly."""
    population = Population.generate(customers, seed=seed)
    for ev in generate_events(population, datetime.now(UTC), seed=seed):
        yield ev.topic, ev.key.encode(), orjson.dumps(ev.event)


def on_topics(events: Sequence[tuple[str, bytes, bytes]], topics: Topics) -> list[Message]:
    """Events addressed to the actual topics of ``topics``."""
    return [(getattr(topics, logical), key, value) for logical, key, value in events]


class RedisGuard:
    """The bench's Redis database: refuse a non-empty one, flush between stages and at the end.

    A lock key (``streamproc:bench:lock``) marks a database in use by a running bench: another
    bench refuses it even with ``--flush``. A Redis Cluster has only database 0: the bench
    takes the whole cluster (its keys counted and flushed on every primary).
    """

    def __init__(self, settings: Settings, db: int) -> None:
        self.url = shown_url(settings.redis_url)
        self.db = db
        self.cluster = settings.redis_is_cluster
        self.where = "the Redis Cluster" if self.cluster else f"Redis database {db}"
        self.client = redis_client(settings, decode_responses=False)
        self.token = f"pid {os.getpid()} since {datetime.now(UTC).isoformat(timespec='seconds')}"

    async def _keys(self) -> int:
        if self.cluster:  # DBSIZE alone asks one node of the cluster
            return int(await self.client.dbsize(target_nodes="primaries"))
        return int(await self.client.dbsize())

    async def acquire(self, flush: bool) -> dict[str, Any]:
        try:
            await self.client.ping()
        except REDIS_UNREACHABLE + (OSError,) as exc:
            raise redis_unreachable(self.url, exc, kind=BenchError) from None
        holder = await self.client.get(LOCK_KEY)
        if holder is not None:
            who = holder.decode(errors="replace") if isinstance(holder, bytes) else holder
            raise BenchError(f"{self.where} is in use by another streamproc bench ({who}); "
                             "wait for it to finish" + ("" if self.cluster else
                                                        " or use another --redis-db"))
        keys = await self._keys()
        if keys and not flush:
            pick = ("A cluster has only database 0: give the bench a cluster of its own (`stack "
                    "up --redis-cluster 3` with another STREAMPROC_REDIS_CLUSTER_PORT and "
                    "STREAMPROC_STACK_DIR) or pass --flush to empty this one" if self.cluster
                    else "Pick an empty one (--redis-db N) or pass --flush to empty this one")
            raise BenchError(f"{self.where} at {self.url} holds {keys:,} keys; the bench "
                             f"flushes its database between stages. {pick}")
        if not await self.client.set(LOCK_KEY, self.token, nx=True, ex=LOCK_TTL_S):
            raise BenchError(f"{self.where} was just taken by another bench")
        await self.reset()
        info: dict[str, Any] = await self.client.info("server") | await self.client.info("memory")
        return info

    async def reset(self) -> None:
        """Empty the database (fresh state for the next stage), keeping the lock."""
        await self.client.flushdb()
        await self.client.set(LOCK_KEY, self.token, ex=LOCK_TTL_S)

    async def release(self) -> None:
        """Empty the database if this bench holds it, and close the connection."""
        try:
            if await self.client.get(LOCK_KEY) == self.token.encode():
                await self.client.flushdb()
        finally:
            await self.close()

    async def close(self) -> None:
        await self.client.aclose()


class Bench:
    """One run: its id, options, topics created, the Redis guard and the Kafka probe."""

    def __init__(self, base: Settings, options: BenchOptions, environ: Mapping[str, str],
                 out: TextIO) -> None:
        unknown = set(options.stages) - set(STAGES)
        if unknown or not (options.stages or options.profile):
            what = f"unknown stage(s) {', '.join(sorted(unknown))}" if unknown else "no stage"
            raise BenchError(f"{what}; choose from {', '.join(STAGES)}")
        if options.learner not in LEARNER_PLACES:
            raise BenchError(f"--learner {options.learner}: choose from "
                             f"{', '.join(LEARNER_PLACES)}")
        if options.rounds < 1:
            raise BenchError(f"--rounds {options.rounds}: give 1 or more")
        self.base = base
        self.options = options
        # The workers and a learner of its own share models through signed snapshots in the
        # bench's Redis database: a secret of the run's own unless the environment has one.
        self.environ = {**environ, "STREAMPROC_MODEL_SECRET":
                        environ.get("STREAMPROC_MODEL_SECRET") or secrets.token_hex(16)}
        self.progress = Progress(out)
        self.run_id = uuid.uuid4().hex[:8]
        self.partitions = options.partitions or base.partitions
        # A Redis Cluster has database 0 only: the bench uses the whole cluster (RedisGuard).
        self.redis_url = (base.redis_url if base.redis_is_cluster
                          else with_db(base.redis_url, options.redis_db))
        self.guard = RedisGuard(dataclasses.replace(base, redis_url=self.redis_url),
                                options.redis_db)
        # Made in run(): aiokafka clients need the running loop, and nothing is left behind
        # when the bench refuses its Redis database.
        self.probe: KafkaProbe
        self.workdir: Path
        self.created: list[str] = []
        self.events = simulated_events(options.customers, options.seed)

    def settings(self, prefix: str, group: str) -> Settings:
        return dataclasses.replace(
            self.base, topics=Topics.with_prefix(prefix), app_id=f"{prefix}{group}",
            partitions=self.partitions, redis_url=self.redis_url, web_port=0,
            stack_dir=self.workdir, max_future_skew_s=0)

    def worker_run(self, prefix: str, group: str) -> WorkerRun:
        return WorkerRun(self.settings(prefix, group), prefix, self.environ, self.workdir,
                         self.options.learner)

    async def topics(self, prefix: str) -> None:
        settings = self.settings(prefix, "topics")
        created = await ensure_topics(settings)
        self.created += created
        if len(created) != len(settings.topics.all()):
            raise BenchError(f"topics with the prefix {prefix!r} existed already")

    async def run(self) -> dict[str, Any]:
        """Run the stages; SIGTERM, like Ctrl-C, stops the workers and cleans up first."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await self._run()
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    async def _run(self) -> dict[str, Any]:
        opts = self.options
        say = self.progress.say
        try:
            info = await self.guard.acquire(opts.flush)
        except BaseException:
            await self.guard.close()
            raise
        self.probe = KafkaProbe(self.base)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"streamproc-bench-{self.run_id}-"))
        began = time.monotonic()
        report: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(info) | {"load_average_at_start": [
                round(x, 2) for x in os.getloadavg()]},
            "options": {k: str(v) if isinstance(v, Path) else v
                        for k, v in dataclasses.asdict(opts).items()}
            | {"partitions": self.partitions},
            "settings": {"batch_size": self.base.batch_size,
                         "batch_wait_ms": self.base.batch_wait_ms,
                         "batch_behind_ms": self.base.batch_behind_ms,
                         "batch_behind_wait_ms": self.base.batch_behind_wait_ms,
                         "state_compression": self.base.state_compression},
            "run_id": self.run_id,
        }
        say(f"streamproc bench {self.run_id}: stages {', '.join(opts.stages)}; Redis "
            f"{self.guard.url}; worker logs in {self.workdir}")
        try:
            await self.probe.start()
            if set(opts.stages) - {"latency"} or opts.profile is not None:
                report |= await self._throughput()
            if "latency" in opts.stages:
                report["latency"] = [r.as_dict() for r in await self._latency()]
        except BaseException:
            say(f"worker logs kept in {self.workdir}")
            raise
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            try:
                if self.created and not opts.keep_topics:
                    await self.probe.delete_topics(self.created)
                    say(f"deleted the bench's {len(self.created)} topics")
                elif self.created:
                    say(f"kept the bench's topics: {', '.join(self.created)}")
            finally:
                await self.probe.close()
                await self.guard.release()
        report["seconds"] = round(time.monotonic() - began, 1)
        report["ratios"], report["targets"] = ratios_and_targets(report)
        if opts.quick:  # a smoke test's sizes say nothing about the targets
            report["targets"] = []
        return report

    async def _throughput(self) -> dict[str, Any]:
        opts, say = self.options, self.progress.say
        prefix = f"bench-{self.run_id}."
        say(f"generating {opts.events:,} events of {opts.customers:,} simulated customers "
            f"(seed {opts.seed})")
        events = list(itertools.islice(self.events, opts.events))
        by_topic: dict[str, int] = {}
        for logical, _, _ in events:
            by_topic[logical] = by_topic.get(logical, 0) + 1
        runs: dict[str, list[dict[str, Any]]] = {}
        for n in range(1, opts.rounds + 1):
            if opts.rounds > 1:
                prefix = f"bench-{self.run_id}-r{n}."
                say(f"round {n} of {opts.rounds}")
            total = await self._produce(prefix, events)
            for name, result in (await self._stages(prefix, total)).items():
                runs.setdefault(name, []).append(result)
        out: dict[str, Any] = {"events": {
            "count": total, "customers": opts.customers,
            "active_customers": len({key for _, key, _ in events}), "by_topic": by_topic}}
        out["stages"] = {name: median_round(results) for name, results in runs.items()}
        if opts.profile is not None:
            out["profile"] = await self._profile(prefix, total)
        return out

    async def _produce(self, prefix: str, events: Sequence[tuple[str, bytes, bytes]]) -> int:
        """Produce the events to fresh topics under ``prefix``; return how many they hold."""
        await self.topics(prefix)
        topics = Topics.with_prefix(prefix)
        messages = on_topics(events, topics)
        self.progress.say(f"producing them to {prefix}* ({self.partitions} partitions)")
        await produce(self.base, messages, self.progress)
        total = await self.probe.end_total(partitions_of(topics.inputs, self.partitions))
        if total != len(messages):
            raise BenchError(f"produced {len(messages):,} events but the input topics hold "
                             f"{total:,}")
        return total

    async def _stages(self, prefix: str, total: int) -> dict[str, dict[str, Any]]:
        """Stages 1-3 (those chosen) on the events under ``prefix``."""
        opts, say = self.options, self.progress.say
        stages: dict[str, Any] = {}
        if "raw" in opts.stages:
            say("stage 1: raw aiokafka consumer (in this process)")
            result = await raw_stage(self.settings(prefix, "raw"), f"{prefix}raw", total,
                                     self.progress)
            stages[result.stage] = self._done(result)
        plan: list[tuple[str, str, tuple[str, ...], int]] = [
            ("faust", "bare_faust", BARE_FAUST, 1),
            ("pipeline", "pipeline_1_worker", PIPELINE, 1),
            ("pipeline2", "pipeline_2_workers", PIPELINE, 2),
            ("pipeline3", "pipeline_3_workers", PIPELINE, 3),
        ]
        for i, (key, name, argv, count) in enumerate(plan, start=2):
            if key not in opts.stages:
                continue
            say(f"stage {min(i, 3)}: {name.replace('_', ' ')} (worker subprocesses)")
            await self.guard.reset()
            result = await worker_stage(name, argv, count, self.worker_run(prefix, key),
                                        self.probe, total, self.progress,
                                        pipeline=key != "faust")
            stages[name] = self._done(result)
        return stages

    def _done(self, result: StageResult) -> dict[str, Any]:
        self.progress.say(f"  -> {result.stage}: {result.events:,} events, "
                          f"{result.events_per_s:,.0f} events/s ({result.method})")
        return result.as_dict()

    async def _profile(self, prefix: str, total: int) -> dict[str, Any]:
        opts = self.options
        assert opts.profile is not None
        path = opts.profile.resolve()
        events = min(total, PROFILE_EVENTS)
        self.progress.say(f"profile: one pipeline worker under cProfile for {events:,} events, "
                          f"stats to {path}")
        await self.guard.reset()
        result = await worker_stage("profiled_pipeline", profiled(PIPELINE, path), 1,
                                    self.worker_run(prefix, "profile"), self.probe, events,
                                    self.progress)
        summary = summarise_profile(pstats.Stats(str(path)), top=opts.profile_top)
        return {"file": str(path), "events": result.events,
                "events_per_s_under_cprofile": round(result.events_per_s, 1)} | summary

    async def _latency(self) -> list[LatencyResult]:
        opts = self.options
        results = []
        for load in opts.loads:
            count = max(1, int(load * opts.latency_seconds))
            events = list(itertools.islice(self.events, count))
            self.progress.say(f"stage 4: latency at {load:,} events/s for "
                              f"{opts.latency_seconds:g}s ({count:,} events): the floor (the bare "
                              "Faust app, and a raw consumer here), then one pipeline worker")
            prefix = f"bench-{self.run_id}-f{load}."
            await self.topics(prefix)
            floor = await floor_stage(load, on_topics(events, Topics.with_prefix(prefix)),
                                      opts.warmup_seconds, self.worker_run(prefix, "floor"),
                                      self.probe, self.progress)
            for name, label in (("raw_aiokafka", "raw aiokafka"), ("bare_faust", "bare Faust")):
                f = floor[name]
                self.progress.say(f"  -> floor, {label}: p50 {f['p50_ms']:.1f} ms, p95 "
                                  f"{f['p95_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms")
            prefix = f"bench-{self.run_id}-l{load}."
            await self.topics(prefix)
            await self.guard.reset()
            result = await latency_stage(load, on_topics(events, Topics.with_prefix(prefix)),
                                         opts.warmup_seconds,
                                         self.worker_run(prefix, "latency"), self.probe,
                                         self.progress)
            result.floor = floor
            self.progress.say(f"  -> {load:,}/s offered, {result.achieved_per_s:,.0f}/s sent: "
                              f"p50 {result.p50_ms:.1f} ms, p95 {result.p95_ms:.1f} ms, "
                              f"p99 {result.p99_ms:.1f} ms over {result.measured:,} decisions")
            results.append(result)
        return results


def median_round(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A stage's figures from its median round (the lower of the two middle ones for an even
    number), with every round's events/s in round order when there was more than one.

    >>> median_round([{"events_per_s": 9.0}, {"events_per_s": 5.0}, {"events_per_s": 7.0}])
    {'events_per_s': 7.0, 'rounds_events_per_s': [9.0, 5.0, 7.0]}
    >>> median_round([{"events_per_s": 9.0}, {"events_per_s": 5.0}])["events_per_s"]
    5.0
    >>> median_round([{"events_per_s": 9.0}])
    {'events_per_s': 9.0}
    """
    if len(results) == 1:
        return results[0]
    ranked = sorted(results, key=lambda r: r["events_per_s"])
    return ranked[(len(ranked) - 1) // 2] | {
        "rounds_events_per_s": [r["events_per_s"] for r in results]}


def ratios_and_targets(report: Mapping[str, Any]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The ratios between the stages, and each target of the issue: value and whether met.

    >>> r = {"stages": {"raw_aiokafka": {"events_per_s": 40000.0},
    ...      "bare_faust": {"events_per_s": 10000.0},
    ...      "pipeline_1_worker": {"events_per_s": 4000.0},
    ...      "pipeline_2_workers": {"events_per_s": 6000.0}},
    ...      "latency": [{"offered_per_s": 1000, "p99_ms": 30.0}]}
    >>> ratios, targets = ratios_and_targets(r)
    >>> ratios["pipeline_vs_bare_faust"], ratios["two_vs_one_worker"]
    (0.4, 1.5)
    >>> [(t["name"], t["met"]) for t in targets]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('pipeline_vs_bare_faust', False), ('p99_ms_at_1000_per_s', True),
     ('two_vs_one_worker', False)]
    """
    rate = {k: v["events_per_s"] for k, v in report.get("stages", {}).items()}
    ratios: dict[str, float] = {}
    for name, top, bottom in (("bare_faust_vs_raw", "bare_faust", "raw_aiokafka"),
                              ("pipeline_vs_bare_faust", "pipeline_1_worker", "bare_faust"),
                              ("pipeline_vs_raw", "pipeline_1_worker", "raw_aiokafka"),
                              ("two_vs_one_worker", "pipeline_2_workers", "pipeline_1_worker")):
        if top in rate and bottom in rate and rate[bottom] > 0:
            ratios[name] = round(rate[top] / rate[bottom], 3)
    targets: list[dict[str, Any]] = []
    if "pipeline_vs_bare_faust" in ratios:
        value = ratios["pipeline_vs_bare_faust"]
        targets.append({"name": "pipeline_vs_bare_faust",
                        "target": f">= {TARGET_PIPELINE_VS_FAUST}", "value": value,
                        "met": value >= TARGET_PIPELINE_VS_FAUST})
    for lat in report.get("latency", []):
        if lat["offered_per_s"] == TARGET_P99_LOAD:
            targets.append({"name": f"p99_ms_at_{TARGET_P99_LOAD}_per_s",
                            "target": f"<= {TARGET_P99_MS:g}", "value": lat["p99_ms"],
                            "met": lat["p99_ms"] <= TARGET_P99_MS})
    if "two_vs_one_worker" in ratios:
        value = ratios["two_vs_one_worker"]
        targets.append({"name": "two_vs_one_worker", "target": f">= {TARGET_TWO_VS_ONE}",
                        "value": value, "met": value >= TARGET_TWO_VS_ONE})
    return ratios, targets
