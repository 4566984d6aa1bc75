"""The zstd dictionary of stored profiles and outboxes, and how it was made.

A profile document is a couple of kilobytes of JSON whose keys and most of whose values
(segment names, event types, topic names, feature names) every customer shares. A general
purpose compressor has to learn them again from each small document; a zstd dictionary trained
on simulated profiles and outboxes knows them beforehand, so a document compresses to about a
third of what zlib gives, about ten times faster (docs/benchmarks.md).

A dictionary is part of the stored format: every zstd frame names the id of the dictionary it
was made with, and a document can only be read with that dictionary. So a shipped dictionary
file never changes. A better one is added beside it with a new id (``DICTIONARIES``), new
writes use the newest (``CURRENT``), and the old one stays for reading what it wrote.

Regenerate a candidate (a new file, never over an existing one)::

    python -m streamproc.state.zdict --out streamproc/state/profiles-2.zdict --dict-id 2
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import random
import sys
import time
import zlib
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import zstandard

# zstd reserves dictionary ids below 32768 for a registry, so ours start above it.
ID_BASE = 0x5350_0000  # "SP"
DICTIONARIES: dict[int, str] = {ID_BASE + 1: "profiles-1.zdict"}
CURRENT = ID_BASE + 1
LEVEL = 3
DICT_BYTES = 16_384


@cache
def dictionary(dict_id: int) -> zstandard.ZstdCompressionDict:
    """The shipped dictionary with this id (KeyError: a document written by a newer version)."""
    data = Path(__file__).with_name(DICTIONARIES[dict_id]).read_bytes()
    found = zstandard.ZstdCompressionDict(data)
    if found.dict_id() != dict_id:
        raise ValueError(f"{DICTIONARIES[dict_id]} holds dictionary {found.dict_id()}, "
                         f"not {dict_id}")
    return found


@cache
def compressor() -> zstandard.ZstdCompressor:
    """One compression context per process, reused (creating one costs more than using it)."""
    return zstandard.ZstdCompressor(level=LEVEL, dict_data=dictionary(CURRENT),
                                    write_checksum=False, write_content_size=True)


@cache
def decompressor(dict_id: int) -> zstandard.ZstdDecompressor:
    return zstandard.ZstdDecompressor(dict_data=dictionary(dict_id) if dict_id else None)


def compress(raw: bytes) -> bytes:
    """
    >>> blob = compress(b'{"customer_id": "c1", "segments": {}}')
    >>> blob[:4] == b"\\x28\\xb5\\x2f\\xfd", decompress(blob)
    (True, b'{"customer_id": "c1", "segments": {}}')
    """
    return compressor().compress(raw)


def decompress(blob: bytes) -> bytes:
    dict_id = zstandard.get_frame_parameters(blob).dict_id
    try:
        return decompressor(dict_id).decompress(blob)
    except KeyError:
        raise ValueError(f"stored with the zstd dictionary {dict_id}, which this version of "
                         "streamproc does not have (written by a newer version?)") from None


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
    from streamproc.intent import IntentScorer
    from streamproc.learner import Learner
    from streamproc.observations import pack_batch
    from streamproc.processor import Processor, default_engine
    from streamproc.segmentation import Segmenter
    from streamproc.settings import Settings
    from streamproc.state.store import MemoryStore, Write

    settings = Settings(state_compression="none")
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
        partition = zlib.crc32(key) % settings.partitions
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
    p = argparse.ArgumentParser(prog="python -m streamproc.state.zdict",
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
