"""Builders shared by the unit tests: valid events and raw messages."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from streamproc.events.codec import RawMessage, parse_ts
from streamproc.settings import Settings

# The tests of everything but consent run as a shop that takes personalisation as granted until
# withdrawn (STREAMPROC_CONSENT_DEFAULTS; the default denies it): test_consent.py tests both.
GRANTED = frozenset({"personalisation"})
SETTINGS = Settings(consent_defaults="personalisation=granted")
TOPIC_OF = {
    "page_view": SETTINGS.topics.browsing, "product_view": SETTINGS.topics.browsing,
    "search": SETTINGS.topics.browsing, "cart_add": SETTINGS.topics.browsing,
    "cart_remove": SETTINGS.topics.browsing, "checkout": SETTINGS.topics.browsing,
    "purchase": SETTINGS.topics.purchases, "profile_update": SETTINGS.topics.profiles,
    "consent_update": SETTINGS.topics.profiles, "erase": SETTINGS.topics.profiles,
    "context_update": SETTINGS.topics.profiles,
    "identify": SETTINGS.topics.profiles, "unlink": SETTINGS.topics.profiles,
    "profile_merge": SETTINGS.topics.profiles,
    "feedback": SETTINGS.topics.feedback, "slot_request": SETTINGS.topics.browsing,
    "decision_served": SETTINGS.topics.browsing,
    "survey": SETTINGS.topics.feedback,
}
_ids = itertools.count()


def event(type_: str, customer: str = "c1", minute: int = 0, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": f"e{next(_ids)}", "type": type_, "customer_id": customer,
        "ts": f"2026-03-01T10:{minute:02d}:00.000Z",
    }
    defaults: dict[str, dict[str, Any]] = {
        "page_view": {"url": "https://shop.example/", "page_type": "home"},
        "product_view": {"product": {"product_id": "p1", "category": "shoes", "price": 50.0}},
        "search": {"query": "boots"},
        "cart_add": {"product": {"product_id": "p1", "category": "shoes", "price": 50.0},
                     "quantity": 1},
        "cart_remove": {"product_id": "p1", "quantity": 1},
        "checkout": {"cart_value": 50.0, "items": 1},
        "purchase": {"order_id": "o1", "currency": "EUR", "amount": 50.0,
                     "lines": [{"product_id": "p1", "category": "shoes", "quantity": 1,
                                "unit_price": 50.0}]},
        "profile_update": {"attributes": {"city": "Lyon"}},
        "consent_update": {"purpose": "personalisation", "granted": True, "source": "web_form"},
        "feedback": {"decision_id": "d1", "outcome": "click"},
        "erase": {},
        "identify": {"identified_as": "c1"},
        "unlink": {},
        "slot_request": {"slot": "homepage_hero", "page": {"page_type": "home"}},
        "survey": {"score": 9},
        "context_update": {},
    }
    body.update(defaults[type_])
    body.update(fields)
    return body


class Partition:
    """Hands out consecutive offsets on one topic-partition, like a broker would."""

    def __init__(self, partition: int = 0) -> None:
        self.partition = partition
        self.offsets = itertools.count()

    def message(self, body: dict[str, Any] | bytes, key: bytes | None = None,
                topic: str | None = None) -> RawMessage:
        stamp = 1_772_359_200_000
        if isinstance(body, dict):
            # Stamped at the fixed time, or as late as an event far after it needs: an event
            # dated over STREAMPROC_MAX_FUTURE_SKEW_S after its record is dead-lettered.
            with contextlib.suppress(KeyError, TypeError, ValueError):
                stamp = max(stamp, parse_ts(body["ts"]) - SETTINGS.max_future_skew_s * 1000)
            topic = topic or TOPIC_OF[body["type"]]
            key = key if key is not None else body["customer_id"].encode()
            value = orjson.dumps(body)
        else:
            value = body
            topic = topic or SETTINGS.topics.browsing
        return RawMessage(topic, self.partition, next(self.offsets), key, value, stamp)


async def replay_with_redeliveries(
    process: Callable[[list[RawMessage]], Awaitable[Any]], log: list[RawMessage],
    replays: list[tuple[int, int]], cut: int,
) -> None:
    """Consume ``log`` once in batches of ``cut``, then again from each ``(start, length)``
    of ``replays`` as a consumer restarted after a crash would (never past what it read)."""
    position = 0
    for start, length in [(0, len(log)), *replays]:
        chunk = log[min(start, position):min(start, position) + length]
        for i in range(0, len(chunk), cut):
            await process(chunk[i:i + cut])
        position = max(position, min(start, position) + length)
