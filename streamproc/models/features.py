"""Feature dicts for the models, computed from a profile (see :mod:`streamproc.state.profile`).

Both functions are pure, cheap (about 10 µs) and return plain ``dict[str, float]``: every value
is a finite float, skewed counts and amounts are ``log1p``-scaled (durations also capped),
shares and flags lie in 0..1, so a linear model with a standard scaler (or a distance-based
clusterer) sees well-behaved inputs. A missing piece of the profile (no session yet, never
bought) gives a neutral value and, where it matters, a flag, never ``None``.

``intent_features`` is meant to be called right *after* ``apply_event`` applied the event it
scores, so the session already contains that event.

>>> from streamproc.state.profile import apply_event, new_profile
>>> p = new_profile("c1")
>>> ctx = {"context": {"session_id": "s1", "device": "mobile"}}
>>> _ = apply_event(p, "page_view", 1_767_225_600_000, {"category": "shoes", **ctx})
>>> x = intent_features(p, "page_view", 1_767_225_600_000)
>>> x["s_views"], x["dev_mobile"], x["never_bought"], x["ev_page_view"]
(0.693, 1.0, 1.0, 1.0)
>>> behaviour_vector(p)["cat:shoes"]
1.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from streamproc.days import DAY_MS, HOUR_MS

DEVICES = ("desktop", "mobile", "tablet")
# The browsing event types a snapshot can be taken on; others share the "ev_other" flag.
EVENT_TYPES = ("page_view", "product_view", "search", "cart_add", "cart_remove", "checkout")
# Caps keep a single outlier (a bot's 10,000-view session) from dominating a scaler's variance.
MAX_DAYS = 365.0
MAX_SESSION_MIN = 240.0
_TAU = 2 * math.pi
_HOUR_SIN = tuple(round(math.sin(_TAU * h / 24), 4) for h in range(24))
_HOUR_COS = tuple(round(math.cos(_TAU * h / 24), 4) for h in range(24))
_DOW_SIN = tuple(round(math.sin(_TAU * d / 7), 4) for d in range(7))
_DOW_COS = tuple(round(math.cos(_TAU * d / 7), 4) for d in range(7))
_LOG_NEVER = round(math.log1p(MAX_DAYS), 3)
_LOG_1000 = math.log1p(1000.0)
# Weights of the non-category traits in behaviour_vector (category shares weigh 1), chosen with
# batch and online k-means on the simulator's personas (bench/models_bench.py).
TRAIT_WEIGHTS = {"price": 0.2, "basket": 0.25, "buy_freq": 0.4}
DEVICE_WEIGHT = 0.15


# log1p of the small counts most features are, rounded as _log rounds them: a lookup instead of
# a log and a round (the round alone costs about half a microsecond).
_LOG_INTS = 4096
_LOG_INT = tuple(round(math.log1p(i), 3) for i in range(_LOG_INTS))
# The one-hot flags of intent_features, in their order: a device (or none) and an event type.
_DEVICE_FLAGS = {d: tuple(1.0 if d == other else 0.0 for other in DEVICES) for d in DEVICES}
_NO_DEVICE = (0.0,) * len(DEVICES)
_EVENT_FLAGS = {t: (*(1.0 if t == other else 0.0 for other in EVENT_TYPES), 0.0)
                for t in EVENT_TYPES}
_OTHER_EVENT = (*(0.0 for _ in EVENT_TYPES), 1.0)
_NO_SESSION = (0.0,) * 8
# The names of intent_values, in its order: the order the models have always seen them in.
INTENT_NAMES = (
    "s_views", "s_product_views", "s_searches", "s_dwell_min", "s_categories", "s_cart_adds",
    "s_checkouts", "s_cart_touched", "cart_lines", "cart_value", "orders", "spend",
    "days_since_purchase", "never_bought", "frequency", "top_affinity", "conversion",
    "hour_sin", "hour_cos", "dow_sin", "dow_cos", "dev_desktop", "dev_mobile", "dev_tablet",
    "ev_page_view", "ev_product_view", "ev_search", "ev_cart_add", "ev_cart_remove",
    "ev_checkout", "ev_other",
)


def _log(x: float) -> float:
    """``log1p`` of ``x`` (at least 0), rounded to 3 decimals.

    >>> _log(3), _log(3.0), _log(-1), _log(10_000)
    (1.386, 1.386, 0.0, 9.21)
    """
    if x.__class__ is int and 0 <= x < _LOG_INTS:
        return _LOG_INT[x]
    return round(math.log1p(max(0.0, x)), 3)


# Amounts repeat from one event of a customer to the next (a cart's value, the total spent, the
# top affinity between two views): their logs are remembered, a dict lookup instead of a log and
# a round (about 0.3 µs). Bounded: emptied when full. Not for times, which never repeat.
_AMOUNT_LOGS: dict[float, float] = {}
_MAX_AMOUNT_LOGS = 8192  # about 0.7 MB; a batch of 500 events reads a few hundred


def _log_amount(x: float) -> float:
    """:func:`_log` of an amount, remembered.

    >>> _log_amount(3.5) == _log(3.5) == _log_amount(3.5)
    True
    """
    found = _AMOUNT_LOGS.get(x)
    if found is None:
        found = _log(x)
        if len(_AMOUNT_LOGS) >= _MAX_AMOUNT_LOGS:
            _AMOUNT_LOGS.clear()
        _AMOUNT_LOGS[x] = found
    return found


def intent_features(profile: Mapping[str, Any], event_type: str, ts_ms: int) -> dict[str, float]:
    """Purchase-intent features at event time ``ts_ms``, by name: :func:`intent_values` in a
    dict (:data:`INTENT_NAMES` order)."""
    return dict(zip(INTENT_NAMES, intent_values(profile, event_type, ts_ms), strict=True))


def intent_values(profile: Mapping[str, Any], event_type: str,
                  ts_ms: int) -> tuple[float, ...]:
    """Purchase-intent features at event time ``ts_ms``, in :data:`INTENT_NAMES` order: session,
    history and context.

    Session: views, product views, searches (``log1p``), minutes since the session started, the
    number of distinct categories, cart adds and checkout steps (read from the session's
    ``cart_adds`` and ``checkouts`` counters when the profile keeps them, else 0), and the cart
    (lines, ``log1p`` value, whether it changed in this session). History: orders and
    spend (``log1p``), days since the last purchase (capped; ``never_bought`` flags the cap),
    RFM frequency, the top category affinity and the past conversion rate (orders per session,
    at most 1). Context: hour of day and day of week as sine/cosine (UTC), the device and the
    type of the event being scored as one-hot flags.

    A tuple, not a dict: the scorer serves it to the folded model (:mod:`streamproc.models.
    folded`) and the observation (:func:`~streamproc.learning.observations.score_record`) by
    position, which saves building and reading 31 dict entries per browsing event.
    """
    s = profile.get("session")
    cart = profile["cart"]
    if s is not None:
        # Not every profile version counts cart adds and checkouts per session: 0 until it does.
        updated = cart.get("updated_ms")
        session = (_log(s["views"]), _log(s["product_views"]), _log(s["searches"]),
                   _log(min(MAX_SESSION_MIN, (ts_ms - s["start_ms"]) / 60_000)),
                   _log(len(s["categories"])), _log(s.get("cart_adds", 0)),
                   _log(s.get("checkouts", 0)),
                   1.0 if updated is not None and updated >= s["start_ms"] else 0.0)
    else:
        session = _NO_SESSION
    buys = profile["purchases"]
    orders = buys["orders"]
    last = buys.get("last_ms")
    if last is None:
        days, never = _LOG_NEVER, 1.0
    else:
        days, never = _log(min(MAX_DAYS, max(0, ts_ms - last) / DAY_MS)), 0.0
    rfm = profile.get("rfm")
    affinities = profile["affinities"]["categories"]
    sessions = profile["counts"].get("sessions", 0)
    hour = (ts_ms // HOUR_MS) % 24
    day = (ts_ms // DAY_MS + 3) % 7  # epoch day 0 was a Thursday: 0 = Monday
    # In INTENT_NAMES order (a linear model sums in it: keep it when adding a feature).
    return (*session,
            _log(len(cart["items"])), _log_amount(cart["value"]),
            _log(orders), _log_amount(buys["total"]), days, never,
            _log(rfm["frequency"]) if rfm else 0.0,
            _log_amount(max(affinities.values())) if affinities else 0.0,
            round(min(1.0, orders / sessions), 3) if sessions else 0.0,
            _HOUR_SIN[hour], _HOUR_COS[hour], _DOW_SIN[day], _DOW_COS[day],
            *_DEVICE_FLAGS.get(profile.get("device") or "", _NO_DEVICE),
            *_EVENT_FLAGS.get(event_type, _OTHER_EVENT))


def behaviour_vector(profile: Mapping[str, Any]) -> dict[str, float]:
    """What a customer is like, for clustering: interests, price level, device, buying habits.

    ``cat:<name>``: each category's share of the customer's decayed affinity (they sum to 1,
    or are absent when there is none yet). The other traits are scaled so that the shares
    dominate the distance and the traits separate customers of similar interests without
    overriding them (weights chosen on the simulator's personas, see ``bench/models_bench.py``):
    ``price`` the level of the prices in the cart and of the average order, ``log1p`` EUR over
    ``log1p(1000)``; ``basket`` the average order value on the same scale; ``buy_freq`` the share
    of days of the customer's buying life (first purchase to now) with a purchase; all three 0..1
    times their :data:`TRAIT_WEIGHTS`. ``dev_<name>``: the last device seen (the profile keeps no
    device history), :data:`DEVICE_WEIGHT` or 0.
    """
    v: dict[str, float] = {}
    affinities = profile["affinities"]["categories"]
    total = sum(affinities.values())
    if total > 0:
        for name, score in affinities.items():
            v[f"cat:{name}"] = round(score / total, 4)
    items = profile["cart"]["items"]
    buys = profile["purchases"]
    prices = [line["price"] for line in items.values()]
    avg_order = buys["total"] / buys["orders"] if buys["orders"] else 0.0
    if avg_order and prices:
        level = (sum(prices) / len(prices) + avg_order) / 2
    else:
        level = sum(prices) / len(prices) if prices else avg_order
    w = TRAIT_WEIGHTS
    v["price"] = round(w["price"] * min(1.0, math.log1p(level) / _LOG_1000), 4)
    v["basket"] = round(w["basket"] * min(1.0, math.log1p(avg_order) / _LOG_1000), 4)
    rfm = profile.get("rfm")
    days_share = (rfm["frequency"] + 1) / (rfm["T"] + 1) if rfm else 0.0
    v["buy_freq"] = round(w["buy_freq"] * days_share, 4)
    device = profile.get("device")
    for d in DEVICES:
        v[f"dev_{d}"] = DEVICE_WEIGHT if device == d else 0.0
    return v
