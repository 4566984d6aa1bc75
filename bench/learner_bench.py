"""Learner benchmark: the cost of scoring in the worker and of learning in the one learner.

    .venv/bin/python -m bench.learner_bench [--events N] [--customers N] [--every N]

Simulated events (fixed seed) go, in event-time order and in batches of ``--batch``, through the
worker's
``Processor`` in memory (``MemoryStore``, segmenter included), built two ways in the same run:
without a scorer (the baseline), and with the intent scorer (scoring plus observations). The
observations the scorer produced are then applied by a ``Learner`` (label joining, progressive
validation, learning), which hands its model to the scorer every ``--every`` observations as the
snapshots would. Printed: events/s of each processor path and its ratio to the baseline,
observations/s and labels/s of the learner, labels, positives and the progressive ROC AUC.
Nothing touches Redis or Kafka. Figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import platform
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson

from streamproc.events.codec import RawMessage
from streamproc.learning.learner import Learner
from streamproc.learning.modelstore import MemoryModelStore
from streamproc.learning.scorer import IntentScorer
from streamproc.processor import Processor
from streamproc.segments.segmenter import Segmenter
from streamproc.settings import Settings
from streamproc.simulator import Population, generate_events
from streamproc.state.memory import MemoryStore

START = datetime(2026, 3, 1, tzinfo=UTC)


def messages(settings: Settings, n: int, customers: int, seed: int) -> list[RawMessage]:
    population = Population.generate(customers, seed=seed)
    out = []
    for i, sim in enumerate(itertools.islice(generate_events(population, START, seed=seed), n)):
        topic = getattr(settings.topics, sim.topic)
        out.append(RawMessage(topic, 0, i, sim.event["customer_id"].encode(),
                              orjson.dumps(sim.event), 0))
    return out


def batches(msgs: list[RawMessage], size: int) -> list[list[RawMessage]]:
    return [msgs[i:i + size] for i in range(0, len(msgs), size)]


async def baseline(settings: Settings, msgs: list[RawMessage], size: int) -> float:
    """Seconds the processor without a scorer takes."""
    proc = Processor(settings, MemoryStore(), segmenter=Segmenter(settings))
    began = time.perf_counter()
    for batch in batches(msgs, size):
        await proc.process(batch)
    return time.perf_counter() - began


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.learner_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--customers", type=int, default=500)
    p.add_argument("--every", type=int, default=1000,
                   help="observations between two model hand-overs to the scorer (1,000)")
    p.add_argument("--batch", type=int, default=200, help="events per batch (200)")
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    # Simulated clocks run ahead: no bound on future event times.
    settings = Settings(partitions=1, max_future_skew_s=0)
    msgs = messages(settings, args.events, args.customers, args.seed)
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; "
          f"{len(msgs):,} events of {args.customers:,} customers", file=sys.stderr)

    base_s = asyncio.run(baseline(settings, msgs, args.batch))
    scorer = IntentScorer(settings)
    learner = Learner(settings, MemoryModelStore(), on_publish=scorer.adopt)
    learner.active = True
    # Scoring and learning interleaved (the scorer serves what the learner learnt), timed apart.
    proc = Processor(settings, MemoryStore(), segmenter=Segmenter(settings), scorer=scorer)
    score_s = learn_s = learn_cpu_s = 0.0
    n_obs = 0

    async def replay() -> None:
        nonlocal score_s, learn_s, learn_cpu_s, n_obs
        for batch in batches(msgs, args.batch):
            t0 = time.perf_counter()
            result = await proc.process(batch)
            t1, c1 = time.perf_counter(), time.process_time()
            for _, value in result.learning:
                learner.apply(n_obs, value)
                n_obs += 1
                if n_obs % args.every == 0:
                    await learner.checkpoint(force=True)
            score_s += t1 - t0
            learn_s += time.perf_counter() - t1
            learn_cpu_s += time.process_time() - c1

    asyncio.run(replay())
    model = learner.state.intent.stats()
    n = len(msgs)
    print(f"| processor, no scorer (baseline) | {n / base_s:,.0f} events/s | 1.00x |")
    print(f"| processor with the intent scorer | {n / score_s:,.0f} events/s | "
          f"{base_s / score_s:.2f}x |")
    print(f"| learner | {n_obs / learn_s:,.0f} observations/s, {model['n'] / learn_s:,.0f} "
          f"labels/s ({learn_s / n_obs * 1e6:.0f} µs per observation, snapshots included) | |")
    # On a shared machine the wall clock counts other processes' time too: the learner's CPU
    # time is its own, and with the records per event it says where the one learner tops out.
    print(f"learner CPU: {n_obs / learn_cpu_s:,.0f} observations per CPU second; "
          f"{n_obs / n:.2f} observations per event: one learner keeps up with about "
          f"{n / learn_cpu_s:,.0f} events/s of the workers")
    print(f"labels {model['n']:,} ({model['positives']:,} positive), progressive ROC AUC "
          f"{model['auc']}, log loss {model['logloss']}, drifts {model['drifts']}; learner "
          f"{learner.stats()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
