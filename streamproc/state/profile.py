"""The customer profile: a plain dict, and the pure function that applies one event to it.

The profile is stored as one JSON document per customer. ``apply_event`` knows nothing of Redis
or Kafka; the processor decides which events to apply (idempotency) and stores the result.

>>> p = new_profile("c1")
>>> apply_event(p, "cart_add", 1_000, {"product": {"product_id": "p1", "category": "shoes",
...     "price": 30.0}, "quantity": 2})
>>> p["cart"]["value"], p["counts"]["cart_add"]
(60.0, 1)
"""

from __future__ import annotations

from typing import Any

# A gap of event time longer than this starts a new session (the common web-analytics default).
SESSION_GAP_MS = 30 * 60 * 1000
RECENT_PRODUCTS = 20

Profile = dict[str, Any]


def new_profile(customer_id: str) -> Profile:
    return {
        "customer_id": customer_id,
        "first_seen_ms": None,
        "last_seen_ms": None,
        "counts": {},
        "session": None,
        "cart": {"items": {}, "value": 0.0, "updated_ms": None},
        "purchases": {"orders": 0, "total": 0.0, "first_ms": None, "last_ms": None},
        "categories": {},
        "attributes": {},
        "consent": {},
        "feedback": {},
        "device": None,
        "location": {},
    }


def _touch_session(p: Profile, ts_ms: int, data: dict[str, Any]) -> dict[str, Any]:
    context = data.get("context") or {}
    session_id = context.get("session_id")
    s = p["session"]
    if (
        s is None
        or ts_ms - s["last_ms"] > SESSION_GAP_MS
        or (session_id is not None and session_id != s["id"])
    ):
        s = {
            "id": session_id or f"{p['customer_id']}:{ts_ms}",
            "start_ms": ts_ms,
            "last_ms": ts_ms,
            "views": 0,
            "product_views": 0,
            "searches": 0,
            "products": [],
            "categories": {},
        }
        p["session"] = s
        p["counts"]["sessions"] = p["counts"].get("sessions", 0) + 1
    s["last_ms"] = max(s["last_ms"], ts_ms)
    session: dict[str, Any] = s
    return session


def _bump(counter: dict[str, int], key: str, by: int = 1) -> int:
    counter[key] = counter.get(key, 0) + by
    return counter[key]


def _cart_value(items: dict[str, Any]) -> float:
    return round(float(sum(i["qty"] * i["price"] for i in items.values())), 2)


def apply_event(p: Profile, type_: str, ts_ms: int, data: dict[str, Any]) -> None:
    """Apply one schema-valid event to the profile, in place."""
    if p["first_seen_ms"] is None or ts_ms < p["first_seen_ms"]:
        p["first_seen_ms"] = ts_ms
    p["last_seen_ms"] = max(p["last_seen_ms"] or ts_ms, ts_ms)
    _bump(p["counts"], type_)
    context = data.get("context") or {}
    if context.get("device"):
        p["device"] = context["device"]
    for field_ in ("locale", "country", "city"):
        if context.get(field_):
            p["location"][field_] = context[field_]

    if type_ in {"page_view", "product_view", "search", "cart_add", "cart_remove", "checkout"}:
        s = _touch_session(p, ts_ms, data)
        if type_ == "page_view":
            s["views"] += 1
            if data.get("category"):
                _bump(s["categories"], data["category"])
        elif type_ == "product_view":
            product = data["product"]
            s["product_views"] += 1
            s["products"] = (s["products"] + [product["product_id"]])[-RECENT_PRODUCTS:]
            _bump(s["categories"], product["category"])
            _bump(p["categories"], product["category"])
        elif type_ == "search":
            s["searches"] += 1
        elif type_ == "cart_add":
            product, items = data["product"], p["cart"]["items"]
            line = items.setdefault(
                product["product_id"],
                {"qty": 0, "price": product["price"], "category": product["category"]},
            )
            line["qty"] += data["quantity"]
            line["price"] = product["price"]
        elif type_ == "cart_remove":
            items = p["cart"]["items"]
            line = items.get(data["product_id"])
            if line is not None:
                line["qty"] -= data["quantity"]
                if line["qty"] <= 0:
                    del items[data["product_id"]]
        if type_ in {"cart_add", "cart_remove"}:
            p["cart"]["value"] = _cart_value(p["cart"]["items"])
            p["cart"]["updated_ms"] = ts_ms
    elif type_ == "purchase":
        buys = p["purchases"]
        buys["orders"] += 1
        buys["total"] = round(buys["total"] + data["amount"], 2)
        if buys["first_ms"] is None or ts_ms < buys["first_ms"]:
            buys["first_ms"] = ts_ms
        buys["last_ms"] = max(buys["last_ms"] or ts_ms, ts_ms)
        for line in data["lines"]:
            _bump(p["categories"], line["category"], line["quantity"])
        # What was bought leaves the cart.
        bought = {line["product_id"] for line in data["lines"]}
        items = p["cart"]["items"]
        for product_id in bought & items.keys():
            del items[product_id]
        p["cart"]["value"] = _cart_value(items)
        p["cart"]["updated_ms"] = ts_ms
    elif type_ == "profile_update":
        p["attributes"].update(data["attributes"])
    elif type_ == "consent_update":
        p["consent"][data["purpose"]] = {
            "granted": data["granted"],
            "source": data["source"],
            "ts_ms": ts_ms,
        }
    elif type_ == "feedback":
        _bump(p["feedback"], data["outcome"])
