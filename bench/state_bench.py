"""State benchmark: update throughput and Redis memory per customer, on the real local Redis.

    .venv/bin/python -m bench.state_bench [--customers N] [--events N] [--json out.json]

(a) Throughput. The same simulated events (``generate_events``, fixed seed), turned into the
``RawMessage`` values a worker receives (topic names from the settings, partition from the key,
consecutive offsets per partition, key = customer id), go through the worker's ``Processor``
(built as ``streamproc.worker.app`` builds it, segmenter included):

- with ``RedisStore`` in batches of ``--batch`` (500, the worker's default): two pipelined round
  trips per batch;
- with ``RedisStore`` in batches of 1: two round trips per event;
- with ``MemoryStore`` (a dict), batched and one by one: the pure-Python part, so the Redis share
  is the difference;
- decoding alone (JSON parse and schema validation), the first thing every message costs.

(b) Memory. ``--memory-customers`` customers (100,000) with about ``--history`` events each
(30, purchases included) are written through the batched path (``--jobs`` processes, one shard of
customers each), then ``INFO memory`` ``used_memory`` (less the replication backlog) after
minus before, divided by the customers stored, and ``MEMORY USAGE`` of a random sample of
customer keys (mean, p50, p95), with the sizes of the stored fields and of the profile's
top-level parts.

Everything runs against ``--redis-url`` (database 14 of the local Redis by default), flushed
before and after each part; a ``redis+cluster://`` URL runs it on a Redis Cluster (all of it
flushed: a cluster has database 0 only), its ``used_memory`` summed over the primaries. A
database holding keys streamproc did not write is refused unless ``--force``. Progress goes to
stderr, the table to stdout, the figures to ``--json`` when given. See docs/benchmarks.md for
the measured figures and how to re-measure them.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import itertools
import multiprocessing
import os
import pstats
import random
import statistics
import sys
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from streamproc.benchmark.machine import machine
from streamproc.benchmark.profiling import summarise_profile
from streamproc.events.codec import Decoder, RawMessage
from streamproc.events.partitioner import partition_for
from streamproc.processor import BatchResult, Processor
from streamproc.redis_options import is_cluster, redis_client
from streamproc.settings import Settings
from streamproc.simulator import Population, SimEvent, generate_events
from streamproc.state.memory import MemoryStore
from streamproc.state.store import RedisStore, Store, with_hiredis_packing

try:
    from streamproc.state.document import unpack_outbox
except ImportError:  # before outboxes could be compressed
    def unpack_outbox(blob: bytes | None) -> list[dict[str, Any]]:
        return list(orjson.loads(blob)) if blob else []

START = datetime(2026, 3, 1, tzinfo=UTC)
GOAL_BYTES_PER_CUSTOMER = 2048
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
PROGRESS_S = 5.0
# Events per customer, for MEMORY USAGE by length of history (64: the default dedupe window).
HISTORY_BUCKETS = (("1-19", 1, 19), ("20-40", 20, 40), ("41-64", 41, 64),
                   ("65+", 65, 10**9))


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- inputs -------------------------------------------------------------------------------------


def unpack_doc(blob: bytes) -> dict[str, Any]:
    """A stored profile document as a dict, however the code under test stores it."""
    try:
        from streamproc.state.document import unpack_doc as unpack
    except ImportError:  # before documents could be compressed: always JSON
        return orjson.loads(blob)  # type: ignore[no-any-return]
    return unpack(blob)


def unpack_outbox(blob: bytes | None) -> list[Any]:
    """A stored outbox as a list, however the code under test stores it."""
    try:
        from streamproc.state.document import unpack_outbox as unpack
    except ImportError:  # before outboxes could be compressed: always JSON
        return orjson.loads(blob) if blob else []  # type: ignore[no-any-return]
    return unpack(blob)


def make_processor(settings: Settings, store: Store) -> Processor:
    """The processor as the worker builds it (streamproc.worker.app.create_app)."""
    try:
        from streamproc.segments.segmenter import Segmenter
    except ImportError:  # before segmentation existed
        return Processor(settings, store)
    try:
        from streamproc.learning.scorer import IntentScorer
    except ImportError:  # before purchase intent was wired
        return Processor(settings, store, segmenter=Segmenter(settings))
    # No blob store: the bench measures state, not model snapshots.
    return Processor(settings, store, segmenter=Segmenter(settings),
                     scorer=IntentScorer(settings))


def raw_messages(settings: Settings, events: Iterable[SimEvent],
                 offsets: dict[tuple[str, int], int]) -> Iterator[RawMessage]:
    """Simulated events as a worker receives them from Kafka.

    The partition is the key's, as Kafka's default partitioner (murmur2) gives it, offsets are
    consecutive per topic-partition (``offsets`` carries on across calls) and the timestamp is
    the time of sending, as a producer's.
    """
    now_ms = time.time_ns() // 1_000_000
    for ev in events:
        key = ev.key.encode()
        topic = getattr(settings.topics, ev.topic)
        partition = partition_for(key, settings.partitions)
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        yield RawMessage(topic, partition, offset, key, orjson.dumps(ev.event), now_ms)


class CountingStore:
    """A store that counts its round trips (one per load, save, histograms and erase call)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.round_trips = 0

    async def load(self, customer_ids: Sequence[str]) -> Any:
        self.round_trips += 1
        return await self.inner.load(customer_ids)

    async def save(self, writes: Sequence[Any]) -> list[str]:
        self.round_trips += 1
        return await self.inner.save(writes)

    async def save_then_due(self, writes: Sequence[Any], *due: Any) -> Any:
        self.round_trips += 1  # the write and the timers' query: one round trip
        return await self.inner.save_then_due(writes, *due)  # type: ignore[attr-defined]

    async def histograms(self) -> dict[str, dict[str, int]]:
        self.round_trips += 1
        return await self.inner.histograms()  # type: ignore[attr-defined, no-any-return]

    async def erase(self, customer_id: str, erased_ms: int = 0, suppress_ms: int = 0) -> int:
        self.round_trips += 1
        return await self.inner.erase(customer_id, erased_ms, suppress_ms)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# -- Redis ----------------------------------------------------------------------------------------


async def check_database(client: aioredis.Redis, url: str, force: bool) -> None:
    """Refuse to flush a database that holds anything streamproc did not write."""
    await client.ping()
    foreign: list[bytes] = []
    async for key in client.scan_iter(count=1000):
        if not key.startswith(b"sp:"):
            foreign.append(key)
            if len(foreign) == 3:
                break
    if foreign and not force:
        raise SystemExit(
            f"state_bench: {url} holds keys streamproc did not write ({foreign!r} ...); the bench "
            "flushes its database. Use a spare one (--redis-url redis://host:port/N) or --force.")


def _data_memory(info: dict[str, Any]) -> int:
    # Less the replication backlog: a buffer of a primary with replicas that fills up to
    # repl-backlog-size (1 MB) as writes flow, whatever the data (3 MB on a fresh local cluster).
    return int(info["used_memory"]) - int(info.get("mem_replication_backlog", 0))


async def used_memory(client: aioredis.Redis) -> int:
    """``used_memory`` of the Redis less its replication backlog, or on a cluster the sum over
    its primaries (each replica holds one more copy of its primary's keys)."""
    if is_cluster(client):
        found = await client.info("memory", target_nodes="primaries")
        return sum(_data_memory(node) for node in found.values())
    return _data_memory(await client.info("memory"))


# -- (a) throughput -------------------------------------------------------------------------------


@dataclasses.dataclass
class PathResult:
    path: str
    batch: int
    events: int
    seconds: float
    applied: int = 0
    decisions: int = 0
    segments: int = 0
    deadletters: int = 0
    round_trips: int = 0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def us_per_event(self) -> float:
        return self.seconds / self.events * 1e6

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"events_per_s": round(self.events_per_s, 1),
                                           "us_per_event": round(self.us_per_event, 2)}


async def run_path(label: str, processor: Processor, store: CountingStore,
                   messages: Sequence[RawMessage], batch: int) -> PathResult:
    out = PathResult(label, batch, len(messages), 0.0)
    started = last = time.perf_counter()
    for i in range(0, len(messages), batch):
        result: BatchResult = await processor.process(messages[i:i + batch])
        await processor.settle(result)  # as a worker does once published: fired timers leave
        out.applied += result.applied
        out.decisions += len(result.decisions)
        out.segments += len(getattr(result, "segments", ()))
        out.deadletters += len(result.deadletters)
        now = time.perf_counter()
        if now - last > PROGRESS_S:
            last = now
            done = i + batch
            log(f"  {label}, batches of {batch}: {done:,}/{len(messages):,} events, "
                f"{done / (now - started):,.0f}/s")
    out.seconds = time.perf_counter() - started
    out.round_trips = store.round_trips
    if out.deadletters:
        log(f"  warning: {out.deadletters} messages were dead-lettered")
    return out


def decode_only(settings: Settings, messages: Sequence[RawMessage]) -> PathResult:
    decoder = Decoder(settings)
    started = time.perf_counter()
    for msg in messages:
        decoder.decode(msg)
    return PathResult("decode only (JSON + schema)", 0, len(messages),
                      time.perf_counter() - started)


async def throughput(args: argparse.Namespace, settings: Settings,
                     client: aioredis.Redis) -> dict[str, Any]:
    log(f"(a) throughput: generating {args.events:,} events of {args.customers:,} customers")
    population = Population.generate(args.customers, seed=args.seed)
    events = list(itertools.islice(generate_events(population, START, seed=args.seed),
                                   args.events))
    messages = list(raw_messages(settings, events, {}))
    types: dict[str, int] = {}
    for ev in events:
        types[ev.event["type"]] = types.get(ev.event["type"], 0) + 1
    active = len({ev.key for ev in events})
    per_batch = [len({ev.key for ev in events[i:i + args.batch]})
                 for i in range(0, len(events), args.batch)]

    # Warm up (schema compilation, imports, the first connection) on a throwaway state.
    warm = CountingStore(MemoryStore())
    await make_processor(settings, warm).process(messages[:1000])

    paths: list[PathResult] = [decode_only(settings, messages)]
    log(f"  {paths[0].path}: {paths[0].events_per_s:,.0f}/s")
    for batch in (args.batch, 1):
        store = CountingStore(MemoryStore())
        paths.append(await run_path("Processor + MemoryStore", make_processor(settings, store),
                                    store, messages, batch))
        log(f"  {paths[-1].path}, batches of {batch}: {paths[-1].events_per_s:,.0f}/s")
    for batch in (args.batch, 1):
        await client.flushdb()
        store = CountingStore(RedisStore(client))
        paths.append(await run_path("Processor + RedisStore", make_processor(settings, store),
                                    store, messages, batch))
        log(f"  {paths[-1].path}, batches of {batch}: {paths[-1].events_per_s:,.0f}/s")
    await client.flushdb()

    profile = None
    if args.profile:
        log(f"  profiling Processor + RedisStore, batches of {args.batch} (cProfile)")
        store = CountingStore(RedisStore(client))
        processor = make_processor(settings, store)
        profiler = cProfile.Profile()
        profiler.enable()
        await run_path("profiled", processor, store, messages, args.batch)
        profiler.disable()
        await client.flushdb()
        profiler.dump_stats(args.profile)
        profile = summarise_profile(pstats.Stats(profiler))

    mem500, mem1, redis500, redis1 = paths[1:5]
    return {
        "customers": args.customers,
        "active_customers": active,
        "customers_per_batch_mean": round(statistics.fmean(per_batch), 1),
        "events": len(messages),
        "event_types": dict(sorted(types.items(), key=lambda kv: -kv[1])),
        "batch": args.batch,
        "paths": [p.as_dict() for p in paths],
        "batched_vs_one_by_one": round(redis500.events_per_s / redis1.events_per_s, 2),
        "redis_share_batched": round(1 - mem500.seconds / redis500.seconds, 3),
        "redis_share_one_by_one": round(1 - mem1.seconds / redis1.seconds, 3),
        "decode_share_batched": round(paths[0].seconds / redis500.seconds, 3),
        "profile": profile,
    }


# -- (b) memory -----------------------------------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _describe(values: Sequence[float]) -> dict[str, float]:
    return {"mean": round(statistics.fmean(values), 1), "p50": _percentile(values, 0.5),
            "p95": _percentile(values, 0.95), "max": max(values)}


Job = tuple[int, int, int, int, int, Settings, str, int]


def memory_shard(job: Job) -> dict[str, Any]:
    """One process's share of (b): every ``shards``-th customer, written in batches."""
    return asyncio.run(write_memory_shard(job))


async def write_memory_shard(job: Job) -> dict[str, Any]:
    shard, shards, customers, history, seed, settings, url, batch = job
    population = Population.generate(customers, seed=seed)
    mine = Population(seed, population.customers[shard::shards], population.catalogue)
    target = history * len(mine.customers)
    events = itertools.islice(generate_events(mine, START, seed=seed * 100 + shard), target)
    return await _write_shard(shard, target, events, settings, url, batch)


async def _write_shard(shard: int, target: int, events: Iterator[SimEvent], settings: Settings,
                       url: str, batch: int) -> dict[str, Any]:
    store = RedisStore.from_settings(dataclasses.replace(settings, redis_url=url))
    processor = make_processor(settings, store)
    per_customer: dict[str, int] = {}
    offsets: dict[tuple[str, int], int] = {}
    done = batches = distinct = 0
    started = last = time.perf_counter()
    try:
        while chunk := list(itertools.islice(events, batch)):
            batches += 1
            distinct += len({ev.key for ev in chunk})
            for ev in chunk:
                per_customer[ev.key] = per_customer.get(ev.key, 0) + 1
            await processor.settle(await processor.process(
                list(raw_messages(settings, chunk, offsets))))
            done += len(chunk)
            now = time.perf_counter()
            if now - last > PROGRESS_S * 2:
                last = now
                rate = done / (now - started)
                log(f"  memory shard {shard}: {done:,}/{target:,} events, {rate:,.0f}/s, "
                    f"about {(target - done) / rate:,.0f}s to go")
    finally:
        await store.close()
    return {"events": done, "seconds": time.perf_counter() - started,
            "per_customer": per_customer, "customers_per_batch": distinct / max(1, batches)}


async def memory(args: argparse.Namespace, settings: Settings,
                 client: aioredis.Redis) -> dict[str, Any]:
    await client.flushdb()
    before = await used_memory(client)
    jobs = max(1, args.jobs)
    log(f"(b) memory: {args.memory_customers:,} customers x about {args.history} events, "
        f"{jobs} processes")
    started = time.perf_counter()
    shard_jobs = [(shard, jobs, args.memory_customers, args.history, args.seed, settings,
                   args.redis_url, args.batch) for shard in range(jobs)]
    if jobs == 1:  # in this process, on its running event loop
        shards = [await write_memory_shard(shard_jobs[0])]
    else:
        # spawn: fresh interpreters, nothing inherited from this process's event loop
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            shards = list(pool.map(memory_shard, shard_jobs))
    seconds = time.perf_counter() - started
    await asyncio.sleep(0.5)
    after = await used_memory(client)
    history = {cid: n for s in shards for cid, n in s["per_customer"].items()}
    per_customer = list(history.values())
    events = sum(s["events"] for s in shards)

    keys = [k async for k in client.scan_iter(match="sp:{*}:state", count=5000)]
    log(f"  {len(keys):,} customer keys written in {seconds:.0f}s; sampling {args.sample:,}")
    sample = random.Random(args.seed).sample(keys, min(args.sample, len(keys)))
    pipe = client.pipeline(transaction=False)
    for key in sample:
        pipe.memory_usage(key, samples=0)
        pipe.hstrlen(key, "doc")
        pipe.hstrlen(key, "outbox")
        pipe.hget(key, "doc")
        pipe.object("encoding", key)
        pipe.hget(key, "outbox")
    rows = await pipe.execute()
    usage, doc_bytes, outbox_bytes, doc_json, doc_zlib, encodings = [], [], [], [], [], {}
    parts: dict[str, list[int]] = {}
    by_history: dict[str, list[int]] = {label: [] for label, _, _ in HISTORY_BUCKETS}
    outbox_records: dict[str, int] = {}
    for key, i in zip(sample, range(0, len(rows), 6), strict=True):
        mem, doc_len, outbox_len, doc, encoding, outbox = rows[i:i + 6]
        for record in unpack_outbox(outbox):
            topic = record.get("topic", "?") if isinstance(record, dict) else "?"
            outbox_records[topic] = outbox_records.get(topic, 0) + 1
        usage.append(int(mem))
        n = history.get(key.decode()[4:-7], 0)  # sp:{<customer id>}:state
        for label, low, high in HISTORY_BUCKETS:
            if low <= n <= high:
                by_history[label].append(int(mem))
        doc_bytes.append(int(doc_len))
        profile = unpack_doc(doc)
        as_json = orjson.dumps(profile)
        doc_json.append(len(as_json))
        doc_zlib.append(len(zlib.compress(as_json, 1)))
        outbox_bytes.append(int(outbox_len))
        name = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
        encodings[name] = encodings.get(name, 0) + 1
        for field, value in profile.items():
            parts.setdefault(field, []).append(len(orjson.dumps(value)) + len(field) + 4)
    await client.flushdb()
    delta = after - before
    return {
        "customers": args.memory_customers,
        "customers_stored": len(keys),
        "events": events,
        "write_seconds": round(seconds, 1),
        "write_events_per_s": round(events / seconds, 1),
        "jobs": jobs,
        "customers_per_batch_mean": round(statistics.fmean(
            s["customers_per_batch"] for s in shards), 1),
        "events_per_customer": _describe(per_customer) | {"p5": _percentile(per_customer, 0.05)},
        "used_memory_before": before,
        "used_memory_after": after,
        "bytes_per_customer": round(delta / len(keys), 1),
        "goal_bytes_per_customer": GOAL_BYTES_PER_CUSTOMER,
        "within_goal": delta / len(keys) <= GOAL_BYTES_PER_CUSTOMER,
        "sample": len(sample),
        "memory_usage": _describe(usage),
        "memory_usage_by_history": {
            label: {"customers": len(v)} | (_describe(v) if v else {})
            for label, v in by_history.items()
        },
        "doc_bytes": _describe(doc_bytes),  # as stored (compressed or not)
        "doc_json_bytes": _describe(doc_json),  # the profile as plain JSON
        "outbox_bytes": _describe(outbox_bytes),
        "doc_zlib1_bytes": _describe(doc_zlib),  # the JSON compressed with zlib level 1
        "outbox_records_mean": {t: round(n / len(sample), 2) for t, n in outbox_records.items()},
        "hash_overhead_bytes_mean": round(statistics.fmean(usage) - statistics.fmean(doc_bytes)
                                          - statistics.fmean(outbox_bytes), 1),
        "hash_encodings": encodings,
        "profile_parts_mean_bytes": {
            f: round(sum(v) / len(sample), 1)
            for f, v in sorted(parts.items(), key=lambda kv: -sum(kv[1]))
        },
    }


# -- report ---------------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    st, rc = report["settings"], report["redis_config"]
    lines = [f"streamproc state bench, {report['date']}: {m['cpu']}, {m['cores']} cores, "
             f"{m['ram_gb']} GB; Python {m['python']}; Redis {m['redis']}",
             f"dedupe window {st['dedupe_window']}, state compression {st['state_compression']}, "
             f"batch {st['batch']}; Redis hash-max-listpack-value "
             f"{rc.get('hash-max-listpack-value', '?')}"]
    t = report.get("throughput")
    if t:
        lines += [
            "",
            f"(a) state-update throughput: {t['events']:,} events of {t['active_customers']:,} "
            f"customers ({t['customers_per_batch_mean']:,.0f} distinct customers in a batch of "
            f"{t['batch']} on average)",
            f"{'path':<30} {'batch':>5} {'events/s':>10} {'us/event':>9} {'round trips':>12} "
            f"{'vs Redis x1':>11}",
        ]
        one_by_one = t["paths"][4]["events_per_s"]
        for p in t["paths"]:
            batch = p["batch"] or "-"
            trips = p["round_trips"] or "-"
            lines.append(f"{p['path']:<30} {batch!s:>5} {p['events_per_s']:>10,.0f} "
                         f"{p['us_per_event']:>9.1f} {trips!s:>12} "
                         f"{p['events_per_s'] / one_by_one:>10.1f}x")
        lines.append(
            f"batched vs one round trip per event (Redis): {t['batched_vs_one_by_one']:.1f}x; "
            f"Redis share of the time: {t['redis_share_batched']:.0%} batched, "
            f"{t['redis_share_one_by_one']:.0%} one by one; decoding alone: "
            f"{t['decode_share_batched']:.0%} of the batched time")
        if t.get("profile"):
            lines.append("where the time goes (batched, Redis; cProfile own time):")
            for group, g in t["profile"]["groups"].items():
                lines.append(f"  {g['share']:>5.0%}  {group}")
    mem = report.get("memory")
    if mem:
        e = mem["events_per_customer"]
        verdict = "within" if mem["within_goal"] else "OVER"
        lines += [
            "",
            f"(b) Redis memory: {mem['customers_stored']:,} customers, {mem['events']:,} events "
            f"(per customer mean {e['mean']}, p5 {e['p5']}, p50 {e['p50']}, p95 {e['p95']}), "
            f"written at {mem['write_events_per_s']:,.0f}/s with {mem['jobs']} processes "
            f"({mem['customers_per_batch_mean']:,.0f} distinct customers per batch)",
            f"used_memory delta per customer: {mem['bytes_per_customer']:,.0f} B "
            f"({verdict} the goal of {mem['goal_bytes_per_customer']:,} B)",
            f"{'per key (sample of ' + format(mem['sample'], ',') + ')':<34} {'mean':>8} "
            f"{'p50':>8} {'p95':>8} {'max':>8}",
        ]
        for label, key in (("MEMORY USAGE (bytes)", "memory_usage"),
                           ("doc as stored (bytes)", "doc_bytes"),
                           ("doc as JSON (bytes)", "doc_json_bytes"),
                           ("doc JSON, zlib level 1 (bytes)", "doc_zlib1_bytes"),
                           ("outbox (bytes)", "outbox_bytes")):
            d = mem[key]
            lines.append(f"{label:<34} {d['mean']:>8,.0f} {d['p50']:>8,} {d['p95']:>8,} "
                         f"{d['max']:>8,}")
        by = mem["memory_usage_by_history"]
        lines.append("MEMORY USAGE mean by events per customer: " + ", ".join(
            f"{label}: {d['mean']:,.0f} B ({d['customers']:,})" if d["customers"] else
            f"{label}: -" for label, d in by.items()))
        parts = ", ".join(f"{k} {v:,.0f}" for k, v in
                          itertools.islice(mem["profile_parts_mean_bytes"].items(), 8))
        lines.append(f"largest profile parts (mean JSON bytes): {parts}")
        lines.append(f"outbox records per customer (mean, by topic): {mem['outbox_records_mean']}; "
                     f"key and hash overhead beyond doc + outbox: "
                     f"{mem['hash_overhead_bytes_mean']:,.0f} B; hash encodings: "
                     f"{mem['hash_encodings']}")
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.state_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=50_000,
                   help="simulated customers for the throughput part (default: 50000: most "
                   "customers in a batch are distinct, as in production)")
    p.add_argument("--events", type=int, default=50_000,
                   help="events for the throughput part (default: 50000)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size of the batched paths (default: STREAMPROC_BATCH_SIZE, 500)")
    p.add_argument("--memory-customers", type=int, default=100_000,
                   help="customers for the memory part (default: 100000)")
    p.add_argument("--history", type=int, default=30,
                   help="mean events per customer in the memory part (default: 30)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="processes writing the memory part (default: the CPU count)")
    p.add_argument("--sample", type=int, default=2000,
                   help="customer keys sampled with MEMORY USAGE (default: 2000)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--profile", metavar="FILE",
                   help="also profile one batched Redis run with cProfile, stats to FILE")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL,
                   help=f"a spare Redis database, flushed (default: {DEFAULT_REDIS_URL})")
    p.add_argument("--force", action="store_true",
                   help="flush the database even if it holds keys streamproc did not write")
    p.add_argument("--json", metavar="FILE", help="write the figures to FILE as JSON")
    return p.parse_args(argv)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    # Simulated clocks run ahead: no bound on future event times.
    settings = dataclasses.replace(Settings.from_env(), redis_url=args.redis_url,
                                   max_future_skew_s=0)
    if args.batch is None:
        args.batch = settings.batch_size
    # Commands packed as a worker packs them (RedisStore.from_settings): hiredis, not redis-py;
    # a cluster client for a redis+cluster:// URL (database 0, the whole cluster flushed).
    client = with_hiredis_packing(redis_client(settings, decode_responses=False))
    try:
        await check_database(client, args.redis_url, args.force)
        info = await client.info("server") | await client.info("memory")
        config = await client.config_get("hash-max-listpack-*")
        report: dict[str, Any] = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": machine(info),
            "settings": {"batch": args.batch, "dedupe_window": settings.dedupe_window,
                         "state_compression": getattr(settings, "state_compression", "none"),
                         "partitions": settings.partitions, "seed": args.seed},
            "redis_config": {k.decode() if isinstance(k, bytes) else k:
                             v.decode() if isinstance(v, bytes) else v
                             for k, v in config.items()},
        }
        began = time.perf_counter()
        if not args.skip_throughput:
            report["throughput"] = await throughput(args, settings, client)
        if not args.skip_memory:
            report["memory"] = await memory(args, settings, client)
        report["seconds"] = round(time.perf_counter() - began, 1)
        await client.flushdb()
        return report
    finally:
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(amain(args))
    print(render(report))
    print(f"\n(the whole bench took {report['seconds']:.0f}s)")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        log(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
