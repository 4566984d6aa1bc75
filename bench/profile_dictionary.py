"""Train a candidate zstd dictionary for stored profiles and outboxes (``streamproc.state.zdict``).

    .venv/bin/python -m bench.profile_dictionary --out streamproc/state/profiles-2.zdict --dict-id 2

It drives a worker's processor (segmenter, scorer, learner, engine, as the worker wires them)
over simulated events with an in-memory store, samples one write in ``--every``, and trains a
dictionary of ``DICT_BYTES`` on them. A shipped dictionary never changes: the new file gets a new
id, is added to ``zdict.DICTIONARIES`` and made ``zdict.CURRENT``; the old one stays for reading.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import zstandard

from streamproc.state.zdict import DICT_BYTES, ID_BASE, LEVEL


def train(samples: Sequence[bytes], dict_id: int, size: int = DICT_BYTES) -> bytes:
    """A dictionary of ``size`` bytes from samples of stored JSON (documents and outboxes)."""
    trained = zstandard.train_dictionary(size, list(samples), dict_id=dict_id, level=LEVEL)
    return trained.as_bytes()


async def simulated_samples(customers: int, events: int, seed: int,
                            every: int) -> list[bytes]:
    """JSON of the documents and non-empty outboxes a worker writes for simulated traffic
    (batches of 100, a learner handing its models over as in a worker), one write in
    ``every``."""
    from streamproc.benchmark.run import simulated_events
    from streamproc.decisions.bandit import ThompsonChooser
    from streamproc.events.codec import RawMessage
    from streamproc.events.partitioner import partition_for
    from streamproc.learning.learner import Learner
    from streamproc.learning.observations import pack_batch
    from streamproc.learning.scorer import IntentScorer
    from streamproc.processor import Processor, default_engine
    from streamproc.segments.segmenter import Segmenter
    from streamproc.settings import Settings
    from streamproc.state.memory import MemoryStore
    from streamproc.state.store import Write

    # Simulated clocks run ahead: no bound on future event times.
    settings = Settings(state_compression="none", max_future_skew_s=0)
    samples: list[bytes] = []
    counter = itertools.count()

    class Sampling(MemoryStore):
        async def save(self, writes: Sequence[Write]) -> list[str]:
            for w in writes:
                if next(counter) % every == 0:
                    samples.append(w.doc)
                    if w.outbox != b"[]":
                        samples.append(w.outbox)
            return await super().save(writes)

    engine = default_engine(settings)
    engine.chooser = bandit = ThompsonChooser.from_settings(settings)
    scorer = IntentScorer(settings, bandit=bandit)
    learner = Learner(settings, on_publish=scorer.adopt)
    learner.active = True
    processor = Processor(settings, Sampling(), segmenter=Segmenter(settings), scorer=scorer,
                          engine=engine)
    offsets: dict[tuple[str, int], int] = {}
    batch: list[RawMessage] = []
    now_ms = time.time_ns() // 1_000_000
    for i, (logical, key, value) in enumerate(
            itertools.islice(simulated_events(customers, seed), events)):
        topic = getattr(settings.topics, logical)
        partition = partition_for(key, settings.partitions)
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        batch.append(RawMessage(topic, partition, offset, key, value, now_ms))
        if len(batch) == 100:
            result = await processor.process(batch)
            await processor.settle(result)
            learner.apply(i, pack_batch([v for _, v in result.learning]))
            await learner.checkpoint(force=i % 5000 < 100)
            batch = []
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_dictionary",
                                description="Train a zstd dictionary on simulated profiles.")
    p.add_argument("--out", type=Path, required=True, help="the new dictionary file")
    p.add_argument("--dict-id", type=int, required=True,
                   help=f"its number: the dictionary id is {ID_BASE:#x} + this")
    p.add_argument("--customers", type=int, default=20_000)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--every", type=int, default=20, help="sample one write in this many")
    args = p.parse_args(argv)
    if args.out.exists():
        sys.exit(f"{args.out} exists: a shipped dictionary never changes, write a new one")
    logging.basicConfig(level=logging.ERROR)
    samples = asyncio.run(simulated_samples(args.customers, args.events, args.seed, args.every))
    random.Random(args.seed).shuffle(samples)
    data = train(samples, ID_BASE + args.dict_id)
    args.out.write_bytes(data)
    print(f"{args.out}: dictionary {ID_BASE + args.dict_id:#x}, {len(data):,} bytes, from "
          f"{len(samples):,} samples", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
