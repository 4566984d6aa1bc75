"""Durable, event-time timers: cart abandonment, time-driven lifecycle moves (win-back) and the
email -> SMS -> call-centre cascade.

**What a timer is.** A customer's armed timers live in the profile, ``p["timers"]``: name ->
``{"due": ms, "p": partition, "at": [partition, due] | None, ...}``, saved in the same atomic
compare-and-set as the rest of the state. Three kinds:

* a catalogue trigger with ``after`` (e.g. ``cart_abandoned``: 60 minutes after the last
  ``cart_add`` unless a ``purchase``): every event of the ``after.event`` type (re)arms it at
  event time + minutes, an ``unless`` event disarms it; when it fires the trigger's ``when`` is
  checked (the cart still holds something) and it decides like any trigger;
* ``lifecycle``: the next moment the customer's lifecycle stage changes by time alone (last
  purchase, or last visit for those who never bought, + ``lifecycle_active_days`` -> at risk,
  + ``lifecycle_lapsed_days`` -> lapsed). When it fires the customer is re-segmented at that
  time, so the move is published and ``segment_entry`` triggers (win-back) fire without
  waiting for the customer's next event;
* ``cascade.<trigger>``: a trigger with ``cascade`` steps follows its personalised message up:
  step *i* decides for its slot ``after_hours`` after the step before, carrying the message
  over (same action, when it is eligible on that channel), unless a decision of the cascade was
  opened, clicked or converted (a feedback event naming it) or the customer bought since the
  cascade began. Every step passes consent, caps, quiet hours and eligibility again: a step in
  quiet hours waits for their end, a step whose channel is closed passes to the next step, a
  step that can only give the neutral action ends the cascade.

A fired timer moves the customer's clock (``p["clock_ms"]``) to its due time: segments are
then assigned as of that time (a late event does not turn a lapsed customer back into an active
one), and the lifecycle timer is armed from it.

**When timers fire: event time.** Each input partition number has a *watermark*, the latest
event time seen on that partition of any input topic (Redis, so it survives restarts and moves
with the partition). After each batch the worker raises the watermarks of the partitions it read
and fires the timers due by watermark - ``STREAMPROC_TIMER_LATENESS_SECONDS`` (disorder waited
out, e.g. a purchase that arrives on another topic a little after the cart events). Like Kafka
Streams' stream-time punctuation, a partition with no new events does not move its timers on.
A timer's time is its due time: its decision's ``ts`` and decision id follow from the events
that armed it, so a replay fires the same timers with the same decision ids.

**The index.** Per partition number, a sorted set of ``<customer>|<name>|<due>`` scored by due
time (:func:`streamproc.state.keys.timer_index_key`), written in the customer's
compare-and-set. The profile is the truth; the index only says when to look: an entry whose
timer moved later is re-indexed when it comes due (so an armed lifecycle timer, which moves on
every visit, costs one index write per period, not one per event), an entry whose timer is gone
is dropped. A fired timer's entry is removed only once the batch's records are published: a
worker that dies in between leaves it, and the next owner publishes the fired timer's decisions
again from the customer's outbox (same decision ids) instead of losing them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamproc.days import DAY_MS, MINUTE_MS, local_time
from streamproc.decisions.catalogue import LIFECYCLE_TIMER, Catalogue, Trigger
from streamproc.decisions.guardrails import in_quiet_hours
from streamproc.segments.config import SegmentConfig
from streamproc.state.keys import timer_index_key
from streamproc.state.profile import Profile

CASCADE = "cascade."
# Feedback on a cascade's decision that ends it: the customer responded.
RESPONSES = frozenset({"open", "click", "conversion"})


@dataclass(frozen=True)
class Due:
    """An index entry that came due."""

    customer_id: str
    name: str
    due_ms: int
    partition: int
    member: str


def member(customer_id: str, name: str, due_ms: int) -> str:
    """An index member. Customer ids and timer names never hold ``|``.

    >>> member("c-1", "cart_abandoned", 3_600_000)
    'c-1|cart_abandoned|3600000'
    """
    return f"{customer_id}|{name}|{due_ms}"


def parse_member(text: str, partition: int) -> Due | None:
    """An index member read back, or None when it is not one of ours.

    >>> parse_member("c-1|lifecycle|42", 3)
    Due(customer_id='c-1', name='lifecycle', due_ms=42, partition=3, member='c-1|lifecycle|42')
    >>> parse_member("junk", 3) is None
    True
    """
    parts = text.split("|")
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return Due(parts[0], parts[1], int(parts[2]), partition, text)


def armed(p: Profile) -> dict[str, dict[str, Any]]:
    timers: dict[str, dict[str, Any]] = p.setdefault("timers", {})
    return timers


def arm(p: Profile, name: str, due_ms: int, partition: int, **extra: Any) -> None:
    """(Re)arm timer ``name``; its index entry is kept while the due time only moves later."""
    timers = armed(p)
    old = timers.get(name)
    entry: dict[str, Any] = {"due": int(due_ms), "p": partition, **extra}
    if old is not None and old.get("at"):
        entry["at"] = old["at"]
    timers[name] = entry


def disarm(p: Profile, name: str) -> None:
    armed(p).pop(name, None)


def indexed(p: Profile) -> set[tuple[int, int, str]]:
    """The index entries the profile's timers have: (partition, due, name)."""
    return {(e["at"][0], e["at"][1], name) for name, e in (p.get("timers") or {}).items()
            if e.get("at")}


@dataclass(frozen=True)
class IndexChange:
    entries: tuple[tuple[str, str], ...]  # every entry after the write (key, member)
    add: tuple[tuple[str, str, int], ...]
    remove: tuple[tuple[str, str], ...]


# Where settle notes the index entries of a write, in the notes kept with the profile.
INDEX_NOTE = "timer_index"


def settle(p: Profile, customer_id: str, app_id: str, before: set[tuple[int, int, str]],
           fired: Iterable[tuple[int, int, str]] = (),
           notes: dict[str, Any] | None = None) -> IndexChange:
    """Index what needs it (a new timer, or one due earlier than its entry) and say which
    entries to add and remove. ``fired`` entries stay until the batch is published.

    ``notes``: a dict kept with the profile from one write to the next (the processor's,
    with its cached profile), where the entries of a write that fired nothing are noted: the
    next write whose timers are indexed as they were (nearly all: an armed timer that moves
    later keeps its entry) takes them again instead of building them.
    """
    for e in (p.get("timers") or {}).values():
        at = e.get("at")
        if not at or e["due"] < at[1]:
            e["at"] = [e["p"], e["due"]]
    after = indexed(p)
    kept = set(fired)
    noted = None if notes is None else notes.get(INDEX_NOTE)
    if noted is not None and not kept and noted[0] == after == before:
        return IndexChange(noted[1], (), ())

    def entry(part: int, due: int, name: str) -> tuple[str, str]:
        return timer_index_key(app_id, part), member(customer_id, name, due)

    change = IndexChange(
        tuple(sorted(entry(*t) for t in after | kept)),
        tuple((*entry(*t), t[1]) for t in sorted(after - before)),
        tuple(entry(*t) for t in sorted(before - after - kept)),
    )
    if notes is not None:
        notes[INDEX_NOTE] = None if kept else (after, change.entries)
    return change


def next_lifecycle_due(p: Profile, ts_ms: int, config: SegmentConfig) -> int | None:
    """When the customer next turns at risk or lapsed by time alone (after ``ts_ms``).

    >>> from streamproc.segments.config import SegmentConfig
    >>> p = {"purchases": {"orders": 1, "last_ms": 0}, "last_seen_ms": 5 * DAY_MS}
    >>> next_lifecycle_due(p, 5 * DAY_MS, SegmentConfig()) // DAY_MS
    90
    >>> next_lifecycle_due(p, 100 * DAY_MS, SegmentConfig()) // DAY_MS
    180
    """
    buys = p.get("purchases") or {}
    bought = (buys.get("orders") or 0) > 0 and buys.get("last_ms") is not None
    anchor = buys["last_ms"] if bought else p.get("last_seen_ms")
    if anchor is None:
        return None
    for days in (config.lifecycle_active_days, config.lifecycle_lapsed_days):
        due = int(anchor + days * DAY_MS)
        if due > ts_ms:
            return due
    return None


def quiet_wait_ms(p: Profile, cat: Catalogue, channel: str, ts_ms: int) -> int:
    """How long until ``channel``'s quiet hours end in the customer's time (0: not quiet).

    >>> from streamproc.decisions.catalogue import load_catalogue, default_catalogue_path
    >>> cat = load_catalogue(default_catalogue_path())  # sms quiet 20:00-09:00
    >>> quiet_wait_ms({"attributes": {}}, cat, "sms", 22 * 3_600_000) // 3_600_000
    11
    >>> quiet_wait_ms({"attributes": {}}, cat, "sms", 12 * 3_600_000)
    0
    """
    cap = cat.caps.get(channel)
    if cap is None or not cap.quiet_hours:
        return 0
    now = local_time(p, ts_ms)
    if not in_quiet_hours(now.minute, cap.quiet_hours):
        return 0
    return ((cap.quiet_hours[1] - now.minute) % 1440) * MINUTE_MS - ts_ms % MINUTE_MS


def cascade_continues(record: Mapping[str, Any]) -> bool:
    """Whether a decision calls for the next cascade step: it sent a personalised message, or
    its channel was closed (consent, caps) so the next channel may reach the customer."""
    return bool(record["personalised"]) or record.get("context") is None


def arm_cascades(p: Profile, cat: Catalogue, records: Sequence[Mapping[str, Any]],
                 ts_ms: int, partition: int) -> None:
    """Start the cascade of each decision whose trigger has one."""
    for r in records:
        t = _trigger(cat, r["trigger"].get("name"))
        if t is None or not t.cascade or not cascade_continues(r):
            continue
        arm(p, CASCADE + t.id, ts_ms + t.cascade[0].ms, partition, step=0,
            ids=[r["decision_id"]], action=r["action"]["id"] if r["personalised"] else None,
            since=ts_ms, trigger=t.id)


def after_event(p: Profile, cat: Catalogue, event_type: str, ts_ms: int,
                data: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                config: SegmentConfig | None, partition: int) -> None:
    """Arm, move and disarm the customer's timers after an event (applied to ``p``, with the
    decisions it caused)."""
    for t in cat.triggers:
        if t.after is None:
            continue
        if event_type == t.after.event:
            arm(p, t.id, ts_ms + t.after.ms, partition)
        elif event_type in t.after.unless:
            disarm(p, t.id)
    for name, e in list((p.get("timers") or {}).items()):
        if not name.startswith(CASCADE):
            continue
        if event_type == "purchase" and ts_ms >= e["since"]:
            disarm(p, name)  # converted
        elif (event_type == "feedback" and data.get("outcome") in RESPONSES
              and data.get("decision_id") in e["ids"]):
            disarm(p, name)  # responded
    arm_cascades(p, cat, records, ts_ms, partition)
    if config is not None:
        # From the customer's time: a late event must not arm a checkpoint already passed.
        due = next_lifecycle_due(p, max(ts_ms, p.get("clock_ms") or 0), config)
        if due is None:
            disarm(p, LIFECYCLE_TIMER)
        else:
            arm(p, LIFECYCLE_TIMER, due, partition)


def _trigger(cat: Catalogue, trigger_id: str | None) -> Trigger | None:
    return next((t for t in cat.triggers if t.id == trigger_id), None)


def trigger_of_timer(cat: Catalogue, name: str, entry: Mapping[str, Any]) -> Trigger | None:
    """The catalogue trigger a timer belongs to (None: lifecycle, or gone from the catalogue)."""
    if name.startswith(CASCADE):
        return _trigger(cat, entry.get("trigger"))
    return _trigger(cat, name)


def merge_timers(p: Profile, other: Mapping[str, dict[str, Any]], partition: int) -> None:
    """Take over an identifier's armed timers (``other``: its ``p["timers"]``) on the
    customer's ``partition`` (docs/identity.md): a timer the customer has too keeps the later
    due time (the later cart_add's abandonment); the identifier's index entries were dropped
    with its profile, these are indexed anew by the customer's write (:func:`settle`)."""
    timers = armed(p)
    for name, entry in other.items():
        ours = timers.get(name)
        if ours is None or entry["due"] > ours["due"]:
            timers[name] = {**entry, "p": partition, "at": ours.get("at") if ours else None}
