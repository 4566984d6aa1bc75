"""Versioned, signed model snapshots: pickle inside, HMAC-SHA256 outside.

Models are River objects, which pickle and nothing else serialises whole. Unpickling runs
code chosen by whoever wrote the bytes, so a snapshot is only unpickled after its signature
has been checked with the shared secret (``STREAMPROC_MODEL_SECRET``, read by the settings
and passed in here): bytes that do not carry a valid signature are never given to pickle.

Layout (big-endian)::

    magic "SPMS" | format u16 | model version u64 | created ms u64 | payload length u64
    | HMAC-SHA256(secret, header + payload) (32 bytes) | payload (pickle)

>>> blob = dump({"w": 1.5}, b"s3cret-key", version=7, created_ms=0)
>>> load(blob, b"s3cret-key")
(7, {'w': 1.5})
>>> try:
...     load(blob, b"another-key")
... except SnapshotError as exc:
...     print(exc)  # doctest: +ELLIPSIS
snapshot signature does not match: wrong STREAMPROC_MODEL_SECRET or tampered data; ...
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import struct
import time
from typing import Any, NamedTuple

from streamproc.errors import StreamprocError

MAGIC = b"SPMS"
FORMAT = 1
_HEADER = struct.Struct(">4sHQQQ")
_TAG_BYTES = hashlib.sha256().digest_size


class SnapshotError(StreamprocError):
    """A model snapshot cannot be written or trusted: bad secret, signature, size or format."""


class SnapshotHeader(NamedTuple):
    format: int
    version: int
    created_ms: int
    payload_bytes: int


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes | bytearray) or not secret:
        raise SnapshotError(
            "the model snapshot secret is empty: set STREAMPROC_MODEL_SECRET (a long random "
            "value, the same on every worker)"
        )


def _sign(secret: bytes, header: bytes, payload: bytes) -> bytes:
    mac = hmac.new(secret, header, hashlib.sha256)
    mac.update(payload)
    return mac.digest()


def dump(obj: Any, secret: bytes, version: int, created_ms: int | None = None) -> bytes:
    """``obj`` pickled, with a header and the signature (see the module docstring)."""
    _check_secret(secret)
    if not 0 <= version < 2**64:
        raise SnapshotError(f"model version must be 0 to 2**64 - 1, got {version}")
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    created = int(time.time() * 1000) if created_ms is None else created_ms
    header = _HEADER.pack(MAGIC, FORMAT, version, created, len(payload))
    return header + _sign(secret, header, payload) + payload


def verify(blob: bytes, secret: bytes) -> tuple[SnapshotHeader, bytes]:
    """The header and the payload of a snapshot whose signature is valid; else SnapshotError."""
    _check_secret(secret)
    fixed = _HEADER.size + _TAG_BYTES
    if len(blob) < fixed:
        raise SnapshotError(f"not a model snapshot: {len(blob)} bytes, shorter than a header")
    header = bytes(blob[: _HEADER.size])
    magic, fmt, version, created, size = _HEADER.unpack(header)
    if magic != MAGIC:
        raise SnapshotError(f"not a model snapshot: starts with {magic!r}, expected {MAGIC!r}")
    if fmt != FORMAT:
        raise SnapshotError(f"model snapshot format {fmt} is not supported (expected {FORMAT})")
    if len(blob) != fixed + size:
        raise SnapshotError(
            f"model snapshot is truncated or padded: {len(blob)} bytes, expected {fixed + size}; "
            "refusing to load it"
        )
    tag, payload = bytes(blob[_HEADER.size : fixed]), bytes(blob[fixed:])
    if not hmac.compare_digest(tag, _sign(secret, header, payload)):
        raise SnapshotError(
            "snapshot signature does not match: wrong STREAMPROC_MODEL_SECRET or tampered "
            "data; refusing to load it"
        )
    return SnapshotHeader(fmt, version, created, size), payload


def load(blob: bytes, secret: bytes) -> tuple[int, Any]:
    """``(model version, object)`` of a snapshot, unpickled only after its signature checks."""
    header, payload = verify(blob, secret)
    try:
        obj = pickle.loads(payload)
    except Exception as exc:  # signed but unreadable: e.g. written by an incompatible version
        raise SnapshotError(f"model snapshot v{header.version} is signed but cannot be "
                            f"unpickled: {exc}") from exc
    return header.version, obj
