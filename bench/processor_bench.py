"""The processor alone in memory: CPU microseconds per event on the simulator's stream.

    .venv/bin/python -m bench.processor_bench [--events N] [--customers N] [--rounds N]
                                              [--no-skip] [--profile FILE]

The worker's ``Processor`` (built as ``bench.state_bench`` builds it: segmenter and scorer,
the default catalogue) with a ``MemoryStore``, fed the simulated events (seed 7) as a worker
receives them, in batches of ``--batch`` (500). No Kafka, no Redis: what is left is the
processor's own Python. Each round runs on a fresh store after a warm-up and reports CPU time
(``time.process_time``) per event; the line printed last is the median of the rounds.
``--no-skip`` runs every segmentation, feature set and trigger on every event
(``STREAMPROC_SKIP_UNCHANGED=off``), for comparison. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import itertools
import pstats
import statistics
import sys
import time
from collections.abc import Sequence

from bench.state_bench import START, make_processor, raw_messages
from streamproc.benchmark.profiling import summarise_profile
from streamproc.events.codec import RawMessage
from streamproc.processor import Processor
from streamproc.settings import Settings
from streamproc.simulator import Population, generate_events
from streamproc.state.memory import MemoryStore


async def one_round(settings: Settings, messages: Sequence[RawMessage], batch: int) -> float:
    """CPU seconds the processor took for ``messages`` on a fresh in-memory store."""
    return await timed_batches(make_processor(settings, MemoryStore()), messages, batch)


async def timed_batches(processor: Processor, messages: Sequence[RawMessage],
                        batch: int) -> float:
    """CPU seconds ``processor`` took for ``messages``, processed and settled ``batch`` at a
    time, as the worker does."""
    started = time.process_time()
    for i in range(0, len(messages), batch):
        result = await processor.process(messages[i:i + batch])
        await processor.settle(result)
    return time.process_time() - started


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-skip", action="store_true",
                        help="run every hook on every event (STREAMPROC_SKIP_UNCHANGED=off)")
    parser.add_argument("--alternate", action="store_true",
                        help="rounds with skipping on and off in turn, and their ratio")
    parser.add_argument("--profile", metavar="FILE", help="one more round under cProfile")
    parser.add_argument("--profile-top", type=int, default=25)
    return parser.parse_args(argv)


async def amain(args: argparse.Namespace) -> list[float]:
    settings = dataclasses.replace(Settings(consent_defaults="personalisation=granted"),
                                   max_future_skew_s=0)
    if args.no_skip:
        settings = dataclasses.replace(settings, skip_unchanged=False)
    population = Population.generate(args.customers, seed=args.seed)
    events = list(itertools.islice(generate_events(population, START, seed=args.seed),
                                   args.events))
    messages = list(raw_messages(settings, events, {}))
    await one_round(settings, messages[:2000], args.batch)  # warm-up: schemas, imports
    per_event = []
    if args.alternate:
        pairs = []
        for _ in range(args.rounds):
            on, off = [await one_round(dataclasses.replace(settings, skip_unchanged=skip),
                                       messages, args.batch) / len(messages) * 1e6
                       for skip in (True, False)]
            pairs.append((on, off))
            print(f"round: skipping {on:.1f}, everything {off:.1f} us per event, "
                  f"ratio {on / off:.3f}", file=sys.stderr, flush=True)
        print(f"alternated: skipping {statistics.median(p[0] for p in pairs):.1f}, everything "
              f"{statistics.median(p[1] for p in pairs):.1f} us per event; ratio per round "
              f"{', '.join(f'{p[0] / p[1]:.3f}' for p in pairs)}")
        per_event = [p[0] for p in pairs]
    for _ in range(0 if args.alternate else args.rounds):
        seconds = await one_round(settings, messages, args.batch)
        per_event.append(seconds / len(messages) * 1e6)
        print(f"round: {per_event[-1]:.1f} us per event", file=sys.stderr, flush=True)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await one_round(settings, messages, args.batch)
        profiler.disable()
        profiler.dump_stats(args.profile)
        summary = summarise_profile(pstats.Stats(profiler), args.profile_top)
        for group, figures in summary["groups"].items():
            print(f"{figures['share'] * 100:5.1f} %  {group}")
        for f in summary["top_functions"]:
            print(f"{f['tottime_s']:8.3f} s own {f['cumtime_s']:8.3f} s cum  {f['calls']:>8}  "
                  f"{f['function']}")
    return per_event


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    per_event = asyncio.run(amain(args))
    print(f"processor in memory: {statistics.median(per_event):.1f} us per event "
          f"(median of {len(per_event)}: {', '.join(f'{v:.1f}' for v in per_event)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
