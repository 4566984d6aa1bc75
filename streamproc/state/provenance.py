"""Where each part of a profile came from, how far it can be trusted, and the customer's data
quality score.

**Sources.** ``declared`` (the customer said it: a form, their account page), ``crm`` (the
CRM or another back office), ``inferred`` (derived from behaviour: affinities, scores, cluster,
segments, or an attribute a model sent), ``observed`` (what the customer did, seen in their own
events: cart, purchases, sessions, device, place) and ``unknown`` (an attribute stored before
provenance was kept). Their trust levels are a setting (``STREAMPROC_TRUST_LEVELS``, default
declared 3, observed 3, crm 2, inferred 1); ``unknown`` is always 0.

**What is stored.** Only the attributes of ``profile_update`` events need it (every other part
has a fixed source and carries its own time): ``p["provenance"]`` maps an attribute name
(``age_band``, ``extra``: the free-form ``extra`` map is replaced as a whole, so it has one
source) to ``[code, ts_ms]``, or ``[code, ts_ms, other_code, other_ts_ms]`` when the value
contradicts what another source said within the conflict window
(``STREAMPROC_TRUST_CONFLICT_DAYS``). A later update of the attribute settles the conflict (or
records a new one).

>>> p = {"attributes": {}}
>>> record_provenance(p, {"age_band": "25-34"}, "crm", 0, 30 * DAY_MS)
>>> p["attributes"]["age_band"] = "25-34"  # as apply_event does after it
>>> record_provenance(p, {"age_band": "35-44"}, "declared", DAY_MS, 30 * DAY_MS)
>>> p["provenance"]["age_band"]
['d', 86400000, 'c', 0]
>>> source_of(p, "attributes.age_band")
('declared', 86400000, ('crm', 0))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamproc.days import DAY_MS
from streamproc.settings import TRUST_SOURCES as SOURCES

UNKNOWN = "unknown"
CODES = {name: name[0] for name in SOURCES}  # declared d, crm c, inferred i, observed o
NAMES = {code: name for name, code in CODES.items()}
DEFAULT_LEVELS: Mapping[str, int] = {"declared": 3, "observed": 3, "crm": 2, "inferred": 1}
# The source of a profile_update without one (events from before sources were sent).
DEFAULT_UPDATE_SOURCE = "crm"

# The fixed source of every other part of the profile, and where its time is read.
SECTION_SOURCES = {
    "affinities": "inferred", "scores": "inferred", "cluster": "inferred",
    "segments": "inferred", "quality": "inferred",
    "cart": "observed", "purchases": "observed", "rfm": "observed", "session": "observed",
    "categories": "observed", "counts": "observed", "activity": "observed",
    "engagement": "observed", "feedback": "observed", "device": "observed",
    "location": "observed", "recent_products": "observed", "surroundings": "observed",
}

# The attributes the completeness of the quality score counts (the schema's named ones).
CORE_ATTRIBUTES = ("age_band", "gender", "postcode", "city", "country", "timezone",
                   "preferred_language")
# An attribute's freshness halves every this many days of event time.
FRESHNESS_HALF_LIFE_DAYS = 180.0


def record_provenance(p: dict[str, Any], changed: Mapping[str, Any], source: str, ts_ms: int,
                      conflict_ms: int) -> None:
    """Remember ``source`` and ``ts_ms`` for each attribute of a ``profile_update`` (call it
    before the attributes are applied: it compares with the values they replace)."""
    code = CODES[source]
    marks: dict[str, list[Any]] = p.setdefault("provenance", {})
    attributes = p.get("attributes") or {}
    for name, value in changed.items():
        before = marks.get(name)
        mark: list[Any] = [code, ts_ms]
        if (before and before[0] != code and name in attributes and attributes[name] != value
                and abs(ts_ms - int(before[1])) <= conflict_ms):
            mark += [before[0], int(before[1])]  # another source said otherwise, recently
        marks[name] = mark


def source_of(p: Mapping[str, Any], path: str) -> tuple[str, int | None, tuple[str, int] | None]:
    """The source of a profile ``path`` (of an attribute, or a section's fixed one), the event
    time of its attribute's last update (None: the section's own stamp says how old it is, or
    nobody knows), and the contradicting source and its time, if any.

    >>> source_of({"attributes": {"city": "Paris"}}, "attributes.city")
    ('unknown', None, None)
    >>> source_of({}, "scores.intent")
    ('inferred', None, None)
    """
    parts = path.split(".")
    if parts[0] != "attributes":
        return SECTION_SOURCES.get(parts[0], UNKNOWN), None, None
    if len(parts) < 2:
        return UNKNOWN, None, None
    mark = (p.get("provenance") or {}).get(parts[1])
    if not mark:
        return UNKNOWN, None, None
    other = (NAMES.get(mark[2], UNKNOWN), int(mark[3])) if len(mark) >= 4 else None
    return NAMES.get(mark[0], UNKNOWN), int(mark[1]), other


def trust_of(source: str, levels: Mapping[str, int]) -> int:
    return levels.get(source, 0)


def quality(p: Mapping[str, Any], ts_ms: int,
            levels: Mapping[str, int] = DEFAULT_LEVELS) -> dict[str, float]:
    """The customer's data quality at event time ``ts_ms``, each part in [0, 1]:

    - ``completeness``: the share of :data:`CORE_ATTRIBUTES` the profile has;
    - ``freshness``: the mean over those it has of 0.5 ** (age in days / 180) (unknown age: 0);
    - ``trust``: the mean over those it has of their source's level / the highest level
      (unknown source: 0; a contradicted attribute counts half);
    - ``score``: the mean of the three.

    >>> p = {"attributes": {"city": "Leeds"}, "provenance": {"city": ["d", 0]}}
    >>> quality(p, 0)
    {'score': 0.714, 'completeness': 0.143, 'freshness': 1.0, 'trust': 1.0}
    >>> quality({"attributes": {}}, 0)["score"]
    0.0
    """
    attributes = p.get("attributes") or {}
    marks = p.get("provenance") or {}
    top = max(levels.values(), default=0) or 1
    present = [a for a in CORE_ATTRIBUTES if attributes.get(a) not in (None, "")]
    fresh = trusted = 0.0
    for name in present:
        mark = marks.get(name)
        if not mark:
            continue
        age_days = max(0, ts_ms - int(mark[1])) / DAY_MS
        fresh += 0.5 ** (age_days / FRESHNESS_HALF_LIFE_DAYS)
        weight = 0.5 if len(mark) >= 4 else 1.0
        trusted += weight * min(1.0, trust_of(NAMES.get(mark[0], UNKNOWN), levels) / top)
    n = len(present)
    completeness = n / len(CORE_ATTRIBUTES)
    freshness = fresh / n if n else 0.0
    trust = trusted / n if n else 0.0
    return {"score": round((completeness + freshness + trust) / 3, 3),
            "completeness": round(completeness, 3), "freshness": round(freshness, 3),
            "trust": round(trust, 3)}
