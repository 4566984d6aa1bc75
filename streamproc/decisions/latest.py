"""The latest decision per customer and slot, kept in Redis for websites to read directly.

One hash per customer, ``sp:{<customer_id>}:decisions`` (the customer's hash tag, so erasure
deletes it with the rest), one field per slot, holding the decision record as JSON. The key
expires with the latest expiry of its decisions; a reader checks ``expires_at`` of the field it
reads (Redis 7.0 cannot expire single fields). A decision already expired when it is made
(a replay of old events) is not written.

    HGET sp:{cust-42}:decisions homepage_hero   ->  {"decision_id": ..., "action": {...}, ...}

The fields are written by the customer's state write, in the same atomic step
(:class:`streamproc.state.store.Write`, ``latest``): a decision is the latest for its slot as
soon as the state that made it is stored, and only if that write went through.

>>> record = {"customer_id": "c1", "slot": "hero", "expires_at": "2030-01-01T00:00:00.000Z"}
>>> fields, ttl_ms = latest_fields([record], now_ms=0)
>>> fields, ttl_ms
((('hero', b'{"customer_id":"c1","slot":"hero","expires_at":"2030-01-01T00:00:00.000Z"}'),), \
1893456000000)
>>> unexpired(dict(fields), now_ms=0)["hero"]["customer_id"]
'c1'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
import redis.asyncio as aioredis

from streamproc.state.keys import latest_decisions_key

Record = Mapping[str, Any]


def expires_ms(record: Record) -> int:
    return int(datetime.fromisoformat(record["expires_at"]).timestamp() * 1000)


def latest_fields(records: Sequence[Record],
                  now_ms: int) -> tuple[tuple[tuple[str, bytes], ...], int]:
    """The fields to write for a customer's ``records`` (decision records, in order): (slot,
    record as JSON) for those with a slot and not expired at ``now_ms``, and the time the key
    must live from now (ms; 0: nothing to write). The key's expiry is only ever lengthened."""
    fields = []
    ttl_ms = 0
    for r in records:
        slot, expires_at = r.get("slot"), r.get("expires_at")
        if slot and expires_at:
            left = expires_ms(r) - now_ms
            if left > 0:
                fields.append((slot, orjson.dumps(r)))
                ttl_ms = max(ttl_ms, left)
    return tuple(fields), ttl_ms


def unexpired(fields: Mapping[Any, Any], now_ms: int) -> dict[str, Any]:
    """The customer's decisions still valid at ``now_ms``, by slot, from the hash's fields."""
    found = {(k if isinstance(k, str) else k.decode()): orjson.loads(v)
             for k, v in fields.items()}
    return {slot: r for slot, r in found.items() if expires_ms(r) > now_ms}


class RedisLatest:
    """Reads the latest decisions (written by the state store: :func:`latest_fields`)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def read(self, customer_id: str, now_ms: int) -> dict[str, Any]:
        """The customer's unexpired latest decisions, by slot."""
        return unexpired(await self.client.hgetall(latest_decisions_key(customer_id)), now_ms)
