"""The exposure history on each profile: what the customer was shown or sent, and when.

It lives in ``p["decisions"]``, bounded whatever the traffic (the profile stays near 2 KB):

- ``recent``: the last ``history`` decisions that showed or sent something (catalogue
  ``history``, default 6), oldest first, each ``[id, action, slot, context, arm, propensity,
  ts_ms, flags]``: ``id`` is the decision id's first 16 hex digits (feedback finds its
  decision by it), ``arm`` "" outside an experiment, ``flags`` :data:`LEARNING` when the
  learning chooser picked it and :data:`REWARDED` once feedback rewarded it (at most once).
- ``seen``: per personalised action, ``[ts_ms, slot]`` of the last time it was shown or sent,
  dropped once its freshness window is over (at most one entry per catalogue action).
- ``sent``: per message channel, ``[local_day, count]``: what the daily caps count.

Freshness, precisely: an action shown at ``t`` is *fresh* until ``t + freshness_hours``. While
fresh it is not repeated anywhere else: not in another slot, and never again by message. A web
or app slot whose last action is still fresh (and still eligible) re-uses it: a page reload
shows the same offer, and nothing new is drawn. Once the window is over the action is a
candidate again like any other. Durable timers (cart abandonment, win-back, the
email -> SMS -> call-centre cascade) will add their pending hops beside these lists.

>>> p = {}
>>> record(p, "0123456789abcdef0123", "cart_reminder", "cart_drawer", "cart_drawer:new", "",
...        0.5, 1_000, True, history=6)
>>> find(p, "0123456789abcdef0123")[1], p["decisions"]["seen"]
('cart_reminder', {'cart_reminder': [1000, 'cart_drawer']})
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ID_DIGITS = 16
LEARNING, REWARDED = 1, 2
Profile = dict[str, Any]


def section(p: Profile) -> dict[str, Any]:
    found: dict[str, Any] = p.setdefault("decisions", {"recent": [], "seen": {}, "sent": {}})
    return found


def record(p: Profile, decision_id: str, action: str, slot: str, context: str, arm: str,
           propensity: float, ts_ms: int, learning: bool, *, history: int,
           personalised: bool = True, channel_day: tuple[str, int] | None = None) -> None:
    """Remember a decision that showed or sent ``action`` in ``slot``."""
    s = section(p)
    recent: list[list[Any]] = s["recent"]
    recent.append([decision_id[:ID_DIGITS], action, slot, context, arm,
                   round(propensity, 6), ts_ms, LEARNING if learning else 0])
    del recent[:-history]
    if personalised:
        seen = s["seen"].get(action)
        if seen is None or ts_ms >= seen[0]:
            s["seen"][action] = [ts_ms, slot]
    if channel_day is not None:
        channel, day = channel_day
        sent = s["sent"].get(channel)
        s["sent"][channel] = [day, sent[1] + 1 if sent and sent[0] == day else 1]


def find(p: Profile, decision_id: str) -> list[Any] | None:
    """The recent entry of a decision, or None when it is not (or no longer) remembered."""
    short = decision_id[:ID_DIGITS]
    for entry in reversed((p.get("decisions") or {}).get("recent", ())):
        if entry[0] == short:
            found: list[Any] = entry
            return found
    return None


def last_seen(p: Profile, action: str) -> tuple[int, str] | None:
    seen = ((p.get("decisions") or {}).get("seen") or {}).get(action)
    return (int(seen[0]), str(seen[1])) if seen else None


def forget_stale(p: Profile, ts_ms: int, freshness_ms: Callable[[str], int | None]) -> None:
    """Drop ``seen`` entries whose freshness window is over at ``ts_ms`` (or whose action left
    the catalogue: ``freshness_ms`` gives None), and day counters of past days."""
    s = p.get("decisions")
    if not s:
        return
    for action, (seen_ms, _) in list(s["seen"].items()):
        window = freshness_ms(action)
        if window is None or ts_ms - seen_ms >= window:
            del s["seen"][action]
