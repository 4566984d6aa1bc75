"""Event-time arithmetic in days: the unit of every segment threshold.

Time is event time in epoch milliseconds; a day is a UTC calendar day, ``ts_ms // DAY_MS``, as
in the profile's ``activity`` and ``purchases.days`` keys. :func:`local_time` gives the
customer's own clock (their ``attributes.timezone``): caps, quiet hours, the day parts of the
contextual policy and the ``moment.*`` fields of conditions use it.

>>> epoch_day(3 * DAY_MS + 5), days_since(10 * DAY_MS, 8 * DAY_MS + DAY_MS // 2)
(3, 1.5)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def epoch_day(ts_ms: int) -> int:
    """The UTC calendar day of an epoch-millisecond time."""
    return ts_ms // DAY_MS


def days_since(now_ms: int, then_ms: int) -> float:
    """Days from ``then_ms`` to ``now_ms``; never negative (late events can arrive)."""
    return max(0.0, (now_ms - then_ms) / DAY_MS)


def reached_ms(then_ms: int, days: float) -> int:
    """The first millisecond ``t`` with ``days_since(t, then_ms) >= days``: when a threshold of
    ``days`` from ``then_ms`` is reached, exact to the millisecond (``then_ms`` itself for
    ``days`` <= 0). The segments use it to know until when their answer holds.

    >>> reached_ms(5, 1.5) - 5 == 1.5 * DAY_MS, reached_ms(0, 1e-9)
    (True, 1)
    """
    if days <= 0:
        return then_ms
    span = math.ceil(days * DAY_MS)
    # The product above can round either way: the division days_since makes decides (spans
    # are positive here, so its max(0, ...) changes nothing).
    while span > 1 and (span - 1) / DAY_MS >= days:
        span -= 1
    while span / DAY_MS < days:
        span += 1
    return then_ms + span


def plural(n: float, word: str) -> str:
    """``1 day``, ``2 days``: for the reasons shown to people.

    >>> plural(1, "day"), plural(6, "repeat purchase day")
    ('1 day', '6 repeat purchase days')
    """
    return f"{n:g} {word}" if n == 1 else f"{n:g} {word}s"


@lru_cache(maxsize=512)
def _zone(name: str) -> tzinfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@dataclass(frozen=True)
class LocalTime:
    day: int  # proleptic Gregorian ordinal of the local date
    minute: int  # minutes after local midnight
    zone: str
    note: str | None = None  # why the zone is not the customer's own


def local_time(p: Mapping[str, Any], ts_ms: int) -> LocalTime:
    """The customer's local date and time at event time ``ts_ms``.

    >>> t = local_time({"attributes": {"timezone": "Asia/Tokyo"}}, 0)
    >>> t.minute // 60, t.zone
    (9, 'Asia/Tokyo')
    """
    name = (p.get("attributes") or {}).get("timezone")
    zone = _zone(name) if isinstance(name, str) and name else None
    note = None
    if zone is None:
        if name:
            note = f"timezone {str(name)[:40]!r} unknown: UTC used"
        zone, name = UTC, "UTC"
    moment = datetime.fromtimestamp(ts_ms / 1000, zone)
    return LocalTime(moment.date().toordinal(), moment.hour * 60 + moment.minute, str(name),
                     note)
