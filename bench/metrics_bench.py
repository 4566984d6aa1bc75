"""Metrics benchmark: what the worker's Prometheus instrumentation costs per event.

    .venv/bin/python -m bench.metrics_bench [--events N] [--rounds N]

The same simulated events (``generate_events``, fixed seed) go through the worker's batch path
(``agents.handle_batch`` with the processor built as the worker builds it, batches of 500) on
the in-memory store, so the instrumentation's share is as large as it can be (with Redis each
batch costs two round trips more, and the share shrinks):

- baseline: no metrics;
- metrics: the store wrapped in ``MeteredStore`` and every batch reported to ``WorkerMetrics``
  (events per topic, batch size and time, decisions per action and arm, event-to-decision
  latency, dead letters per reason);
- the instrumentation alone: the batches of one run (messages and results) reported again to a
  fresh ``WorkerMetrics``, timed without the processing around it (steadier than the
  difference of two noisy runs);
- one scrape: rendering the registry once at the end (what Prometheus costs per scrape).

After an uncounted warm-up, the two paths alternate for ``--rounds`` rounds (each on a fresh
store) and the medians are compared, so a machine busy with other work slows both alike. The
ratio is the figure to watch; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from collections.abc import Sequence

from bench.state_bench import START, make_processor, raw_messages
from streamproc.events.codec import RawMessage
from streamproc.processor import BatchResult
from streamproc.settings import Settings
from streamproc.simulator import Population, generate_events
from streamproc.state.memory import MemoryStore
from streamproc.worker.agents import BatchStats, handle_batch
from streamproc.worker.metrics import MeteredStore, WorkerMetrics

BATCH = 500


class NullEmitter:
    async def emit(self, result: BatchResult) -> None:
        return None


class RecordingEmitter:
    def __init__(self) -> None:
        self.results: list[BatchResult] = []

    async def emit(self, result: BatchResult) -> None:
        self.results.append(result)


async def run(settings: Settings, messages: Sequence[RawMessage], instrumented: bool,
              emitter: NullEmitter | RecordingEmitter | None = None
              ) -> tuple[float, WorkerMetrics | None]:
    metrics = WorkerMetrics() if instrumented else None
    store = MemoryStore()
    processor = make_processor(settings, MeteredStore(store, metrics) if metrics else store)
    emitter, stats = emitter or NullEmitter(), BatchStats()
    started = time.perf_counter()
    for i in range(0, len(messages), BATCH):
        await handle_batch(messages[i:i + BATCH], processor, emitter, stats, metrics)
    return time.perf_counter() - started, metrics


async def amain(args: argparse.Namespace) -> int:
    # Simulated clocks run ahead: no bound on future event times.
    settings = Settings(max_future_skew_s=0)
    population = Population.generate(args.customers, seed=7)
    events = itertools.islice(generate_events(population, START, seed=7), args.events)
    messages = list(raw_messages(settings, events, {}))
    times: dict[bool, list[float]] = {False: [], True: []}
    metrics: WorkerMetrics | None = None
    for instrumented in (False, True):  # warm-up (imports, caches), not counted
        await run(settings, messages[:2 * BATCH], instrumented)
    for r in range(args.rounds):
        for instrumented in (False, True) if r % 2 == 0 else (True, False):
            seconds, found = await run(settings, messages, instrumented)
            times[instrumented].append(seconds)
            metrics = found or metrics
            print(f"round {r + 1}: {'metrics ' if instrumented else 'baseline'} "
                  f"{len(messages) / seconds:,.0f} events/s", file=sys.stderr)
    assert metrics is not None
    recorder = RecordingEmitter()
    await run(settings, messages, False, recorder)
    batches = [messages[i:i + BATCH] for i in range(0, len(messages), BATCH)]
    assert len(batches) == len(recorder.results)
    alone: list[float] = []
    for _ in range(args.rounds):
        fresh = WorkerMetrics()
        started = time.perf_counter()
        for batch, result in zip(batches, recorder.results, strict=True):
            fresh.on_published(batch, result, 0.01)
        alone.append(time.perf_counter() - started)
    alone_us = statistics.median(alone) / len(messages) * 1e6
    base_us = statistics.median(times[False]) / len(messages) * 1e6
    scrape_started = time.perf_counter()
    body = metrics.render()
    scrape_ms = (time.perf_counter() - scrape_started) * 1000
    base, with_metrics = statistics.median(times[False]), statistics.median(times[True])
    per_event_us = (with_metrics - base) / len(messages) * 1e6
    print(f"{len(messages)} events, {args.customers} customers, batches of {BATCH}, "
          f"{args.rounds} rounds (medians), in-memory store")
    print(f"baseline (no metrics)   {len(messages) / base:10,.0f} events/s")
    print(f"with metrics            {len(messages) / with_metrics:10,.0f} events/s")
    print(f"throughput ratio        {base / with_metrics:10.3f} (with metrics / baseline)")
    print(f"cost per event          {per_event_us:10.1f} us (difference of the medians)")
    print(f"instrumentation alone   {alone_us:10.2f} us per event, {alone_us / base_us:.1%} of the "
          f"baseline's {base_us:.0f} us")
    print(f"one scrape              {scrape_ms:10.2f} ms ({len(body):,} bytes)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=5)
    return asyncio.run(amain(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
