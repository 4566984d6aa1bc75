"""Event-time arithmetic in days: the unit of every segment threshold.

Time is event time in epoch milliseconds; a day is a UTC calendar day, ``ts_ms // DAY_MS``, as
in the profile's ``activity`` and ``purchases.days`` keys.

>>> epoch_day(3 * DAY_MS + 5), days_since(10 * DAY_MS, 8 * DAY_MS + DAY_MS // 2)
(3, 1.5)
"""

from __future__ import annotations

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def epoch_day(ts_ms: int) -> int:
    """The UTC calendar day of an epoch-millisecond time."""
    return ts_ms // DAY_MS


def days_since(now_ms: int, then_ms: int) -> float:
    """Days from ``then_ms`` to ``now_ms``; never negative (late events can arrive)."""
    return max(0.0, (now_ms - then_ms) / DAY_MS)


def plural(n: float, word: str) -> str:
    """``1 day``, ``2 days``: for the reasons shown to people.

    >>> plural(1, "day"), plural(6, "repeat purchase day")
    ('1 day', '6 repeat purchase days')
    """
    return f"{n:g} {word}" if n == 1 else f"{n:g} {word}s"
