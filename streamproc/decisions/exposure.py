"""The exposure history on each profile: what the customer was shown or sent, and when.

It lives in ``p["decisions"]``, bounded whatever the traffic (the profile stays near 2 KB):

- ``recent``: the last ``history`` decisions a chooser picked (catalogue ``history``, default
  6; neutral actions, re-uses and ``none`` teach a chooser nothing and are not kept), oldest
  first, each ``[id, action, context, arm, propensity, ts_ms, flags]``: ``id`` is the decision
  id's first 12 hex digits (feedback finds its decision by it), ``context`` the chooser's
  context key (``slot:segment``, so it names the slot too), ``arm`` "" outside an experiment,
  ``flags`` :data:`LEARNING` when the learning chooser picked it and :data:`REWARDED` once
  feedback rewarded it (at most once).
- ``seen``: per personalised action, ``[ts_ms, slot]`` of the last time it was shown or sent,
  dropped once its freshness window is over (at most one entry per catalogue action).
- ``sent``: per message channel, ``[local_day, count]``: what the daily caps count.
- ``reveals``: the event times of the last :data:`MAX_REVEALS` decisions that revealed
  tracking (an action with ``reveals_tracking``), oldest first: what the catalogue's
  ``reveal_limit`` counts (a limit is at most :data:`MAX_REVEALS`, so keeping more would change
  no answer).

Freshness, precisely: an action shown at ``t`` is *fresh* until ``t + freshness_hours``. While
fresh it is not repeated anywhere else: not in another slot, and never again by message. A web
or app slot whose last action is still fresh (and still eligible) re-uses it: a page reload
shows the same offer, and nothing new is drawn. Once the window is over the action is a
candidate again like any other. Durable timers (cart abandonment, win-back, the
email -> SMS -> call-centre cascade) will add their pending hops beside these lists.

>>> p = {}
>>> record(p, "0123456789abcdef0123", "cart_reminder", "cart_drawer", "cart_drawer:new", "",
...        0.5, 1_000, LEARNING, history=6)
>>> find(p, "0123456789abcdef0123")
['0123456789ab', 'cart_reminder', 'cart_drawer:new', '', 0.5, 1000, 1]
>>> p["decisions"]["seen"]
{'cart_reminder': [1000, 'cart_drawer']}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from streamproc.state.profile import Profile

ID_DIGITS = 12
MAX_REVEALS = 20  # the schema's largest reveal_limit.max
LEARNING, REWARDED = 1, 2
# Positions in a ``recent`` entry.
ID, ACTION, CONTEXT, ARM, PROPENSITY, TS, FLAGS = range(7)


def section(p: Profile) -> dict[str, Any]:
    found: dict[str, Any] = p.setdefault("decisions", {"recent": [], "seen": {}, "sent": {}})
    return found


def record(p: Profile, decision_id: str, action: str, slot: str, context: str, arm: str,
           propensity: float, ts_ms: int, flags: int | None, *, history: int,
           personalised: bool = True, channel_day: tuple[str, int] | None = None,
           reveals: bool = False) -> None:
    """Remember a decision that showed or sent ``action`` in ``slot``: in ``recent`` when a
    chooser picked it (``flags`` not None), in ``seen`` when it is personalised, in ``sent``
    when its channel is capped (``channel_day``: the channel and the customer's local day), in
    ``reveals`` when it revealed tracking."""
    s = section(p)
    if reveals:
        times: list[int] = s.setdefault("reveals", [])
        times.append(ts_ms)
        del times[:-MAX_REVEALS]
    if flags is not None:
        recent: list[list[Any]] = s["recent"]
        recent.append([decision_id[:ID_DIGITS], action, context, arm, round(propensity, 4),
                       ts_ms, flags])
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
        if entry[ID] == short:
            found: list[Any] = entry
            return found
    return None


def reveals_since(p: Mapping[str, Any], since_ms: int) -> int:
    """How many decisions that revealed tracking were made after ``since_ms`` (event time)."""
    times = (p.get("decisions") or {}).get("reveals") or ()
    return sum(1 for t in times if t > since_ms)


def last_seen(p: Profile, action: str) -> tuple[int, str] | None:
    seen = ((p.get("decisions") or {}).get("seen") or {}).get(action)
    return (int(seen[0]), str(seen[1])) if seen else None


def forget_stale(p: Profile, ts_ms: int, freshness_ms: Callable[[str], int | None]) -> None:
    """Drop ``seen`` entries whose freshness window is over at ``ts_ms`` (or whose action left
    the catalogue: ``freshness_ms`` gives None). The day counters need no pruning: one per
    channel, reset by the first action of a new day."""
    s = p.get("decisions")
    if not s:
        return
    for action, (seen_ms, _) in list(s["seen"].items()):
        window = freshness_ms(action)
        if window is None or ts_ms - seen_ms >= window:
            del s["seen"][action]


def merge_history(p: Profile, other: Mapping[str, Any]) -> None:
    """Add an identifier's exposure history (``other``: its ``p["decisions"]``) to the
    customer's, as if one profile had been shown both (docs/identity.md): ``recent`` in time
    order (both; the next decision recorded trims it to the history length), ``seen`` the later
    showing of each action, the daily caps the sum of the same day's sends (the later day's
    otherwise), ``reveals`` both.

    >>> p = {}
    >>> record(p, "aaa", "x", "hero", "hero:new", "", 0.5, 2_000, LEARNING, history=6,
    ...        channel_day=("email", 20))
    >>> merge_history(p, {"recent": [["bbb", "y", "hero:new", "", 0.5, 1_000, 0]],
    ...                   "seen": {"x": [3_000, "side"]}, "sent": {"email": [20, 2]}})
    >>> [e[ACTION] for e in p["decisions"]["recent"]], p["decisions"]["seen"]["x"]
    (['y', 'x'], [3000, 'side'])
    >>> p["decisions"]["sent"]
    {'email': [20, 3]}
    """
    if not other:
        return
    s = section(p)
    theirs = list(other.get("recent") or ())
    s["recent"] = sorted(s["recent"] + theirs, key=lambda e: (e[TS], e[ID]))
    for action, seen in (other.get("seen") or {}).items():
        ours = s["seen"].get(action)
        if ours is None or seen[0] > ours[0]:
            s["seen"][action] = list(seen)
    for channel, (day, count) in (other.get("sent") or {}).items():
        ours = s["sent"].get(channel)
        if ours is None or day > ours[0]:
            s["sent"][channel] = [day, count]
        elif day == ours[0]:
            s["sent"][channel] = [day, ours[1] + count]
    if other.get("reveals"):
        s["reveals"] = sorted([*s.get("reveals", ()), *other["reveals"]])[-MAX_REVEALS:]
