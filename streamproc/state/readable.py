"""Everything stored about a customer, with times and days a person can read.

``streamproc profile`` prints the stored document as it is (epoch milliseconds, epoch day
numbers): exact, and what programs read. ``streamproc profile --human`` passes it through
:func:`readable` first: every number that is a moment (epoch milliseconds between 2000 and
2100, under whatever key or in whatever compact list) becomes an ISO 8601 UTC time, and the
day numbers that key the purchase days and activity counts become dates. Durations such as
``latency_ms`` are far smaller than any such moment and stay numbers.

>>> readable({"last_seen_ms": 1772359380000, "latency_ms": 50,
...           "purchases": {"days": {"20513": 50.0}},
...           "activity": {"cart_add:shoes": {"20513": 1}},
...           "segment_history": [["rfm", "prospect", "champions", 1772359380000]]})
... # doctest: +NORMALIZE_WHITESPACE
{'last_seen_ms': '2026-03-01T10:03:00.000Z', 'latency_ms': 50,
 'purchases': {'days': {'2026-03-01': 50.0}},
 'activity': {'cart_add:shoes': {'2026-03-01': 1}},
 'segment_history': [['rfm', 'prospect', 'champions', '2026-03-01T10:03:00.000Z']]}
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

# Moments between 2000-01-01 and 2100-01-01 in epoch milliseconds, and the same in epoch days.
_FIRST_MS, _LAST_MS = 946_684_800_000, 4_102_444_800_000
_FIRST_DAY, _LAST_DAY = _FIRST_MS // 86_400_000, _LAST_MS // 86_400_000
_EPOCH = date(1970, 1, 1)


def iso_time(ms: int) -> str:
    """``2026-03-01T10:03:00.000Z`` for epoch milliseconds, as decision records write times."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _day(key: str) -> str:
    if key.isdigit() and _FIRST_DAY <= int(key) <= _LAST_DAY:
        return (_EPOCH + timedelta(days=int(key))).isoformat()
    return key


def readable(node: Any, parent: str = "", grandparent: str = "") -> Any:
    """A copy of a stored document with moments and day numbers as ISO times and dates."""
    if isinstance(node, dict):
        days = parent == "days" or grandparent == "activity"
        return {(_day(k) if days else k): readable(v, k, parent) for k, v in node.items()}
    if isinstance(node, list):
        return [readable(v, parent, grandparent) for v in node]
    if isinstance(node, int) and not isinstance(node, bool) and _FIRST_MS <= node < _LAST_MS:
        return iso_time(node)
    return node
