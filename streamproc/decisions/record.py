"""The decision record (``schemas/decision.schema.json``): ids, times and what it shows.

The decision id is a UUID-5 of the customer, the triggering event's id and the trigger's name:
the same event replayed gives the same id, and one event can trigger several decisions.

>>> decision_id("c1", "e1", "cart_add") == decision_id("c1", "e1", "cart_add")
True
>>> iso_ms(0)
'1970-01-01T00:00:00.000Z'
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamproc.decisions.catalogue import Action

DECISION_NAMESPACE = uuid.UUID("6f1c2d8e-4b7a-4f0e-9a51-3c2b7d9e0a14")
_NAMESPACE_BYTES = DECISION_NAMESPACE.bytes
MAX_REASONS = 20
MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class Source:
    """The triggering event and where it was read from."""

    type: str
    event_id: str
    customer_id: str
    ts: str  # the event's own ISO time, as sent
    ts_ms: int
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None  # the Kafka message's timestamp, for the latency


def decision_id(customer_id: str, event_id: str, trigger: str) -> str:
    """``uuid5(DECISION_NAMESPACE, "customer/event/trigger").hex``, without building the UUID
    object (a third of the time): SHA-1 of the namespace and the name, version 5, RFC variant.

    >>> decision_id("c1", "e1", "cart_add") == uuid.uuid5(DECISION_NAMESPACE, "c1/e1/cart_add").hex
    True
    """
    digest = bytearray(hashlib.sha1(
        _NAMESPACE_BYTES + f"{customer_id}/{event_id}/{trigger}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return digest.hex()


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def simple_segments(p: Mapping[str, Any]) -> dict[str, str]:
    orders = p["purchases"]["orders"]
    return {
        "buyer": "prospect" if orders == 0 else "first_time" if orders == 1 else "repeat",
        "cart": "active" if p["cart"]["items"] else "empty",
    }


def segments_used(p: Mapping[str, Any]) -> dict[str, str]:
    """The customer's segments (custom ones aside: they can be many), as the record shows."""
    return {**simple_segments(p), **{
        k: v for k, v in (p.get("segments") or {}).items() if not k.startswith("custom.")}}


def scores_used(p: Mapping[str, Any]) -> dict[str, float]:
    scores: dict[str, float] = {"cart_value": p["cart"]["value"],
                                "orders": p["purchases"]["orders"]}
    intent = (p.get("scores") or {}).get("intent")
    if intent is not None:
        scores["intent"] = intent
    return scores


def action_shown(action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {"id": action.id, "kind": action.kind}
    if action.title:
        shown["title"] = action.title
    if params:
        shown["params"] = dict(params)
    return shown


def clip_reasons(reasons: list[str]) -> list[str]:
    """At most 20 reasons of at most 300 characters (the schema's bounds)."""
    out = [r if len(r) <= MAX_REASON_CHARS else r[:MAX_REASON_CHARS - 3] + "..."
           for r in reasons if r]
    if len(out) > MAX_REASONS:
        out = [*out[:MAX_REASONS - 1], f"... and {len(out) - MAX_REASONS + 1} more"]
    return out
