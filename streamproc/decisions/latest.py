"""The latest decision per customer and slot, kept in Redis for websites to read directly.

One hash per customer, ``sp:{<customer_id>}:decisions`` (the customer's hash tag, so erasure
deletes it with the rest), one field per slot, holding the decision record as JSON. The key
expires with the latest expiry of its decisions; a reader checks ``expires_at`` of the field it
reads (Redis 7.0 cannot expire single fields). A decision already expired when it is made
(a replay of old events) is not written.

    HGET sp:{cust-42}:decisions homepage_hero   ->  {"decision_id": ..., "action": {...}, ...}

>>> import asyncio
>>> latest = MemoryLatest()
>>> record = {"customer_id": "c1", "slot": "hero", "expires_at": "2030-01-01T00:00:00.000Z"}
>>> asyncio.run(latest.save([record], now_ms=0)), asyncio.run(latest.read("c1", 0))
(1, {'hero': {'customer_id': 'c1', 'slot': 'hero', 'expires_at': '2030-01-01T00:00:00.000Z'}})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis

from streamproc.state.keys import latest_decisions_key

Record = Mapping[str, Any]


def expires_ms(record: Record) -> int:
    return int(datetime.fromisoformat(record["expires_at"]).timestamp() * 1000)


def _current(records: Sequence[Record], now_ms: int) -> list[tuple[Record, int]]:
    """The records worth keeping: with a slot and not expired, each with its time to live."""
    return [(r, expires_ms(r) - now_ms) for r in records
            if r.get("slot") and r.get("expires_at") and expires_ms(r) > now_ms]


class LatestDecisions(Protocol):
    async def save(self, records: Sequence[Record], now_ms: int) -> int:
        """Keep each record as its customer's latest for its slot; return how many."""
        ...

    async def read(self, customer_id: str, now_ms: int) -> dict[str, Any]:
        """The customer's unexpired latest decisions, by slot."""
        ...


class RedisLatest:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def save(self, records: Sequence[Record], now_ms: int) -> int:
        keep = _current(records, now_ms)
        if not keep:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for record, ttl_ms in keep:
            key = latest_decisions_key(record["customer_id"])
            pipe.hset(key, record["slot"], orjson.dumps(record))
            # The key lives as long as its longest-lived decision: set a first expiry, then
            # only ever lengthen it.
            pipe.pexpire(key, ttl_ms, nx=True)
            pipe.pexpire(key, ttl_ms, gt=True)
        await pipe.execute()
        return len(keep)

    async def read(self, customer_id: str, now_ms: int) -> dict[str, Any]:
        raw = await self.client.hgetall(latest_decisions_key(customer_id))
        found = {(k if isinstance(k, str) else k.decode()): orjson.loads(v)
                 for k, v in raw.items()}
        return {slot: r for slot, r in found.items() if expires_ms(r) > now_ms}


class MemoryLatest:
    """The same contract in a dict, for unit tests."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    async def save(self, records: Sequence[Record], now_ms: int) -> int:
        keep = _current(records, now_ms)
        for record, _ in keep:
            self.rows.setdefault(record["customer_id"], {})[record["slot"]] = dict(record)
        return len(keep)

    async def read(self, customer_id: str, now_ms: int) -> dict[str, Any]:
        return {slot: r for slot, r in self.rows.get(customer_id, {}).items()
                if expires_ms(r) > now_ms}
