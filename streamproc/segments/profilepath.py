"""Dotted paths into the profile (``purchases.total``), checked when rules load, read per event.

:data:`PROFILE_SHAPE` mirrors the profile (``streamproc/state/profile.py``) so a typo such as
``purchase.total`` is an error when the rules load rather than a rule that is silently never
true. Keep it in step with the profile. Maps with free keys (``counts``, ``activity``,
``affinities.categories`` ...) accept any key below them; a number indexes a list
(``session.products.0``). Under ``segments`` the rest of the path is one key, so
``segments.custom.shoe_browsers`` reads the key ``custom.shoe_browsers``.

>>> read = getter("purchases.total")
>>> read({"purchases": {"total": 12.5}}), read({}) is MISSING, read({"purchases": None}) is MISSING
(12.5, True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Final

MISSING: Final = object()  # an absent or null value

FREE: Final = "*"  # any key, any depth below
Shape = Mapping[str, "Shape | str | None"]  # None: a value (nothing below it)

PROFILE_SHAPE: Shape = {
    "customer_id": None,
    "first_seen_ms": None,
    "last_seen_ms": None,
    "counts": FREE,
    "session": {
        "id": None, "start_ms": None, "last_ms": None, "views": None, "product_views": None,
        "searches": None, "cart_adds": None, "checkouts": None, "products": FREE,
        "categories": FREE,
    },
    "cart": {"items": FREE, "value": None, "updated_ms": None},
    "purchases": {
        "orders": None, "total": None, "average": None, "first_ms": None, "last_ms": None,
        "days": FREE,
    },
    "rfm": {"frequency": None, "recency": None, "T": None, "monetary_value": None},
    "affinities": {"categories": FREE, "brands": FREE},
    "engagement": FREE,
    "attributes": {
        "age_band": None, "gender": None, "postcode": None, "city": None, "country": None,
        "timezone": None, "preferred_language": None, "extra": FREE,
    },
    "consent": FREE,
    "device": None,
    "location": {"locale": None, "country": None, "city": None},
    "activity": FREE,
    "segments": FREE,
    "categories": FREE,
    "feedback": FREE,
    # Written by the intent scorer (streamproc/learning/scorer.py).
    "scores": {"intent": None, "ltv": None},
    # Written by the scorer from the learner's behaviour clusters.
    "cluster": {"id": None, "about": None},
    # The data quality score (streamproc.state.provenance), from the last profile_update or
    # decision.
    "quality": {"score": None, "completeness": None, "freshness": None, "trust": None},
    # From context_update events (absent until the first one).
    "surroundings": {"weather": None, "temperature_c": None, "place": None, "ts_ms": None},
    # Not stored: the moment of the event in the customer's timezone (conditions only).
    "moment": {"local_hour": None, "weekday": None, "weekend": None},
}


def split(path: str) -> tuple[str, ...]:
    parts = tuple(path.split("."))
    if parts[0] == "segments" and len(parts) > 2:
        return ("segments", ".".join(parts[1:]))
    return parts


def check_path(path: str, shape: Shape = PROFILE_SHAPE) -> str | None:
    """Why ``path`` cannot name a profile field, or None when it can.

    >>> check_path("purchase.total")
    "unknown profile field 'purchase'; known: activity, affinities, attributes, cart, categories, \
cluster, consent, counts, customer_id, device, engagement, feedback, first_seen_ms, last_seen_ms, \
location, moment, purchases, quality, rfm, scores, segments, session, surroundings"
    """
    node: Shape | str | None = shape
    done: list[str] = []
    for part in split(path):
        if node == FREE:
            return None
        if not isinstance(node, Mapping):
            return f"{'.'.join(done)} is a value; it has no field {part!r}"
        if part not in node:
            where = f"field {'.'.join(done)}." if done else "profile field "
            return f"unknown {where}{part!r}; known: {', '.join(sorted(node))}"
        node = node[part]
        done.append(part)
    return None


@lru_cache(maxsize=1024)
def getter(path: str) -> Callable[[Mapping[str, Any]], Any]:
    """A function reading ``path`` from a profile, returning :data:`MISSING` when it is absent
    or null anywhere along the way. It never raises. (Cached: the engine asks for the paths
    of its catalogue's actions on every decision.)"""
    parts = split(path)

    def read(profile: Mapping[str, Any]) -> Any:
        node: Any = profile
        for part in parts:
            # A profile is plain dicts: checked first, as the Mapping ABC's check costs more.
            if type(node) is dict or isinstance(node, Mapping):
                node = node.get(part)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return MISSING
            if node is None:
                return MISSING
        return node

    return read
