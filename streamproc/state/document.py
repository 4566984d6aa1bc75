"""How a profile document is stored: JSON, compressed by default (zstd with a dictionary).

``STREAMPROC_STATE_COMPRESSION`` chooses how documents are written: ``zstd`` (the default:
zstd with the newest profile dictionary of :mod:`streamproc.state.zdict`; about 630 B for a
simulated customer's 2.5 KB profile, a few microseconds each way), ``zlib`` (level 1: about
1,150 B, slower) or ``none``. Reading needs no setting: a stored document that starts with ``{`` is
plain JSON, one that starts with zstd's frame magic is zstd (with the dictionary the frame
names), anything else zlib, so changing the setting never makes stored profiles unreadable.

>>> [unpack_doc(pack_doc({"a": 1}, c)) for c in ("zstd", "zlib", "none")]
[{'a': 1}, {'a': 1}, {'a': 1}]

The customer's outbox (the records of its last batch, published again if the batch is
redelivered) is stored the same way: a list, plain JSON when it starts with ``[``.

>>> unpack_outbox(pack_outbox([{"topic": "segments"}], "zstd")), pack_outbox([], "zstd")
([{'topic': 'segments'}], b'[]')
>>> unpack_outbox(b'[{"topic": "decisions"}]')  # written uncompressed, or by older versions
[{'topic': 'decisions'}]
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import orjson

from streamproc.state import zdict

# Level 1: nearly the ratio of the default level at half the time on these small documents.
ZLIB_LEVEL = 1
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
COMPRESSIONS = ("zstd", "zlib", "none")


def _compress(raw: bytes, compression: str) -> bytes:
    if compression == "zstd":
        return zdict.compress(raw)
    return zlib.compress(raw, ZLIB_LEVEL) if compression == "zlib" else bytes(raw)


def _decompress(blob: bytes) -> bytes:
    return zdict.decompress(blob) if blob[:4] == ZSTD_MAGIC else zlib.decompress(blob)


def pack_doc(doc: Mapping[str, Any], compression: str) -> bytes:
    return _compress(orjson.dumps(doc), compression)


def unpack_doc(blob: bytes) -> dict[str, Any]:
    raw = blob if blob[:1] == b"{" else _decompress(blob)
    doc: dict[str, Any] = orjson.loads(raw)
    return doc


def pack_outbox(outputs: list[dict[str, Any]], compression: str) -> bytes:
    if not outputs:
        return b"[]"  # most customers' last batch published nothing: not worth compressing
    return _compress(orjson.dumps(outputs), compression)


def unpack_outbox(blob: bytes | None) -> list[dict[str, Any]]:
    if not blob:
        return []
    raw = blob if blob[:1] == b"[" else _decompress(blob)
    outputs: list[dict[str, Any]] = orjson.loads(raw)
    return outputs
