"""KPI counting benchmark: what counting costs the worker per event, and Redis memory per day.

    .venv/bin/python -m bench.kpis_bench [--events N] [--customers N] [--rounds N]

Simulated events (fixed seed) go, in batches, through the worker's ``Processor`` in memory
(``MemoryStore``, segmenter included), built two ways and timed in alternated rounds: with the
KPI counter (the default) and with a counter that counts nothing. Printed: µs (CPU time) per event
of each (the best round), the difference, the increments carried per write, and the stored
profile's size with and without its KPI section. Then every day hash the run produced is
written to Redis (``--redis-url``: ``STREAMPROC_REDIS_URL``'s server, database 11, refused
when it holds keys of others; key ``sp:bench:kpi-day:N``, deleted after) and its
``MEMORY USAGE`` printed with its field count. Figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import platform
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis

from bench.learner_bench import messages
from streamproc.decisions.kpis import KpiCounter, Tally
from streamproc.events.codec import RawMessage
from streamproc.processor import Processor
from streamproc.segments.segmenter import Segmenter
from streamproc.settings import Settings
from streamproc.state.document import unpack_doc
from streamproc.state.memory import MemoryStore
from streamproc.state.profile import Profile


class TimedCounting(KpiCounter):
    """The real counter, timing its own calls (CPU time): the direct cost, whatever the load."""

    spent = 0.0

    def count(self, p: Profile, event_type: str, ts_ms: int, data: Mapping[str, Any],
              records: Sequence[Mapping[str, Any]], tally: Tally) -> None:
        began = time.process_time()
        super().count(p, event_type, ts_ms, data, records, tally)
        TimedCounting.spent += time.process_time() - began

    def count_decisions(self, p: Profile, records: Sequence[Mapping[str, Any]], ts_ms: int,
                        tally: Tally) -> None:
        began = time.process_time()
        super().count_decisions(p, records, ts_ms, tally)
        TimedCounting.spent += time.process_time() - began


class NoCounting(KpiCounter):
    def count(self, p: Profile, event_type: str, ts_ms: int, data: Mapping[str, Any],
              records: Sequence[Mapping[str, Any]], tally: Tally) -> None:
        return None

    def count_decisions(self, p: Profile, records: Sequence[Mapping[str, Any]], ts_ms: int,
                        tally: Tally) -> None:
        return None


async def run(settings: Settings, msgs: list[RawMessage], size: int, counting: bool | None
              ) -> tuple[float, MemoryStore]:
    """CPU seconds the processor takes: with the counter (True), without (False), with the
    counter timing itself (None)."""
    store = MemoryStore()
    proc = Processor(settings, store, segmenter=Segmenter(settings))
    if counting is None:
        proc.kpis = TimedCounting(settings.app_id, settings.attribution_hours * 3_600_000)
    elif not counting:
        proc.kpis = NoCounting(settings.app_id, 3_600_000)
    began = time.process_time()
    for i in range(0, len(msgs), size):
        await proc.process(msgs[i:i + size])
    return time.process_time() - began, store


async def day_memory(url: str, days: dict[str, dict[str, int]]
                     ) -> list[tuple[str, int, int]]:
    client = aioredis.from_url(url)
    out = []
    try:
        others = [k async for k in client.scan_iter(count=100)
                  if not k.startswith(b"sp:bench:kpi-day:")]
        if others:
            raise SystemExit(f"{url} holds keys this benchmark did not write (e.g. "
                             f"{others[0]!r}): give it an empty database with --redis-url")
        for i, (key, fields) in enumerate(sorted(days.items())):
            scratch = f"sp:bench:kpi-day:{i}"
            await client.delete(scratch)
            await client.hset(scratch, mapping=fields)  # type: ignore[arg-type]
            used = int(await client.memory_usage(scratch, samples=0) or 0)
            await client.delete(scratch)
            out.append((key.rsplit(":", 1)[1], len(fields), used))
    finally:
        await client.aclose()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.kpis_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--customers", type=int, default=500)
    p.add_argument("--batch", type=int, default=200, help="events per batch (200)")
    p.add_argument("--rounds", type=int, default=5, help="alternated rounds of each (5)")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--no-redis", action="store_true", help="skip the memory per day")
    p.add_argument("--redis-url", help="where to measure the memory per day (default: "
                   "STREAMPROC_REDIS_URL's server, database 11)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    # Simulated clocks run ahead: no bound on future event times.
    settings = dataclasses.replace(Settings.from_env(), max_future_skew_s=0)
    msgs = messages(Settings(partitions=1), args.events, args.customers, args.seed)
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()} "
          f"({sys.executable}); {len(msgs):,} events of {args.customers:,} customers",
          file=sys.stderr)
    timings: dict[bool, list[float]] = {True: [], False: []}
    stores: dict[bool, MemoryStore] = {}
    for _ in range(args.rounds):
        for counting in (False, True):
            took, stores[counting] = asyncio.run(run(settings, msgs, args.batch, counting))
            timings[counting].append(took)
    n = len(msgs)
    off, on = min(timings[False]) / n * 1e6, min(timings[True]) / n * 1e6
    print(f"| processor without KPI counting | {off:.1f} µs/event | rounds "
          f"{', '.join(f'{t / n * 1e6:.1f}' for t in timings[False])} |")
    print(f"| processor with KPI counting | {on:.1f} µs/event | rounds "
          f"{', '.join(f'{t / n * 1e6:.1f}' for t in timings[True])} |")
    print(f"| KPI counting | {on - off:+.1f} µs/event ({(on / off - 1) * 100:+.1f} %) | "
          f"median of rounds {statistics.median(timings[True]) / n * 1e6 - statistics.median(timings[False]) / n * 1e6:+.1f} µs |")  # noqa: E501
    asyncio.run(run(settings, msgs, args.batch, None))
    print(f"| the counter's own calls | {TimedCounting.spent / n * 1e6:.1f} µs/event (CPU) | "
          f"of {n:,} events |")
    for counting in (False, True):
        rows = [row for row in stores[counting].rows.values() if row.doc]
        print(f"stored profile {'with' if counting else 'without'} KPI counting: "
              f"{statistics.mean(len(row.doc) for row in rows):,.0f} bytes on average")
    store = stores[True]
    docs = [unpack_doc(row.doc) for row in store.rows.values() if row.doc]
    kpi_bytes = [len(orjson.dumps(d.get("kpi", {}))) for d in docs]
    whole = [len(orjson.dumps(d)) for d in docs]
    packed = statistics.mean(len(row.doc) for row in store.rows.values() if row.doc)
    print(f"profile JSON {statistics.mean(whole):,.0f} bytes on average, of which the KPI "
          f"section {statistics.mean(kpi_bytes):,.0f} (max {max(kpi_bytes):,}); stored "
          f"(compressed) {packed:,.0f} bytes")
    days = {k: v for k, v in store.kpis.items() if ":day:" in k}
    cohorts = {k: v for k, v in store.kpis.items() if ":cohort:" in k}
    print(f"{len(days)} day hashes, {len(cohorts)} cohort hashes; fields per day: "
          f"{', '.join(str(len(v)) for _, v in sorted(days.items()))}")
    if not args.no_redis:
        url = args.redis_url or urlunsplit(urlsplit(settings.redis_url)._replace(path="/11"))
        for day, fields, used in asyncio.run(day_memory(url, days)):
            print(f"| {day} | {fields:,} fields | {used / 1024:,.0f} KiB in Redis "
                  f"({used / max(fields, 1):.0f} bytes a field) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
