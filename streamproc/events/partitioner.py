"""Kafka's default key partitioner (murmur2), and the check that a message is where it belongs.

Every input topic is keyed by customer id so that one customer's events share one partition
and one owner. That holds only while every producer maps a key to the same partition, and not
every Kafka client does by default: Kafka's Java clients and aiokafka use murmur2
(``toPositive(Utils.murmur2(key)) % partitions``), while librdkafka (kcat, confluent-kafka and
most non-JVM clients) defaults to CRC32 and must be told ``partitioner=murmur2_random``. A
customer whose events arrive on two partitions has two owners, which race on their state.

:class:`PartitionCheck` finds such messages: the worker dead-letters them (reason
``wrong_partition``) or, while producers migrate, only counts and logs them
(``STREAMPROC_PARTITION_CHECK``).

>>> partition_for(b"cust-42", 12)
8
>>> check = PartitionCheck("deadletter", lambda topic: 12)
>>> check.expected(RawMessage("streamproc.browsing", 8, 0, b"cust-42", b"{}")) is None
True
>>> check.expected(RawMessage("streamproc.browsing", 3, 0, b"cust-42", b"{}"))
8
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable

from streamproc.events.codec import RawMessage

PARTITION_CHECK_MODES = ("deadletter", "warn", "off")

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
# Distinct keys whose hash is remembered: customer ids repeat, and a lookup costs a tenth of a
# hash (about 0.1 against 1-3 microseconds for a 10 to 40-byte id).
HASH_CACHE_SIZE = 65_536


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data`` as an unsigned 32-bit integer (Java's ``Utils.murmur2``,
    whose result is the same bits as a signed int).

    >>> murmur2(b"21"), murmur2(b"foobar")  # Java: -973932308, -790332482
    (3321034988, 3504634814)
    """
    length = len(data)
    h = _SEED ^ length
    words = length // 4
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = data[words * 4:]
    extra = len(tail)
    if extra >= 3:
        h ^= tail[2] << 16
    if extra >= 2:
        h ^= tail[1] << 8
    if extra >= 1:
        h ^= tail[0]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@functools.lru_cache(maxsize=HASH_CACHE_SIZE)
def _positive_hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partitions``:
    ``toPositive(murmur2(key)) % partitions``, as the Java clients and aiokafka compute it.

    >>> [partition_for(b"cust-42", n) for n in (1, 3, 12)]
    [0, 2, 8]
    """
    return _positive_hash(key) % partitions


class PartitionCheck:
    """Whether each message sits on its key's murmur2 partition.

    ``mode`` is ``deadletter``, ``warn`` or ``off`` (``STREAMPROC_PARTITION_CHECK``);
    ``partitions(topic)`` gives the topic's real partition count, as the consumer's metadata
    knows it, or None while unknown: a message is then not checked (a wrong count would find
    almost every message on the wrong partition). The counts are asked once per topic until
    :meth:`refresh` (the processor refreshes them before each batch).
    """

    def __init__(self, mode: str, partitions: Callable[[str], int | None]) -> None:
        if mode not in PARTITION_CHECK_MODES:
            raise ValueError(f"partition check mode {mode!r}: use deadletter, warn or off")
        self.mode = mode
        self.partitions = partitions
        self._counts: dict[str, int | None] = {}

    def refresh(self) -> None:
        """Ask the partition counts again (they change when partitions are added)."""
        self._counts.clear()

    def count(self, topic: str) -> int | None:
        """The topic's partition count (None: unknown)."""
        try:
            return self._counts[topic]
        except KeyError:
            found = self._counts[topic] = self.partitions(topic)
            return found

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def expected(self, msg: RawMessage) -> int | None:
        """The partition ``msg`` belongs on when it is not there; None when it is where it
        belongs, has no key, or its topic's partition count is unknown."""
        if msg.key is None:
            return None
        count = self.count(msg.topic)
        # A partition past the known count means the count is stale (partitions were added
        # and the metadata is not refreshed yet): nothing can be told then.
        if not count or msg.partition >= count:
            return None
        want = _positive_hash(msg.key) % count
        return None if want == msg.partition else want

    def error(self, msg: RawMessage, want: int) -> str:
        """The dead-letter (or log) text of a message found on the wrong partition."""
        count = self.count(msg.topic)
        key = msg.key.decode("utf-8", "replace")[:140] if msg.key is not None else ""
        return (f"key {key!r} belongs on partition {want} of {count} of {msg.topic} "
                f"(murmur2 of the key, as Kafka's Java clients and aiokafka partition), not "
                f"{msg.partition}: a producer hashes keys differently, so this customer's "
                "events are split between partitions and owners. librdkafka-based producers "
                "(kcat, confluent-kafka, most non-JVM clients) must set "
                "partitioner=murmur2_random; STREAMPROC_PARTITION_CHECK=warn processes such "
                "events meanwhile")
