"""How a profile document is stored: JSON, zlib-compressed JSON by default.

Compression takes a typical profile from about 2.5 KB to under 1 KB (docs/benchmarks.md) for
some tens of microseconds per customer and batch. Reading needs no setting: a stored document
that starts with ``{`` is plain JSON, anything else is zlib, so changing
``STREAMPROC_STATE_COMPRESSION`` never makes stored profiles unreadable.

>>> unpack_doc(pack_doc({"a": 1}, "zlib")), unpack_doc(pack_doc({"a": 1}, "none"))
({'a': 1}, {'a': 1})

The customer's outbox (the records of its last batch, published again if the batch is
redelivered) is stored the same way: a list, plain JSON when it starts with ``[``.

>>> unpack_outbox(pack_outbox([{"topic": "segments"}], "zlib")), pack_outbox([], "zlib")
([{'topic': 'segments'}], b'[]')
>>> unpack_outbox(b'[{"topic": "decisions"}]')  # written uncompressed, or by older versions
[{'topic': 'decisions'}]
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

# Level 1: nearly the ratio of the default level at half the time on these small documents.
ZLIB_LEVEL = 1


def pack_doc(doc: dict[str, Any], compression: str) -> bytes:
    raw = orjson.dumps(doc)
    return zlib.compress(raw, ZLIB_LEVEL) if compression == "zlib" else bytes(raw)


def unpack_doc(blob: bytes) -> dict[str, Any]:
    raw = blob if blob[:1] == b"{" else zlib.decompress(blob)
    doc: dict[str, Any] = orjson.loads(raw)
    return doc


def pack_outbox(outputs: list[dict[str, Any]], compression: str) -> bytes:
    if not outputs:
        return b"[]"  # most customers' last batch published nothing: not worth compressing
    raw = orjson.dumps(outputs)
    return zlib.compress(raw, ZLIB_LEVEL) if compression == "zlib" else bytes(raw)


def unpack_outbox(blob: bytes | None) -> list[dict[str, Any]]:
    if not blob:
        return []
    raw = blob if blob[:1] == b"[" else zlib.decompress(blob)
    outputs: list[dict[str, Any]] = orjson.loads(raw)
    return outputs
