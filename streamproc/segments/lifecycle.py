"""Lifecycle stage: ``new``, ``active``, ``at_risk``, ``lapsed`` or ``reactivated``.

Once a customer has bought, the stage follows purchases (a customer who browses every day but
has not bought for four months is at risk of not buying again); before that it follows visits.
The *anchor* is the last purchase, or for a customer who never bought the last event
(``last_seen_ms``), and ``idle`` is the days from the anchor to ``now_ms`` (event time). With the
thresholds of :class:`~streamproc.segments.config.SegmentConfig` (defaults in brackets), the first
matching line wins:

1. ``lapsed``: idle >= ``lifecycle_lapsed_days`` (180);
2. ``at_risk``: idle >= ``lifecycle_active_days`` (90);
3. ``reactivated`` (buyers only): the customer *returned* less than ``lifecycle_reactivated_days``
   (30) ago. A return is a purchase on a day at least ``lifecycle_active_days`` calendar days
   after the previous purchase day (so the customer had been at risk or lapsed), read from
   ``purchases.days``; or, when the previous lifecycle segment was ``at_risk`` or ``lapsed``,
   the last purchase (the customer came back since that segment was given);
4. ``new``: the first purchase (buyers) or first event (others) is less than
   ``lifecycle_new_days`` (30) ago;
5. ``active``: otherwise.

A profile with no event at all is ``new``. Because the anchor is event time, a customer only
becomes at risk or lapsed when something is assigned at a ``now_ms`` long after their last
purchase: on their next event, or in a periodic sweep.

>>> from streamproc.segments.config import SegmentConfig
>>> day = 86_400_000
>>> p = {"first_seen_ms": 0, "last_seen_ms": 200 * day,
...      "purchases": {"orders": 2, "first_ms": 0, "last_ms": 195 * day,
...                    "days": {"0": 20.0, "195": 35.0}}}
>>> assign_lifecycle(p, 200 * day, "active", SegmentConfig()).segment
'reactivated'
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from streamproc.days import DAY_MS, days_since, plural, reached_ms
from streamproc.segments.assignment import Assignment, Deferred
from streamproc.segments.config import SegmentConfig

SEGMENTS = ("new", "active", "at_risk", "lapsed", "reactivated")
_AWAY = frozenset({"at_risk", "lapsed"})


def last_return_day(purchase_days: Mapping[str, Any], gap_days: float) -> int | None:
    """The latest purchase day at least ``gap_days`` after the purchase day before it.

    >>> last_return_day({"1": 9.0, "100": 5.0, "110": 5.0}, 90)
    100
    """
    # Asked on every event of a buyer; the answer depends only on the days, which change
    # only when they buy on a new day.
    return _last_return_day(tuple(purchase_days), gap_days)


@lru_cache(maxsize=4096)
def _last_return_day(purchase_days: tuple[str, ...], gap_days: float) -> int | None:
    days = sorted(int(d) for d in purchase_days)
    for before, day in zip(reversed(days[:-1]), reversed(days[1:]), strict=True):
        if day - before >= gap_days:
            return day
    return None


def _days(n: float) -> str:
    return plural(int(n), "day")


def assign_lifecycle(
    profile: Mapping[str, Any], now_ms: int, previous: str | None, config: SegmentConfig
) -> Assignment:
    return lifecycle_deferred(profile, now_ms, previous, config).assignment()


def lifecycle_deferred(
    profile: Mapping[str, Any], now_ms: int, previous: str | None, config: SegmentConfig
) -> Deferred:
    """:func:`assign_lifecycle` with the reason built only when it is read, and the event time
    until which the stage holds with the same inputs (``until_ms``): the first threshold the
    days since the anchor, the return or the first purchase or visit cross next. A visitor's
    anchor is their last visit, which is their time itself (no idle days) unless a timer moved
    their clock past it: theirs holds while that stays so (``until_ms`` is ``now_ms`` when it
    is not).

    >>> from streamproc.segments.config import SegmentConfig
    >>> day = 86_400_000
    >>> buyer = {"purchases": {"orders": 1, "first_ms": 0, "last_ms": 0, "days": {"0": 9.0}}}
    >>> [(d.segment, d.until_ms // day) for d in (
    ...     lifecycle_deferred(buyer, t * day, None, SegmentConfig()) for t in (1, 40, 100))]
    [('new', 30), ('active', 90), ('at_risk', 180)]
    >>> visitor = {"first_seen_ms": 0, "last_seen_ms": 3 * day}
    >>> lifecycle_deferred(visitor, 3 * day, None, SegmentConfig()).until_ms // day
    30
    """
    purchases = profile.get("purchases") or {}
    bought = (purchases.get("orders") or 0) > 0 and purchases.get("last_ms") is not None
    if bought:
        anchor, first, what = purchases["last_ms"], purchases.get("first_ms"), "purchase"
    else:
        anchor, first, what = profile.get("last_seen_ms"), profile.get("first_seen_ms"), "visit"
    if anchor is None:
        return Deferred("new", lambda: "no activity yet")
    idle = days_since(now_ms, anchor)
    if idle >= config.lifecycle_lapsed_days:
        return Deferred("lapsed", lambda: f"last {what} {_days(idle)} ago, "
                                          f"{config.lifecycle_lapsed_days:g}+ days")
    if idle >= config.lifecycle_active_days:
        return Deferred("at_risk", lambda: f"last {what} {_days(idle)} ago, "
                                           f"{config.lifecycle_active_days:g}+ days",
                        reached_ms(anchor, config.lifecycle_lapsed_days) if bought else now_ms)
    if not bought:
        if first is not None and days_since(now_ms, first) < config.lifecycle_new_days:
            return Deferred("new", lambda: f"first {what} {_days(days_since(now_ms, first))} "
                                           "ago",
                            now_ms if idle else reached_ms(first, config.lifecycle_new_days))
        return Deferred("active", lambda: f"last {what} {_days(idle)} ago",
                        now_ms if idle else None)
    at_risk_ms = reached_ms(anchor, config.lifecycle_active_days)
    returned = last_return_day(purchases.get("days") or {}, config.lifecycle_active_days)
    since_return = None if returned is None else days_since(now_ms, returned * DAY_MS)
    if previous in _AWAY and (since_return is None or idle < since_return):
        since_return = idle  # came back since the at-risk/lapsed segment was given
    if since_return is not None and since_return < config.lifecycle_reactivated_days:
        gap, since = config.lifecycle_active_days, since_return
        # Until the return and (after an away stage) the last purchase are both that old.
        ends = [reached_ms(t, config.lifecycle_reactivated_days) for t in (
            None if returned is None else returned * DAY_MS,
            anchor if previous in _AWAY else None) if t is not None]
        return Deferred("reactivated", lambda: f"bought again {_days(since)} ago "
                                               f"after a gap of {gap:g}+ days",
                        min(at_risk_ms, max(ends)))
    if first is not None and days_since(now_ms, first) < config.lifecycle_new_days:
        return Deferred("new", lambda: f"first {what} {_days(days_since(now_ms, first))} ago",
                        min(at_risk_ms, reached_ms(first, config.lifecycle_new_days)))
    return Deferred("active", lambda: f"last {what} {_days(idle)} ago", at_risk_ms)
