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

A candidate is trained by the benchmarks (a new file, never over an existing one)::

    python -m bench.profile_dictionary --out streamproc/state/profiles-2.zdict --dict-id 2
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import zstandard

# zstd reserves dictionary ids below 32768 for a registry, so ours start above it.
ID_BASE = 0x5350_0000  # "SP"
DICTIONARIES: dict[int, str] = {ID_BASE + 1: "profiles-1.zdict", ID_BASE + 2: "profiles-2.zdict"}
CURRENT = ID_BASE + 2
# Level 1 with profiles-2 (trained on today's documents and outboxes, learning observations
# included): a write's document and outbox compress in about 14 µs against 20 at level 3 with
# profiles-1, to about 1,220 B against 1,370 (docs/benchmarks.md, "The worker's cost outside
# the processor"). Level 3 saves about 3 % of the bytes for about 40 % more time.
LEVEL = 1
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
