"""The customer profile: a plain dict typed by :class:`Profile`, and the pure function that
applies one event to it.

The profile is stored as one JSON document per customer. ``apply_event`` knows nothing of Redis
or Kafka; the processor decides which events to apply (idempotency) and stores the result.

>>> p = new_profile("c1")
>>> _ = apply_event(p, "cart_add", 1_000, {"product": {"product_id": "p1", "category": "shoes",
...     "price": 30.0}, "quantity": 2})
>>> p["cart"]["value"], p["counts"]["cart_add"]
(60.0, 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from itertools import chain
from typing import Any, TypedDict, cast

from streamproc.days import DAY_MS
from streamproc.state.provenance import (
    DEFAULT_LEVELS,
    DEFAULT_UPDATE_SOURCE,
    quality,
    record_provenance,
)

# A gap of event time longer than this starts a new session (the common web-analytics default).
SESSION_GAP_MS = 30 * 60 * 1000
RECENT_PRODUCTS = 10
# Products the profile remembers across sessions (viewed, carted, bought), for recommendations.
RECENT_ITEMS = 20
# Which interaction a remembered product keeps when it had several: the strongest.
ITEM_RANK = {"view": 0, "cart": 1, "buy": 2}
# Affinity below this is forgotten, so a profile does not grow with every category ever seen.
MIN_AFFINITY = 0.01
# How much each kind of interest signal adds to a category's or brand's affinity.
AFFINITY_WEIGHTS = {"page_view": 0.5, "product_view": 1.0, "cart_add": 3.0, "purchase": 5.0}
# What a context_update reports, kept in the profile's ``surroundings`` with its event time.
SURROUNDINGS = ("weather", "temperature_c", "place")
ENGAGEMENT_FIELDS = {"impression": "sent", "open": "opened", "click": "clicked",
                     "conversion": "converted", "unsubscribe": "unsubscribed",
                     "dismiss": "dismissed"}



class Profile(TypedDict, total=False):
    """A customer's profile: the one type every module uses for it.

    A plain dict (stored as JSON), so it is typed by its top-level keys; the parts below them
    stay ``dict[str, Any]``. Not total: a profile stored by an older version lacks the newer
    parts until :func:`upgrade_profile` completes it, and the parts written by later steps
    (scores, timers, the exposure history, ...) appear only once those steps have run.
    ``streamproc.segments.profilepath.PROFILE_SHAPE`` lists what segment rules may read.
    """

    # Written by apply_event (new_profile starts each).
    customer_id: str
    first_seen_ms: int | None
    last_seen_ms: int | None
    counts: dict[str, int]
    session: dict[str, Any] | None
    cart: dict[str, Any]
    purchases: dict[str, Any]
    categories: dict[str, int]
    affinities: dict[str, Any]
    engagement: dict[str, Any]
    activity: dict[str, dict[str, int]]
    attributes: dict[str, Any]
    # The source and event time of each attribute (streamproc.state.provenance), and the data
    # quality score last computed (on a profile_update, and by the engine on a decision).
    provenance: dict[str, list[Any]]
    quality: dict[str, float]
    consent: dict[str, Any]
    feedback: dict[str, int]
    device: str | None
    location: dict[str, str]
    rfm: dict[str, Any]
    # [product id, category, "view" | "cart" | "buy", event time ms], oldest first (at most
    # RECENT_ITEMS, one entry per product); absent until the first product event.
    recent_products: list[list[Any]]
    # Written by the segmenter (streamproc.segments.segmenter).
    segments: dict[str, Any]
    segment_history: list[Any]
    # The last context_update: weather, temperature_c, place and its event time (ts_ms).
    surroundings: dict[str, Any]
    # Written by the scorer (streamproc.learning.scorer).
    scores: dict[str, float]
    cluster: dict[str, Any]
    # Written by the decision engine and its timers (streamproc.decisions).
    decisions: dict[str, Any]
    timers: dict[str, dict[str, Any]]
    clock_ms: int
    # Written by the KPI counter (streamproc.decisions.kpis): what it must remember.
    kpi: dict[str, Any]
    # Written by the processor: what it applied already (idempotency).
    applied: dict[str, int]
    recent_event_ids: list[str]
    # Written by the processor for identity (streamproc.state.identity, docs/identity.md): the
    # customer an alias profile forwards to, the identifiers merged into this profile, and the
    # merges applied (tokens of identifier and merge id).
    alias_of: str
    aliases: list[str]
    merged: list[str]
    # Kept by versions before the learner held them; dropped by the scorer on the next event.
    pending_labels: Any


@dataclass(frozen=True)
class ProfileConfig:
    """The knobs of the profile: affinity half-life, how long daily activity is kept, how close
    in time two sources must be to contradict each other, and the trust level of each source."""

    affinity_half_life_days: float = 14.0
    activity_days: int = 30
    trust_conflict_days: float = 30.0
    trust_levels: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LEVELS))


DEFAULT_CONFIG = ProfileConfig()


def epoch_day(ts_ms: int) -> int:
    return ts_ms // DAY_MS


def new_profile(customer_id: str) -> Profile:
    return {
        "customer_id": customer_id,
        "first_seen_ms": None,
        "last_seen_ms": None,
        "counts": {},
        "session": None,
        "cart": {"items": {}, "value": 0.0, "updated_ms": None},
        "purchases": {"orders": 0, "total": 0.0, "first_ms": None, "last_ms": None, "days": {}},
        "categories": {},
        "affinities": {"ts_ms": None, "categories": {}, "brands": {}},
        "engagement": {},
        "activity": {},
        "attributes": {},
        "consent": {},
        "feedback": {},
        "device": None,
        "location": {},
        "segments": {},
        "segment_history": [],
    }


@cache
def _shape() -> tuple[frozenset[str], tuple[tuple[str, frozenset[str]], ...]]:
    """The keys of a new profile, and the keys of each of its dicts."""
    p = new_profile("-")
    return frozenset(p), tuple((k, frozenset(v)) for k, v in p.items() if isinstance(v, dict))


def upgrade_profile(doc: dict[str, Any]) -> Profile:
    """A stored profile document, completed with the parts this version keeps: the one place a
    document read back becomes a :class:`Profile`.

    A part missing at the top level, or inside one of the new profile's dicts (cart, purchases,
    affinities), starts as in a new profile; what the stored profile has stays as it is. So an
    upgrade needs no migration: each customer's document is completed on their next event (a
    part the old version never recorded, such as purchase days, fills from then on).

    >>> old = {"customer_id": "c1", "purchases": {"orders": 2, "total": 30.0}, "session": None}
    >>> p = upgrade_profile(old)
    >>> p["purchases"]["days"], p["purchases"]["orders"], p["activity"], p["session"]
    ({}, 2, {}, None)
    """
    keys, parts = _shape()
    if keys <= doc.keys() and all(not isinstance(have := doc[key], dict) or part <= have.keys()
                                  for key, part in parts):
        # complete already: nearly every load (checked without building a profile)
        return cast(Profile, doc)
    for key, default in new_profile(doc.get("customer_id") or "-").items():
        have = doc.get(key)
        if key not in doc:
            doc[key] = default
        elif isinstance(default, dict) and isinstance(have, dict):
            for part, value in default.items():
                have.setdefault(part, value)
    return cast(Profile, doc)


def rfm_summary(purchases: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """RFM in the customer-base-analysis (BTYD) definitions, in days.

    ``frequency``: repeat purchase days (distinct purchase days minus one); ``recency``: days
    between the first and the last purchase day; ``T``: days between the first purchase day and
    now (the stream's event time); ``monetary_value``: mean spend of the repeat purchase days.

    >>> rfm_summary({"days": {"10": 20.0, "12": 30.0, "15": 50.0}}, 20 * DAY_MS)
    {'frequency': 2, 'recency': 5, 'T': 10, 'monetary_value': 40.0}
    """
    days = sorted(int(d) for d in purchases["days"])
    first, last = days[0], days[-1]
    repeat = [purchases["days"][str(d)] for d in days[1:]]
    return {
        "frequency": len(repeat),
        "recency": last - first,
        "T": max(epoch_day(now_ms), last) - first,
        "monetary_value": round(sum(repeat) / len(repeat), 2) if repeat else 0.0,
    }


def _decay_affinities(p: Profile, ts_ms: int, half_life_ms: float) -> float:
    """Bring every affinity to event time ``ts_ms``; return the weight of a signal at ts_ms.

    Scores are kept decayed to one reference time. A later event decays them all forward; an
    out-of-order (earlier) event instead adds its signal already decayed to the reference time,
    so the order of arrival does not change the result.
    """
    aff = p["affinities"]
    ref = aff["ts_ms"]
    if ref is None or ts_ms >= ref:
        if ref is not None and ts_ms > ref:
            factor = 0.5 ** ((ts_ms - ref) / half_life_ms)
            for table in (aff["categories"], aff["brands"]):
                for name in list(table):
                    score = table[name] * factor
                    if score < MIN_AFFINITY:
                        del table[name]
                    else:
                        table[name] = round(score, 4)
        aff["ts_ms"] = ts_ms
        return 1.0
    return float(0.5 ** ((ref - ts_ms) / half_life_ms))


def _add_affinity(table: dict[str, float], name: str | None, weight: float) -> None:
    if name:
        table[name] = round(table.get(name, 0.0) + weight, 4)


def _count_activity(p: Profile, key: str, day: int, by: int = 1) -> None:
    per_day = p["activity"].setdefault(key, {})
    per_day[str(day)] = per_day.get(str(day), 0) + by


def _trim_activity(p: Profile, today: int, keep_days: int) -> None:
    oldest = today - keep_days + 1
    activity = p["activity"]
    # Run after every event, and nearly always nothing is that old (nor empty): one pass in C
    # over every day says so, in a third of the time the loop below takes to find nothing.
    if (min(map(int, chain.from_iterable(activity.values())), default=oldest) >= oldest
            and all(activity.values())):
        return
    for key in list(p["activity"]):
        per_day = p["activity"][key]
        for day in [d for d in per_day if int(d) < oldest]:
            del per_day[day]
        if not per_day:
            del p["activity"][key]


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
            "cart_adds": 0,
            "checkouts": 0,
            "products": [],
            "categories": {},
        }
        p["session"] = s
        p["counts"]["sessions"] = p["counts"].get("sessions", 0) + 1
    s["last_ms"] = max(s["last_ms"], ts_ms)
    session: dict[str, Any] = s
    return session


def remember_product(p: Profile, product_id: str, category: str, kind: str, ts_ms: int) -> None:
    """Keep ``product_id`` in the profile's recent products (one entry per product, its
    strongest interaction, its latest time; at most :data:`RECENT_ITEMS`, the oldest go).

    >>> p = new_profile("c1")
    >>> remember_product(p, "a", "shoes", "buy", 5)
    >>> remember_product(p, "b", "books", "view", 6)
    >>> remember_product(p, "a", "shoes", "view", 7)
    >>> p["recent_products"]
    [['b', 'books', 'view', 6], ['a', 'shoes', 'buy', 7]]
    """
    items = p.setdefault("recent_products", [])
    for i, (pid, _, have, ts) in enumerate(items):
        if pid == product_id:
            del items[i]
            if ITEM_RANK.get(have, 0) > ITEM_RANK[kind]:
                kind = have
            ts_ms = max(ts, ts_ms)
            break
    at = len(items)
    while at > 0 and items[at - 1][3] > ts_ms:  # event time order, whatever the arrival order
        at -= 1
    items.insert(at, [product_id, category, kind, ts_ms])
    if len(items) > RECENT_ITEMS:
        del items[: len(items) - RECENT_ITEMS]


def _bump(counter: dict[str, int], key: str, by: int = 1) -> int:
    counter[key] = counter.get(key, 0) + by
    return counter[key]


def _cart_value(items: dict[str, Any]) -> float:
    return round(float(sum(i["qty"] * i["price"] for i in items.values())), 2)


def record_consent(p: Profile, ts_ms: int, data: dict[str, Any]) -> None:
    """Keep a consent_update's answer for its purpose (the latest replaces the one before)."""
    p.setdefault("consent", {})[data["purpose"]] = {
        "granted": data["granted"],
        "source": data["source"],
        "ts_ms": ts_ms,
    }


# The parts of the profile apply_event may change: those of every event, and those of each type
# (the segmentations, rules and feature sets that read none of them are skipped:
# streamproc.segments.assign). Top-level parts, and "counts.<key>" for the one key of
# ``counts`` an event adds to (its type; "sessions" when it starts one). Kept beside the code
# that writes them.
EVERY_EVENT_PARTS = frozenset({"counts", "activity"})
# first_seen_ms and last_seen_ms, named only when they moved.
SEEN_PARTS = frozenset({"first_seen_ms", "last_seen_ms"})
_SESSION = frozenset({"session"})
PARTS_BY_TYPE: dict[str, frozenset[str]] = {
    "page_view": _SESSION | {"affinities"},
    "product_view": _SESSION | {"affinities", "categories", "recent_products"},
    "search": _SESSION,
    "cart_add": _SESSION | {"affinities", "cart", "recent_products"},
    "cart_remove": _SESSION | {"cart"},
    "checkout": _SESSION,
    "purchase": frozenset({"purchases", "affinities", "categories", "recent_products", "cart"}),
    "profile_update": frozenset({"attributes", "provenance", "quality"}),
    "consent_update": frozenset({"consent"}),
    "feedback": frozenset({"feedback", "engagement"}),
}
CONTEXT_PARTS = frozenset({"device", "location"})
NEW_SESSION_PARTS = frozenset({"counts.sessions"})
# Every part apply_event writes that something may read (of the "counts.<key>" parts, those of
# the types above, of context_update and of sessions): what the skipping can rely on.
APPLIED_PARTS = EVERY_EVENT_PARTS.union(
    SEEN_PARTS, CONTEXT_PARTS, NEW_SESSION_PARTS, {"rfm"}, *PARTS_BY_TYPE.values(),
    {f"counts.{type_}" for type_ in (*PARTS_BY_TYPE, "context_update")})


@cache
def _parts(type_: str, moved: bool, rfm: bool, first: bool, last: bool,
           session: bool) -> frozenset[str]:
    parts = EVERY_EVENT_PARTS | PARTS_BY_TYPE.get(type_, frozenset()) | {f"counts.{type_}"}
    return parts.union(CONTEXT_PARTS if moved else (), {"rfm"} if rfm else (),
                       {"first_seen_ms"} if first else (), {"last_seen_ms"} if last else (),
                       NEW_SESSION_PARTS if session else ())


def apply_event(
    p: Profile, type_: str, ts_ms: int, data: dict[str, Any],
    config: ProfileConfig = DEFAULT_CONFIG,
) -> frozenset[str]:
    """Apply one schema-valid event to the profile, in place; return the top-level parts it
    may have changed (a superset: a part named may hold the same value as before).

    >>> p = new_profile("c1")
    >>> sorted(apply_event(p, "search", 0, {"query": "boots"}))  # doctest: +NORMALIZE_WHITESPACE
    ['activity', 'counts', 'counts.search', 'counts.sessions', 'first_seen_ms', 'last_seen_ms',
     'session']
    >>> sorted(apply_event(p, "search", 0, {"query": "shoes"}))  # same time, same session
    ['activity', 'counts', 'counts.search', 'session']
    """
    first = p["first_seen_ms"] is None or ts_ms < p["first_seen_ms"]
    if first:
        p["first_seen_ms"] = ts_ms
    seen = p["last_seen_ms"]
    last_seen = p["last_seen_ms"] = max(seen or ts_ms, ts_ms)
    _bump(p["counts"], type_)
    session = p["session"]
    context = data.get("context") or {}
    moved = False  # to another device or place
    if context.get("device") and p.get("device") != context["device"]:
        p["device"], moved = context["device"], True
    location = p["location"]
    for field_ in ("locale", "country", "city"):
        if context.get(field_) and location.get(field_) != context[field_]:
            location[field_], moved = context[field_], True

    today = epoch_day(ts_ms)
    _count_activity(p, type_, today)
    weight = AFFINITY_WEIGHTS.get(type_)
    if weight is not None:
        weight *= _decay_affinities(p, ts_ms, config.affinity_half_life_days * DAY_MS)
    categories, brands = p["affinities"]["categories"], p["affinities"]["brands"]

    if type_ in {"page_view", "product_view", "search", "cart_add", "cart_remove", "checkout"}:
        s = _touch_session(p, ts_ms, data)
        if type_ == "page_view":
            s["views"] += 1
            if data.get("category"):
                _bump(s["categories"], data["category"])
                _count_activity(p, f"page_view:{data['category']}", today)
                _add_affinity(categories, data["category"], weight or 0.0)
        elif type_ == "product_view":
            product = data["product"]
            s["product_views"] += 1
            s["products"] = (s["products"] + [product["product_id"]])[-RECENT_PRODUCTS:]
            _bump(s["categories"], product["category"])
            _bump(p["categories"], product["category"])
            _count_activity(p, f"product_view:{product['category']}", today)
            _add_affinity(categories, product["category"], weight or 0.0)
            _add_affinity(brands, product.get("brand"), weight or 0.0)
            remember_product(p, product["product_id"], product["category"], "view", ts_ms)
        elif type_ == "search":
            s["searches"] += 1
        elif type_ == "cart_add":
            s["cart_adds"] = s.get("cart_adds", 0) + 1
            product, items = data["product"], p["cart"]["items"]
            line = items.setdefault(
                product["product_id"],
                {"qty": 0, "price": product["price"], "category": product["category"]},
            )
            line["qty"] += data["quantity"]
            line["price"] = product["price"]
            _count_activity(p, f"cart_add:{product['category']}", today)
            _add_affinity(categories, product["category"], weight or 0.0)
            _add_affinity(brands, product.get("brand"), weight or 0.0)
            remember_product(p, product["product_id"], product["category"], "cart", ts_ms)
        elif type_ == "cart_remove":
            items = p["cart"]["items"]
            line = items.get(data["product_id"])
            if line is not None:
                line["qty"] -= data["quantity"]
                if line["qty"] <= 0:
                    del items[data["product_id"]]
        elif type_ == "checkout":
            s["checkouts"] = s.get("checkouts", 0) + 1
        if type_ in {"cart_add", "cart_remove"}:
            p["cart"]["value"] = _cart_value(p["cart"]["items"])
            p["cart"]["updated_ms"] = ts_ms
    elif type_ == "purchase":
        buys = p["purchases"]
        buys["orders"] += 1
        buys["total"] = round(buys["total"] + data["amount"], 2)
        buys["average"] = round(buys["total"] / buys["orders"], 2)
        if buys["first_ms"] is None or ts_ms < buys["first_ms"]:
            buys["first_ms"] = ts_ms
        buys["last_ms"] = max(buys["last_ms"] or ts_ms, ts_ms)
        day = str(today)
        buys["days"][day] = round(buys["days"].get(day, 0.0) + data["amount"], 2)
        for line in data["lines"]:
            _bump(p["categories"], line["category"], line["quantity"])
            _count_activity(p, f"purchase:{line['category']}", today)
            _add_affinity(categories, line["category"], (weight or 0.0) * line["quantity"])
            _add_affinity(brands, line.get("brand"), (weight or 0.0) * line["quantity"])
            remember_product(p, line["product_id"], line["category"], "buy", ts_ms)
        # What was bought leaves the cart.
        bought = {line["product_id"] for line in data["lines"]}
        items = p["cart"]["items"]
        for product_id in bought & items.keys():
            del items[product_id]
        p["cart"]["value"] = _cart_value(items)
        p["cart"]["updated_ms"] = ts_ms
    elif type_ == "profile_update":
        record_provenance(cast(dict[str, Any], p), data["attributes"],
                          data.get("source") or DEFAULT_UPDATE_SOURCE, ts_ms,
                          int(config.trust_conflict_days * DAY_MS))
        p["attributes"].update(data["attributes"])
        p["quality"] = quality(p, ts_ms, config.trust_levels)
    elif type_ == "consent_update":
        record_consent(p, ts_ms, data)
    elif type_ == "context_update":
        # Only a newer report replaces what is known (events of a customer can come late).
        reported = {k: data[k] for k in SURROUNDINGS if k in data}
        around = p.setdefault("surroundings", {"ts_ms": None})
        if reported and (around["ts_ms"] is None or ts_ms >= around["ts_ms"]):
            around.update(reported, ts_ms=ts_ms)
    elif type_ == "feedback":
        _bump(p["feedback"], data["outcome"])
        channel = p["engagement"].setdefault(data.get("channel") or "web", {"last_ms": ts_ms})
        _bump(channel, ENGAGEMENT_FIELDS[data["outcome"]])
        channel["last_ms"] = max(channel["last_ms"], ts_ms)

    rfm = bool(p["purchases"]["days"])
    if rfm:
        p["rfm"] = rfm_summary(p["purchases"], max(ts_ms, last_seen))
    _trim_activity(p, epoch_day(last_seen), config.activity_days)
    return _parts(type_, moved, rfm, first, last_seen != seen, p["session"] is not session)
