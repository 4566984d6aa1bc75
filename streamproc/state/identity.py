"""Identity: one customer under several identifiers (docs/identity.md).

An ``identify`` event says an identifier (an anonymous visitor's id, an email hash, a loyalty
card) belongs to a customer. The identifier's profile becomes an *alias*: a profile reduced to
``alias_of`` (the customer) and its bookkeeping, so that its worker forwards the identifier's
later events to the customer. What the identifier's profile held travels to the customer's
partition in a ``profile_merge`` event and is combined there by :func:`merge_profile`, once
(``p["merged"]`` remembers the merges applied).

This module holds the pure parts on the profile's own fields; the exposure history, the timers
and the KPI memory have their merges beside their owners (streamproc.decisions), and the
processor runs them all (streamproc.processor).

>>> from streamproc.state.profile import apply_event, new_profile
>>> c, x = new_profile("c1"), new_profile("anon-1")
>>> _ = apply_event(c, "product_view", 1_000, {"product": {"product_id": "p1", "category": "books",
...     "price": 9.0}})
>>> _ = apply_event(x, "cart_add", 2_000, {"product": {"product_id": "p2", "category": "shoes",
...     "price": 30.0}, "quantity": 1})
>>> merge_profile(c, x)
>>> c["counts"], c["cart"]["value"], sorted(c["affinities"]["categories"])
({'product_view': 1, 'sessions': 2, 'cart_add': 1}, 30.0, ['books', 'shoes'])
"""

from __future__ import annotations

from typing import Any, cast

from streamproc.days import DAY_MS
from streamproc.state.profile import (
    DEFAULT_CONFIG,
    MIN_AFFINITY,
    Profile,
    ProfileConfig,
    _cart_value,
    _trim_activity,
    epoch_day,
    new_profile,
    remember_product,
    rfm_summary,
)

# The field of an alias profile naming the customer its identifier belongs to.
ALIAS_OF = "alias_of"
# What an alias profile keeps of the identifier's profile: the processor's bookkeeping (offsets
# applied, the duplicate window) and the consent answers (an unlinked identifier keeps them).
ALIAS_KEEPS = ("customer_id", "applied", "recent_event_ids", "consent")


def alias_target(p: Profile | dict[str, Any] | None) -> str | None:
    """The customer an alias profile forwards to; None for a customer's own profile.

    >>> alias_target({"customer_id": "anon-1", "alias_of": "c1"}), alias_target({})
    ('c1', None)
    """
    if not p:
        return None
    target = p.get(ALIAS_OF)
    return target if isinstance(target, str) else None


def alias_profile(p: Profile, customer_id: str) -> Profile:
    """``p`` reduced to an alias of ``customer_id`` (in place; returned): what
    :data:`ALIAS_KEEPS` names, the rest as in a new profile (empty)."""
    unlinked(p)
    p["alias_of"] = customer_id
    return p


def unlinked(p: Profile) -> None:
    """An alias profile made the identifier's own again (in place), keeping what an alias
    keeps: its consent answers and bookkeeping; the rest starts as in a new profile."""
    doc = cast(dict[str, Any], p)
    kept = {key: doc[key] for key in ALIAS_KEEPS if key in doc}
    doc.clear()
    doc.update(new_profile(kept.get("customer_id") or "-"))
    doc.update(kept)


def merge_consent(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Each purpose's answer after a merge: the stricter of the two. A denial on either side
    wins (the latest denial is kept); else a grant (the latest); no answer stays no answer.

    >>> a = {"email": {"granted": True, "source": "web_form", "ts_ms": 5}}
    >>> merge_consent(a, {"email": {"granted": False, "source": "app", "ts_ms": 1},
    ...                   "sms": {"granted": True, "source": "app", "ts_ms": 2}})
    >>> a["email"]["granted"], a["sms"]["granted"]
    (False, True)
    """
    for purpose, theirs in other.items():
        ours = into.get(purpose)
        if ours is None:
            into[purpose] = dict(theirs)
        elif ours["granted"] != theirs["granted"]:
            into[purpose] = dict(ours if not ours["granted"] else theirs)
        elif theirs.get("ts_ms", 0) > ours.get("ts_ms", 0):
            into[purpose] = dict(theirs)


def _add_counts(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, n in other.items():
        into[key] = into.get(key, 0) + n


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _merge_affinities(into: dict[str, Any], other: dict[str, Any], half_life_ms: float) -> None:
    """Both sides decayed to the later reference time, then added."""
    ref = _max(into.get("ts_ms"), other.get("ts_ms"))
    if ref is None:
        return
    for side in (into, other):
        age = ref - (side.get("ts_ms") or ref)
        factor = 0.5 ** (age / half_life_ms)
        for table in ("categories", "brands"):
            side[table] = {k: round(v * factor, 4) for k, v in (side.get(table) or {}).items()}
    for table in ("categories", "brands"):
        merged = into[table]
        for name, score in other[table].items():
            merged[name] = round(merged.get(name, 0.0) + score, 4)
        into[table] = {k: v for k, v in merged.items() if v >= MIN_AFFINITY}
    into["ts_ms"] = ref


def merge_profile(into: Profile, other: Profile | dict[str, Any],
                  config: ProfileConfig = DEFAULT_CONFIG) -> None:
    """Combine ``other`` (an identifier's profile) into ``into`` (the customer's), in place:
    what apply_event keeps, as if both sides' events had been applied to one profile.

    Counts, categories, activity, feedback and engagement add up; purchases add up per day
    (RFM is recomputed); the carts are combined (quantities of a product added: the shop's
    usual merge at login); affinities are decayed to the later time and added; the current
    session, device and location are the side seen last's; the customer's attributes (and
    their sources) win over the identifier's; consent is the stricter (:func:`merge_consent`).
    The parts kept by later steps (exposure history, timers, KPI memory, segments, scores) are
    not touched here.
    """
    first, last = into["first_seen_ms"], into["last_seen_ms"]
    other_last = other.get("last_seen_ms")
    theirs_later = other_last is not None and (last is None or other_last > last)
    into["first_seen_ms"] = _min(first, other.get("first_seen_ms"))
    into["last_seen_ms"] = _max(last, other_last)
    _add_counts(into["counts"], other.get("counts") or {})
    _add_counts(into["categories"], other.get("categories") or {})
    _add_counts(into["feedback"], other.get("feedback") or {})
    for key, per_day in (other.get("activity") or {}).items():
        _add_counts(into["activity"].setdefault(key, {}), per_day)
    for channel, fields in (other.get("engagement") or {}).items():
        ours = into["engagement"].setdefault(channel, {"last_ms": fields.get("last_ms", 0)})
        _add_counts(ours, {k: v for k, v in fields.items() if k != "last_ms"})
        ours["last_ms"] = max(ours["last_ms"], fields.get("last_ms", 0))
    if theirs_later:
        into["session"] = other.get("session")
        into["device"] = other.get("device") or into["device"]
        into["location"] = {**into["location"], **(other.get("location") or {})}
    else:
        into["location"] = {**(other.get("location") or {}), **into["location"]}
        into["device"] = into["device"] or other.get("device")
    into["attributes"] = {**(other.get("attributes") or {}), **into["attributes"]}
    # Each attribute keeps the source of the side whose value it kept.
    marks = {**(other.get("provenance") or {}), **(into.get("provenance") or {})}
    if marks:
        into["provenance"] = {k: v for k, v in marks.items() if k in into["attributes"]}
    merge_consent(into["consent"], other.get("consent") or {})

    cart, theirs = into["cart"], other.get("cart") or {}
    for product_id, line in (theirs.get("items") or {}).items():
        ours = cart["items"].get(product_id)
        if ours is None:
            cart["items"][product_id] = dict(line)
        else:
            ours["qty"] += line["qty"]
            if (theirs.get("updated_ms") or 0) > (cart["updated_ms"] or 0):
                ours["price"] = line["price"]
    cart["value"] = _cart_value(cart["items"])
    cart["updated_ms"] = _max(cart["updated_ms"], theirs.get("updated_ms"))

    buys, bought = into["purchases"], other.get("purchases") or {}
    if bought.get("orders"):
        buys["orders"] += bought["orders"]
        buys["total"] = round(buys["total"] + bought["total"], 2)
        buys["average"] = round(buys["total"] / buys["orders"], 2)
        buys["first_ms"] = _min(buys["first_ms"], bought.get("first_ms"))
        buys["last_ms"] = _max(buys["last_ms"], bought.get("last_ms"))
        for day, amount in (bought.get("days") or {}).items():
            buys["days"][day] = round(buys["days"].get(day, 0.0) + amount, 2)
    _merge_affinities(into["affinities"], dict(other.get("affinities") or {}),
                      config.affinity_half_life_days * DAY_MS)
    for item in other.get("recent_products") or ():
        remember_product(into, *item)
    seen = into["last_seen_ms"]
    if seen is not None:
        if buys["days"]:
            into["rfm"] = rfm_summary(buys, seen)
        _trim_activity(into, epoch_day(seen), config.activity_days)
