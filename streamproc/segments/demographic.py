"""Demographic segmentations: ``age_band``, ``gender`` and ``country``.

Age band and gender come from the declared attributes (``profile_update``); country from the
declared home country, else the country seen in the last event context (``location.country``).
Anything not known is ``unknown``.

>>> assign_demographics({"attributes": {"gender": "female"}, "location": {"country": "IE"}})
{'age_band': Assignment(segment='unknown', reason='age band not declared'), \
'gender': Assignment(segment='female', reason='declared'), \
'country': Assignment(segment='IE', reason='seen in event context')}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamproc.segments.assignment import Assignment

UNKNOWN = "unknown"
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
GENDERS = ("female", "male", "non_binary", "undisclosed")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def assign_demographics(profile: Mapping[str, Any]) -> dict[str, Assignment]:
    attributes = profile.get("attributes") or {}
    location = profile.get("location") or {}
    out: dict[str, Assignment] = {}
    for key, label in (("age_band", "age band"), ("gender", "gender")):
        value = _text(attributes.get(key))
        out[key] = (Assignment(value, "declared") if value
                    else Assignment(UNKNOWN, f"{label} not declared"))
    declared, seen = _text(attributes.get("country")), _text(location.get("country"))
    if declared:
        out["country"] = Assignment(declared, "declared home country")
    elif seen:
        out["country"] = Assignment(seen, "seen in event context")
    else:
        out["country"] = Assignment(UNKNOWN, "country not known")
    return out
