"""Data you can trust: an action's ``min_trust``, checked on the profile, and the words that
say which data drove a decision.

An action reads profile fields in its ``when``, ``requires`` and ``params_from``
(:func:`fields_read`). Its ``min_trust`` (a source: every field read; or a map of profile path
to source: the fields under each path) asks each field that is there for a source at least as
trusted as that one (levels: ``STREAMPROC_TRUST_LEVELS``; sources and where they are kept:
:mod:`streamproc.state.provenance`). A field below it, or contradicted by another source within
the conflict window, makes the action no candidate, with the reason; when no candidate is
left, the decision is the slot's neutral action with those reasons.

>>> from streamproc.state.provenance import DEFAULT_LEVELS
>>> p = {"attributes": {"extra": {"tier": "gold"}}, "provenance": {"extra": ["c", 0]}}
>>> trust_problem(p, (("attributes.extra.tier", "declared"),), 2 * DAY_MS, DEFAULT_LEVELS)
'data too weak: attributes.extra.tier from crm (trust 2, 2 days old), needs declared (3) or better'
>>> data_trail(p, ("attributes.extra.tier", "cart.value"), 2 * DAY_MS, DEFAULT_LEVELS)
'data: attributes.extra.tier from crm (trust 2, 2 days old)'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from typing import Any

from streamproc.days import DAY_MS, HOUR_MS
from streamproc.segments.profilepath import MISSING, getter
from streamproc.state.provenance import source_of, trust_of

# The timestamp that says how old a section of the profile is, for data-quality checks.
# Sections not listed have no age: only their absence is checked.
SECTION_STAMPS = {
    "cart": "cart.updated_ms",
    "session": "session.last_ms",
    "purchases": "purchases.last_ms",
    "rfm": "purchases.last_ms",
    "affinities": "affinities.ts_ms",
    "categories": "last_seen_ms",
    "scores": "last_seen_ms",
    "segments": "last_seen_ms",
    "surroundings": "surroundings.ts_ms",
}
# At most this many fields named in a decision's "data:" reason.
TRAIL_FIELDS = 4


def fields_read(action: Mapping[str, Any]) -> tuple[str, ...]:
    """The profile fields an action (as written in the file) reads, in order, once each: its
    ``when``'s fields (not ``moment.*``; a ``count`` reads ``activity``), ``requires``, then
    ``params_from`` (not ``event.*``).

    >>> fields_read({"when": {"all": [{"field": "cart.value", "op": ">", "value": 0},
    ...     {"count": {"event": "search", "within_days": 7, "at_least": 1}}]},
    ...     "params_from": {"v": "cart.value", "q": "event.query"}})
    ('cart.value', 'activity')
    """
    found: list[str] = []

    def walk(node: Any) -> None:
        if not isinstance(node, Mapping):
            return
        for key in ("all", "any"):
            for child in node.get(key) or ():
                walk(child)
        walk(node.get("not"))
        if "count" in node:
            found.append("activity")
        path = node.get("field")
        if isinstance(path, str) and not path.startswith("moment."):
            found.append(path)

    walk(action.get("when"))
    found += [p for p in action.get("requires") or () if isinstance(p, str)]
    found += [p for p in (action.get("params_from") or {}).values()
              if isinstance(p, str) and not p.startswith("event.")]
    return tuple(dict.fromkeys(found))


def gates(action: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """(field, least trusted source accepted) for each field an action's ``min_trust`` covers.

    >>> gates({"requires": ["attributes.city", "cart.value"], "min_trust": {"attributes": "crm"}})
    (('attributes.city', 'crm'),)
    """
    wanted = action.get("min_trust")
    if wanted is None:
        return ()
    read = fields_read(action)
    if isinstance(wanted, str):
        return tuple((path, wanted) for path in read)
    out = []
    for path in read:
        under = [k for k in wanted if path == k or path.startswith(k + ".")]
        if under:
            out.append((path, wanted[max(under, key=len)]))
    return tuple(out)


def age_text(ms: float) -> str:
    """How old, for people: minutes, hours, then days.

    >>> age_text(600_000), age_text(5 * HOUR_MS), age_text(3 * DAY_MS)
    ('10 min old', '5 h old', '3 days old')
    """
    if ms < HOUR_MS:
        return f"{max(0.0, ms) / 60_000:.0f} min old"
    if ms < 2 * DAY_MS:
        return f"{ms / HOUR_MS:.0f} h old"
    return f"{ms / DAY_MS:.0f} days old"


@cache
def _read(path: str) -> Callable[[Mapping[str, Any]], Any]:
    return getter(path)


def _stamp(p: Mapping[str, Any], path: str, at: int | None) -> int | None:
    """When the field was last set: its attribute's update, else its section's stamp."""
    if at is not None:
        return at
    section = path.split(".")[0]
    where = SECTION_STAMPS.get(section, "last_seen_ms" if section in ("activity", "counts")
                               else None)
    stamp = _read(where)(p) if where else MISSING
    return int(stamp) if isinstance(stamp, int | float) else None


def describe(p: Mapping[str, Any], path: str, ts_ms: int, levels: Mapping[str, int]) -> str:
    """``attributes.city from crm (trust 2, 3 days old)``."""
    source, at, _ = source_of(p, path)
    stamp = _stamp(p, path, at)
    age = f", {age_text(ts_ms - stamp)}" if stamp is not None else ", age unknown"
    return f"{path} from {source} (trust {trust_of(source, levels)}{age})"


def trust_problem(p: Mapping[str, Any], required: Sequence[tuple[str, str]], ts_ms: int,
                  levels: Mapping[str, int], max_age_ms: int | None = None) -> str | None:
    """Why the fields an action's ``min_trust`` covers cannot be trusted, or None: too weak a
    source, contradicted, or (an attribute, with ``max_age_ms``: the action's
    ``max_data_age_hours``) updated too long ago. A field that is absent passes (the action's
    ``when`` and ``requires`` decide about absence)."""
    for path, least in required:
        if _read(path)(p) is MISSING:
            continue
        source, at, other = source_of(p, path)
        have, need = trust_of(source, levels), trust_of(least, levels)
        if have < need:
            return (f"data too weak: {describe(p, path, ts_ms, levels)}, needs {least} "
                    f"({need}) or better")
        if max_age_ms is not None and at is not None and ts_ms - at > max_age_ms:
            return (f"data stale: {describe(p, path, ts_ms, levels)}, at most "
                    f"{age_text(max_age_ms).removesuffix(' old')}")
        if other is not None:
            return (f"data contradictory: {describe(p, path, ts_ms, levels)} differs from what "
                    f"{other[0]} said {age_text((at or ts_ms) - other[1]).removesuffix(' old')}"
                    " before")
    return None


def data_trail(p: Mapping[str, Any], fields: Iterable[str], ts_ms: int,
               levels: Mapping[str, int]) -> str | None:
    """The reason naming the data a decision was made on, its sources, trust and age (the
    fields that are there, at most :data:`TRAIL_FIELDS`), or None when it read none."""
    shown = [describe(p, path, ts_ms, levels) for path in fields
             if _read(path)(p) is not MISSING][:TRAIL_FIELDS]
    return f"data: {'; '.join(shown)}" if shown else None


# The profile section each contextual feature (streamproc.decisions.contextual) is read from,
# by name prefix; the moment's features (hour_*, weekend) come from the event's time.
FEATURE_SECTIONS = (("intent", "scores"), ("cluster_", "segments"), ("value_", "segments"),
                    ("recency", "purchases"), ("basket", "cart"), ("device_", "device"),
                    ("engagement", "engagement"), ("weather_", "surroundings"),
                    ("temp_", "surroundings"))


def features_trail(features: Mapping[str, float], levels: Mapping[str, int]) -> str | None:
    """The reason naming the sources and trust of the features a contextual pick used.

    >>> features_trail({"bias": 1.0, "intent": 0.8, "basket": 0.4, "hour_lunch": 1.0,
    ...                 "temp_cold": 1.0}, {"inferred": 1, "observed": 3})
    'features from inferred data (trust 1): intent; observed (trust 3): basket, temp_cold'
    """
    by_source: dict[str, list[str]] = {}
    for name in features:
        section = next((s for prefix, s in FEATURE_SECTIONS if name.startswith(prefix)), None)
        if section is not None:
            by_source.setdefault(source_of({}, section)[0], []).append(name)
    if not by_source:
        return None
    parts = [f"{source} (trust {trust_of(source, levels)}): {', '.join(names)}"
             for source, names in by_source.items()]
    return f"features from {parts[0].replace(' (', ' data (', 1)}" + "".join(
        f"; {p}" for p in parts[1:])

