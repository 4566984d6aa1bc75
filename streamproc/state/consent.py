"""Consent: what a customer allowed, with the defaults of ``STREAMPROC_CONSENT_DEFAULTS``, and
what is left of a profile while personalisation consent is missing.

A purpose is granted when the customer's latest ``consent_update`` for it says so; a purpose
the customer never answered takes its default (``defaults``: the purposes granted until
withdrawn, :meth:`streamproc.settings.Settings.consent_granted_by_default`; none by default).
Profiling (the profile beyond its consent record, scores, segments, learning, decisions) needs
the personalisation purpose. Without it the profile keeps only what honouring the answer
needs (:data:`KEPT`): the consent record, and the bookkeeping that applies each event once.

>>> p = new_profile("c1")
>>> profiling(p, frozenset()), profiling(p, frozenset({"personalisation"}))
(False, True)
>>> p["counts"]["page_view"] = 3
>>> record_consent(p, 5, {"purpose": "personalisation", "granted": False, "source": "web"})
>>> profiling(p, frozenset({"personalisation"}))
False
>>> withhold(p)
>>> p["counts"], p["consent"]["personalisation"]["granted"]
({}, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from streamproc.settings import PROFILING_PURPOSE
from streamproc.state.profile import Profile, new_profile, record_consent

__all__ = ["KEPT", "granted", "profiling", "record_consent", "withhold"]

# What a profile keeps without personalisation consent: who, what they answered, and the
# offsets and event ids already applied (so nothing is applied twice, a grant included), the
# identifiers merged into the profile and the merges applied (an erasure reaches the
# identifiers; a redelivered merge is not applied twice: docs/identity.md).
KEPT = ("customer_id", "consent", "applied", "recent_event_ids", "aliases", "merged")


def granted(p: Mapping[str, Any], purpose: str, defaults: frozenset[str]) -> bool:
    """Whether the customer allows ``purpose``: their latest answer, else its default."""
    entry = (p.get("consent") or {}).get(purpose)
    return purpose in defaults if entry is None else bool(entry.get("granted"))


def profiling(p: Mapping[str, Any], defaults: frozenset[str]) -> bool:
    """Whether the customer may be profiled (personalisation consent)."""
    return granted(p, PROFILING_PURPOSE, defaults)


def withhold(p: Profile) -> None:
    """Reduce the profile, in place, to what :data:`KEPT` names (the objects kept are the
    same, so the processor's references to ``applied`` stay valid); the rest starts again as
    in a new profile."""
    doc = cast(dict[str, Any], p)
    kept = {key: doc[key] for key in KEPT if key in doc}
    fresh = new_profile(doc.get("customer_id") or "-")
    doc.clear()
    doc.update(fresh)
    doc.update(kept)
