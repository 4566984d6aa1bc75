"""The API's clock against the client's: the receive time is the API's, a client's ``ts`` is
kept only while it is close to it.

Browsers and phones have clocks that are minutes, days or years off. An event's ``ts`` drives
sessions, label windows and timers (event time), so a far-off clock would put a customer's
events out of order, or fire their timers at once. An event whose ``ts`` is within
``STREAMPROC_API_CLOCK_TOLERANCE_S`` of the moment the API received it keeps it (the customer's
real order within a batch is preserved); outside it, or when absent, ``ts`` becomes the receive
time, and the answer says so for that event.

>>> t = 1_772_359_200_000  # 2026-03-01T10:00:00Z
>>> settle_ts("2026-03-01T09:59:58.500Z", t, 300_000)
('2026-03-01T09:59:58.500Z', None)
>>> settle_ts("2020-01-01T00:00:00Z", t, 300_000)
('2026-03-01T10:00:00.000Z', 'ts 2020-01-01T00:00:00Z is 2251 days from the server time: replaced')
>>> settle_ts(None, t, 300_000)
('2026-03-01T10:00:00.000Z', 'no ts: the server time')
"""

from __future__ import annotations

import time
from typing import Any

from streamproc.decisions.record import iso_ms
from streamproc.events.codec import parse_ts


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _distance(ms: int) -> str:
    seconds = abs(ms) / 1000
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86_400:.0f} days"


def settle_ts(ts: Any, received_ms: int, tolerance_ms: int) -> tuple[Any, str | None]:
    """The ``ts`` to keep for an event received at ``received_ms``, and why it was replaced
    (None when kept). A ``ts`` that is not a string is returned as is: the schema rejects it
    with its place, which says more than a silent replacement."""
    if ts is None:
        return iso_ms(received_ms), "no ts: the server time"
    if not isinstance(ts, str):
        return ts, None
    try:
        client_ms = parse_ts(ts)
    except (ValueError, OverflowError):
        return ts, None  # not a date-time: the schema (or the date check) says so
    off = client_ms - received_ms
    if abs(off) <= tolerance_ms:
        return ts, None
    return iso_ms(received_ms), f"ts {ts[:40]} is {_distance(off)} from the server time: replaced"
