"""The suppression record an erasure leaves, so that the customer's earlier events read later
(a redelivered batch, a producer's retry, a replay or backfill of old events) do not build the
profile again.

The record is one Redis string per erased customer, ``sp:erased:<token>`` (on Redis Cluster
``sp:erased:{<slot tag>}:<token>``, in the customer's slot) holding the erasure's
time (epoch ms), expiring ``STREAMPROC_ERASURE_SUPPRESS_DAYS`` after it was written. The token
is a keyed hash (BLAKE2b, 128 bits) of the customer id, so the record does not hold the id in
clear: the key (``sp:erasure:key``, 32 random bytes made by the first erasure) lives in the same
Redis, so someone who can read that Redis can still test whether a given id was erased lately,
as they could read every profile; a copy of the suppression keys alone tells nothing.

The rule (:func:`suppressed`): an event is suppressed when its own time (``ts``) or its Kafka
record's timestamp is at or before the erasure: it happened, or was sent, before the customer
asked to be forgotten. Event time alone would let a redelivered record dated a little after the
erasure request (clocks differ) through; the record's timestamp alone would let old events
re-produced after the erasure (a backfill) through. An event newer on both counts (the customer
came back, and consents again) is profiled as any.

>>> suppressed(1_000, 999, 2_000), suppressed(1_000, 2_000, 999), suppressed(1_000, 2_000, 2_000)
(True, True, False)
>>> suppressed(0, 5, 5)  # no erasure recorded
False
"""

from __future__ import annotations

import hashlib
import secrets


def erasure_token(key: bytes, customer_id: str) -> str:
    """The pseudonym of ``customer_id`` in its suppression record's key.

    >>> erasure_token(b"k" * 32, "cust-42")
    'fbefddfdf8dc4dcf256bc131ad5b32c9'
    """
    return hashlib.blake2b(customer_id.encode(), key=key, digest_size=16).hexdigest()


def new_erasure_key() -> bytes:
    return secrets.token_bytes(32)


def suppressed(erased_ms: int, ts_ms: int, record_ms: int | None) -> bool:
    """Whether an event of a customer erased at ``erased_ms`` (0: not erased, or the record
    expired) is suppressed: its event time ``ts_ms`` or its Kafka record's timestamp
    ``record_ms`` (None or negative: unknown) is at or before the erasure."""
    if erased_ms <= 0:
        return False
    return ts_ms <= erased_ms or (record_ms is not None and 0 <= record_ms <= erased_ms)
