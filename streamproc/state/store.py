"""Customer state storage: Redis for real, a dict for unit tests, behind one small protocol.

Each customer is one Redis hash (see :mod:`streamproc.state.keys`) with three fields: ``doc``
(the profile as JSON), ``ver`` (a version number bumped on every write) and ``outbox`` (the
decisions made by the last batch that changed the customer, so a redelivered batch can publish
them again). A batch costs two round trips whatever its size: one pipelined read of every
customer in it, and one pipelined compare-and-set write (a Lua script per customer, atomic and
confined to the customer's cluster slot). The compare-and-set fails when another writer changed
the customer since the read (a worker that lost the partition in a rebalance but has not noticed
yet); the processor then reads again and recomputes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis

from streamproc.state.keys import customer_key, customer_keys

_CAS_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'ver')
if (current or '0') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'ver', ARGV[3], 'outbox', ARGV[4])
return 1
"""


@dataclass(frozen=True, slots=True)
class Stored:
    version: int
    doc: bytes | None
    outbox: bytes | None


@dataclass(frozen=True, slots=True)
class Write:
    customer_id: str
    expected_version: int
    doc: bytes
    outbox: bytes


class Store(Protocol):
    async def load(self, customer_ids: Sequence[str]) -> dict[str, Stored]: ...

    async def save(self, writes: Sequence[Write]) -> list[str]:
        """Apply the writes whose expected version still holds; return the customers that lost."""
        ...

    async def read_profile(self, customer_id: str) -> dict[str, Any] | None: ...

    async def erase(self, customer_id: str) -> int: ...

    async def close(self) -> None: ...


def _decode_profile(stored: Stored) -> dict[str, Any] | None:
    if stored.doc is None:
        return None
    return {
        "profile": orjson.loads(stored.doc),
        "version": stored.version,
        "last_decisions": orjson.loads(stored.outbox) if stored.outbox else [],
    }


class RedisStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._cas = client.register_script(_CAS_SCRIPT)

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        return cls(aioredis.from_url(url, decode_responses=False, health_check_interval=30))

    async def load(self, customer_ids: Sequence[str]) -> dict[str, Stored]:
        pipe = self.client.pipeline(transaction=False)
        for cid in customer_ids:
            pipe.hmget(customer_key(cid), "ver", "doc", "outbox")
        rows = await pipe.execute()
        return {
            cid: Stored(int(ver or 0), doc, outbox)
            for cid, (ver, doc, outbox) in zip(customer_ids, rows, strict=True)
        }

    async def save(self, writes: Sequence[Write]) -> list[str]:
        pipe = self.client.pipeline(transaction=False)
        for w in writes:
            # Queues an EVALSHA on the pipeline; execute() loads the script first if Redis
            # lost it (NOSCRIPT after a restart).
            await self._cas(
                keys=[customer_key(w.customer_id)],
                args=[w.expected_version, w.doc, w.expected_version + 1, w.outbox],
                client=pipe,
            )
        results = await pipe.execute()
        return [w.customer_id for w, ok in zip(writes, results, strict=True) if not ok]

    async def read_profile(self, customer_id: str) -> dict[str, Any] | None:
        return _decode_profile((await self.load([customer_id]))[customer_id])

    async def erase(self, customer_id: str) -> int:
        return int(await self.client.delete(*customer_keys(customer_id)))

    async def close(self) -> None:
        await self.client.aclose()


class MemoryStore:
    """The same contract in a dict: for unit tests and the broker-free agent test."""

    def __init__(self) -> None:
        self.rows: dict[str, Stored] = {}
        self.round_trips = 0

    async def load(self, customer_ids: Sequence[str]) -> dict[str, Stored]:
        self.round_trips += 1
        empty = Stored(0, None, None)
        return {cid: self.rows.get(customer_key(cid), empty) for cid in customer_ids}

    async def save(self, writes: Sequence[Write]) -> list[str]:
        self.round_trips += 1
        lost = []
        for w in writes:
            key = customer_key(w.customer_id)
            current = self.rows.get(key)
            if (current.version if current else 0) != w.expected_version:
                lost.append(w.customer_id)
                continue
            self.rows[key] = Stored(w.expected_version + 1, w.doc, w.outbox)
        return lost

    async def read_profile(self, customer_id: str) -> dict[str, Any] | None:
        return _decode_profile((await self.load([customer_id]))[customer_id])

    async def erase(self, customer_id: str) -> int:
        return sum(self.rows.pop(k, None) is not None for k in customer_keys(customer_id))

    async def close(self) -> None:
        return None
