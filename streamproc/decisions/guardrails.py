"""The guardrails every decision passes: consent, quiet hours, frequency caps, data quality,
and the limit on decisions that reveal tracking.

Pure functions of the profile, the catalogue and the event time. Each returns None when the
way is open, or the reason it is not, in words a person can read in the decision record.

Consent: a purpose in ``defaults`` (those ``STREAMPROC_CONSENT_DEFAULTS`` grants; none by
default) is granted until the customer withdraws it; every other purpose needs the customer's
grant (:mod:`streamproc.state.consent`). Caps and quiet hours are read in the customer's local
time (``attributes.timezone``, an IANA name; UTC when absent or unknown).

>>> p = {"consent": {"email": {"granted": False}}, "attributes": {}}
>>> consent_problem(p, "email", frozenset({"email"}))
'no email consent (withdrawn)'
>>> consent_problem(p, "sms", frozenset())
'no sms consent (never given)'
>>> in_quiet_hours(22 * 60 + 30, (22 * 60, 7 * 60)), in_quiet_hours(12 * 60, (22 * 60, 7 * 60))
(True, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamproc.days import HOUR_MS, LocalTime
from streamproc.decisions import exposure
from streamproc.decisions.catalogue import Action, Cap, RevealLimit
from streamproc.decisions.trust import SECTION_STAMPS
from streamproc.segments.profilepath import MISSING, getter
from streamproc.state.consent import granted

# The channel whose own consent a message needs.
CHANNEL_PURPOSE = {"email": "email", "sms": "sms", "push": "push", "call_centre": "call_centre"}

_STAMP_READERS = {section: getter(path) for section, path in SECTION_STAMPS.items()}


def consent_problem(p: Mapping[str, Any], purpose: str, defaults: frozenset[str]) -> str | None:
    """Why ``purpose`` is not allowed, or None (``defaults``: the purposes granted until
    withdrawn)."""
    if granted(p, purpose, defaults):
        return None
    entry = (p.get("consent") or {}).get(purpose)
    return f"no {purpose} consent ({'withdrawn' if entry is not None else 'never given'})"


def in_quiet_hours(minute: int, quiet: tuple[int, int]) -> bool:
    """Whether a local time falls in [start, end), which may span midnight."""
    start, end = quiet
    return start <= minute < end if start < end else minute >= start or minute < end


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def sent_today(p: Mapping[str, Any], channel: str, day: int) -> int:
    """Actions on ``channel`` on local day ``day`` (the exposure history's counter)."""
    entry = ((p.get("decisions") or {}).get("sent") or {}).get(channel)
    return int(entry[1]) if entry and entry[0] == day else 0


def channel_problem(p: Mapping[str, Any], channel: str, cap: Cap | None, now: LocalTime,
                    defaults: frozenset[str]) -> str | None:
    """Why nothing may go out on ``channel`` now, or None: consent, quiet hours, daily cap."""
    purpose = CHANNEL_PURPOSE.get(channel)
    if purpose is not None:
        problem = consent_problem(p, purpose, defaults)
        if problem:
            return f"{problem}: nothing sent by {channel}"
    if cap is None:
        return None
    if cap.quiet_hours and in_quiet_hours(now.minute, cap.quiet_hours):
        start, end = cap.quiet_hours
        return (f"quiet hours for {channel} ({_hhmm(start)}-{_hhmm(end)} {now.zone}; "
                f"it is {_hhmm(now.minute)})")
    if cap.per_day is not None:
        sent = sent_today(p, channel, now.day)
        if sent >= cap.per_day:
            return f"{channel} cap reached: {sent} of {cap.per_day} today ({now.zone})"
    return None


def reveal_problem(p: Mapping[str, Any], limit: RevealLimit, ts_ms: int) -> str | None:
    """Why one more decision that reveals tracking ("you looked at X") may not be made at
    ``ts_ms``, or None: the customer had ``limit.max`` of them in the last ``per_days`` days.

    >>> p = {"decisions": {"reveals": [0]}}
    >>> reveal_problem(p, RevealLimit(1, 7), 86_400_000)
    'reveals tracking: 1 such decision in the last 7 days, at most 1 (reveal_limit)'
    >>> reveal_problem(p, RevealLimit(1, 7), 8 * 86_400_000) is None
    True
    """
    shown = exposure.reveals_since(p, ts_ms - limit.window_ms)
    if shown < limit.max:
        return None
    return (f"reveals tracking: {shown} such decision{'s' if shown != 1 else ''} in the last "
            f"{limit.per_days:g} days, at most {limit.max} (reveal_limit)")


def hours_text(ms: float) -> str:
    """A duration for people: minutes under an hour, hours above.

    >>> hours_text(1_800_000), hours_text(7_200_000)
    ('30 min', '2 h')
    """
    hours = ms / HOUR_MS
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.0f} h"


def ago_text(ms: float) -> str:
    """How long before the event something happened; a late or replayed event can come before.

    >>> ago_text(7_200_000), ago_text(-1_800_000)
    ('2 h ago', "30 min after this event's time (a late or replayed event)")
    """
    if ms >= 0:
        return f"{hours_text(ms)} ago"
    return f"{hours_text(-ms)} after this event's time (a late or replayed event)"


def data_problem(p: Mapping[str, Any], action: Action, ts_ms: int,
                 event_data: Mapping[str, Any]) -> str | None:
    """Why the data ``action`` needs (``requires`` and ``params_from``) is missing or stale."""
    plain = set(action.params_from.values())  # parameters must be plain values
    for path in [*action.requires, *action.params_from.values()]:
        if path.startswith("event."):
            value = getter(path[len("event."):])(event_data)
        else:
            value = getter(path)(p)
        if value is MISSING:
            return f"data missing: {path}"
        if path in plain and not isinstance(value, (str, int, float, bool)):
            return f"data unusable: {path} is not a plain value"
        if path.startswith("event."):
            continue
        if action.max_age_ms is None:
            continue
        read_stamp = _STAMP_READERS.get(path.split(".")[0])
        if read_stamp is None:
            continue
        stamp = read_stamp(p)
        if stamp is MISSING:
            return f"data of unknown age: {path} ({SECTION_STAMPS[path.split('.')[0]]} missing)"
        age = ts_ms - int(stamp)
        if age > action.max_age_ms:
            return (f"data stale: {path} is {hours_text(age)} old "
                    f"(at most {hours_text(action.max_age_ms)})")
    return None


def params_of(p: Mapping[str, Any], action: Action,
              event_data: Mapping[str, Any]) -> dict[str, Any]:
    """The action's parameters: the fixed ones, then those read from the profile or event
    (only plain values; :func:`data_problem` has checked they are there)."""
    params = dict(action.params)
    for name, path in action.params_from.items():
        source, where = (event_data, path[len("event."):]) if path.startswith("event.") else (
            p, path)
        value = getter(where)(source)
        if isinstance(value, (str, int, float, bool)):
            params[name] = value
    return params
