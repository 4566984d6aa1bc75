"""Everything stored about a customer, with times and days a person can read.

``streamproc profile`` prints the stored document as it is (epoch milliseconds, epoch day
numbers): exact, and what programs read. ``streamproc profile --human`` passes it through
:func:`readable` first: every number that is a moment (epoch milliseconds between 2000 and
2100, under whatever key or in whatever compact list) becomes an ISO 8601 UTC time, and the
day numbers that key the purchase days and activity counts become dates. Durations such as
``latency_ms`` are far smaller than any such moment and stay numbers.

:func:`human` (what ``--human`` and the API's ``?human=true`` print) also spells out the
profile's compact parts: each attribute's source in ``provenance`` (``["d", ts_ms]`` becomes
``"declared, 3 days ago (2026-03-01T10:03:00.000Z)"``), and the lists that save space in the
stored profile (``segment_history``, ``recent_products``, the exposure history in
``decisions``, ``timers``) get named fields.

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

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from streamproc.days import DAY_MS, HOUR_MS, MINUTE_MS
from streamproc.state.provenance import NAMES, UNKNOWN

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


def ago(ms: int, now_ms: int) -> str:
    """How long before ``now_ms`` the moment ``ms`` was, as a person says it.

    >>> [ago(0, n) for n in (30_000, 5 * MINUTE_MS, 3 * HOUR_MS, 3 * DAY_MS + 1, -2 * DAY_MS)]
    ['just now', '5 min ago', '3 hours ago', '3 days ago', 'in 2 days']
    """
    delta = now_ms - ms
    later = delta < 0
    delta = abs(delta)
    if delta < MINUTE_MS:
        return "just now"
    if delta < HOUR_MS:
        n, unit = delta // MINUTE_MS, "min"
    elif delta < 2 * DAY_MS:
        n, unit = delta // HOUR_MS, "hour" if delta < 2 * HOUR_MS else "hours"
    else:
        n, unit = delta // DAY_MS, "days"
    return f"in {n} {unit}" if later else f"{n} {unit} ago"


def _source(mark: list[Any], now_ms: int) -> str:
    """``["d", ts, "c", ts2]`` -> ``"declared, 3 days ago (<ISO>); crm said otherwise ..."``."""
    def said(code: Any, ms: Any) -> str:
        return f"{NAMES.get(code, UNKNOWN)}, {ago(int(ms), now_ms)} ({iso_time(int(ms))})"

    text = said(mark[0], mark[1])
    if len(mark) >= 4:
        text += f"; contradicts what {said(mark[2], mark[3])} said"
    return text


def _date(day: Any) -> Any:
    return _day(str(day)) if isinstance(day, int) else day


# The stored layouts (see streamproc.decisions.exposure and streamproc.state.profile).
_HISTORY = ("segmentation", "from", "to", "at")
_PRODUCT = ("product_id", "category", "strongest", "at")
_RECENT = ("decision_id", "action", "context", "arm", "propensity", "at")
# A timer's partition, and its entry in that partition's index ([partition, due]).
_TIMER = {"p": "partition", "at": "indexed_as"}
_LEARNING, _REWARDED = 1, 2  # exposure.LEARNING, exposure.REWARDED (a higher layer)


def _named(fields: tuple[str, ...], entry: Any) -> Any:
    if not isinstance(entry, list) or len(entry) < len(fields):
        return entry  # not the layout this version writes: shown as stored
    return dict(zip(fields, entry, strict=False))


def _recent(entry: Any) -> Any:
    named = _named(_RECENT, entry)
    if named is entry or len(entry) < 7:
        return named
    flags = int(entry[6])
    named["chosen_by"] = "learning chooser" if flags & _LEARNING else "fixed policy"
    named["rewarded"] = bool(flags & _REWARDED)
    named["arm"] = named["arm"] or "(no experiment)"
    return named


def _spelled(p: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    out = dict(p)
    marks = p.get("provenance")
    if isinstance(marks, Mapping):
        out["provenance"] = {name: _source(mark, now_ms) if isinstance(mark, list)
                             and len(mark) >= 2 else mark for name, mark in marks.items()}
    if isinstance(p.get("segment_history"), list):
        out["segment_history"] = [_named(_HISTORY, e) for e in p["segment_history"]]
    if isinstance(p.get("recent_products"), list):
        out["recent_products"] = [_named(_PRODUCT, e) for e in p["recent_products"]]
    shown = p.get("decisions")
    if isinstance(shown, Mapping):
        shown = dict(shown)
        if isinstance(shown.get("recent"), list):
            shown["recent"] = [_recent(e) for e in shown["recent"]]
        if isinstance(shown.get("seen"), Mapping):
            shown["seen"] = {action: _named(("at", "slot"), e)
                             for action, e in shown["seen"].items()}
        if isinstance(shown.get("sent"), Mapping):
            shown["sent"] = {channel: {"local_day": _date(e[0]), "count": e[1]}
                             if isinstance(e, list) and len(e) == 2 else e
                             for channel, e in shown["sent"].items()}
        out["decisions"] = shown
    timers = p.get("timers")
    if isinstance(timers, Mapping):
        out["timers"] = {name: {_TIMER.get(k, k): v for k, v in t.items()}
                         if isinstance(t, Mapping) else t for name, t in timers.items()}
    return out


def human(shown: Mapping[str, Any], now_ms: int) -> Any:
    """What ``streamproc profile --human`` prints: :func:`readable` times and dates, and the
    profile's compact parts spelled out, each attribute's source with its age at ``now_ms``.

    >>> p = {"attributes": {"shoe_size": 42}, "provenance": {"shoe_size": ["d", 0]},
    ...      "segment_history": [["rfm", "new", "loyal", DAY_MS]]}
    >>> shown = human({"customer_id": "c1", "profile": p}, 3 * DAY_MS + HOUR_MS)["profile"]
    >>> shown["provenance"]
    {'shoe_size': 'declared, 3 days ago (1970-01-01T00:00:00.000Z)'}
    >>> shown["segment_history"]
    [{'segmentation': 'rfm', 'from': 'new', 'to': 'loyal', 'at': 86400000}]

    (Times before 2000 stay numbers: real ones are later.)
    """
    out = dict(shown)
    if isinstance(shown.get("profile"), Mapping):
        out["profile"] = _spelled(shown["profile"], now_ms)
    return readable(out)
