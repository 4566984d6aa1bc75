"""Sensitive data in conditions: what counts as sensitive, and what a file allows.

Personalising on a customer's health, religion, ethnicity, sexual orientation, political
opinion, trade-union membership, genetic or biometric data (the special categories of GDPR
article 9), or on signs of financial distress (debt, arrears, a poor credit score), is what
turns "relevant" into "creepy", and in the EU the first needs the customer's explicit consent.
The segment rules and the decision catalogue refuse such an attribute in a condition,
``requires`` or ``params_from`` unless the file allows it with a reason:

.. code-block:: yaml

    allow_sensitive:
      - {attribute: attributes.extra.pregnant, category: health,
         reason: "opt-in baby club: the customer told us, consent ref. DPO-2026-14"}
    sensitive:                     # your own names the vocabulary cannot know
      - {attribute: attributes.extra.seg_x7, category: health}

An attribute is sensitive when a word of its dotted path (split at ``. _ - :``) is in a
category's vocabulary (:data:`VOCABULARY`: ``religion``, ``diabetes``, ``debt`` ...; an entry
ending in ``*`` is a prefix), or the file declares it (or a parent of it) under ``sensitive``.
An allow entry covers its attribute and everything below it, for its one category.

>>> policy = SensitivePolicy()
>>> policy.categories("attributes.extra.religion"), policy.categories("affinities.categories.shoes")
(('religion',), ())
>>> policy.problem("activity.purchase:pregnancy_tests", "segments[0].when.count")
'segments[0].when.count: activity.purchase:pregnancy_tests is sensitive data (health, GDPR \
art. 9): remove it, or allow it with a reason under allow_sensitive: [{attribute: \
activity.purchase:pregnancy_tests, category: health, reason: ...}]'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamproc.segments.places import place_problem

# The categories, each with the words that give it away in an attribute's path. Words are
# matched whole (``gene`` is not in ``general``); ``stem*`` matches any word starting with stem;
# ``a_b`` matches the words a then b. Kept to words that rarely name anything else in a shop:
# ``party``, ``union``, ``race``, ``benefits`` or ``collections`` alone are not listed (party
# supplies, the European Union, race bikes, member benefits, summer collections).
VOCABULARY: Mapping[str, tuple[str, ...]] = {
    "health": ("health", "medical", "medication*", "medicine*", "diagnos*", "disease*",
               "illness*", "disab*", "diabet*", "pregnan*", "maternity", "fertility",
               "ivf", "hiv", "cancer", "oncolog*", "mental", "depression",
               "anxiety", "therapy", "psychiatr*", "prescription*", "pharmacy",
               "incontinence", "allerg*", "contracept*", "abortion", "addiction", "rehab",
               "weight_loss", "bmi", "pathology", "symptom*", "chronic"),
    "religion": ("religion*", "religious", "faith", "belief*", "church*", "mosque*",
                 "synagogue*", "christian*", "muslim*", "islam*", "jewish",
                 "judaism", "hindu*", "buddhis*", "sikh*", "atheis*", "kosher", "halal"),
    "ethnicity": ("ethnic*", "racial", "ethnic_origin", "skin_colour", "skin_color", "tribe",
                  "caste"),
    "sexual_orientation": ("sexual*", "sex_life", "gay", "lesbian",
                           "bisexual", "lgbt*", "queer", "transgender", "homosexual*"),
    "political_opinion": ("politic*", "party_affiliation", "voter", "voting_intention",
                          "ideology", "activis*"),
    "trade_union": ("trade_union*", "union_member*", "labour_union", "labor_union"),
    "genetic": ("genetic*", "genome*", "dna", "gene", "genes", "hereditary"),
    "biometric": ("biometric*", "fingerprint*", "face_id", "faceprint", "retina*",
                  "voiceprint"),
    "financial_distress": ("debt*", "arrears", "overdue", "overdraft*", "credit_score",
                           "credit_rating", "bankrupt*", "insolven*", "repossess*",
                           "payday", "loan_default", "defaulted", "unemploy*",
                           "hardship", "evict*", "foreclos*"),
}
CATEGORIES = (*VOCABULARY, "other")  # "other": a file's own declaration of something else
LAW = {"financial_distress": "financial distress", "other": "declared sensitive"}
GDPR = "GDPR art. 9"
# How a path is cut into words: at the dots of the path, and at _ - : inside a part.
_WORD = re.compile(r"[._:\-]+")


def _words(path: str) -> list[str]:
    return [w for w in _WORD.split(path.lower()) if w]


def _matches(entry: str, words: Sequence[str]) -> bool:
    """Whether a vocabulary entry (one word or several joined by ``_``) is in ``words``."""
    parts = entry.split("_")
    n = len(parts)
    for i in range(len(words) - n + 1):
        head = words[i:i + n - 1]
        last = words[i + n - 1]
        tail_ok = last.startswith(parts[-1][:-1]) if parts[-1].endswith("*") else (
            last == parts[-1])
        if head == parts[:-1] and tail_ok:
            return True
    return False


def _covers(prefix: str, path: str) -> bool:
    return path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + ":")


@dataclass(frozen=True)
class Allowance:
    attribute: str
    category: str
    reason: str


@dataclass(frozen=True)
class SensitivePolicy:
    """The vocabulary, plus a file's own ``sensitive`` declarations and ``allow_sensitive``."""

    declared: tuple[tuple[str, str], ...] = ()  # (attribute, category)
    allowed: tuple[Allowance, ...] = ()
    # The allowed uses met by a check: (where, attribute, the allowance).
    used: list[tuple[str, str, Allowance]] = field(default_factory=list, compare=False)

    @classmethod
    def of(cls, data: Any) -> SensitivePolicy:
        """The policy of a parsed file: its entries that are well formed (the schema reports
        the others)."""
        def entries(key: str) -> list[Mapping[str, Any]]:
            listed = data.get(key) if isinstance(data, Mapping) else None
            return [e for e in (listed if isinstance(listed, list) else ())
                    if isinstance(e, Mapping) and isinstance(e.get("attribute"), str)
                    and e.get("category") in CATEGORIES]

        return cls(tuple((e["attribute"], e["category"]) for e in entries("sensitive")),
                   tuple(Allowance(e["attribute"], e["category"], str(e.get("reason") or ""))
                         for e in entries("allow_sensitive")))

    def uses(self, data: Any, lines: dict[str, int], id_key: str
             ) -> tuple[tuple[str, str, str, str], ...]:
        """The allowed uses met, for people: (where, with the line and item id; attribute;
        category; reason)."""
        return tuple((place_problem(f"{loc}: .", data, lines, id_key)[:-3], path,
                      allowed.category, allowed.reason) for loc, path, allowed in self.used)

    def categories(self, path: str) -> tuple[str, ...]:
        """The sensitive categories ``path`` belongs to (empty: not sensitive)."""
        words = _words(path)
        found = [c for c, vocabulary in VOCABULARY.items()
                 if any(_matches(entry, words) for entry in vocabulary)]
        found += [c for attribute, c in self.declared if _covers(attribute, path)
                  and c not in found]
        return tuple(found)

    def problem(self, path: str, loc: str) -> str | None:
        """Why ``path``, used at ``loc``, is refused, or None; remembers the allowed uses."""
        refused = []
        for category in self.categories(path):
            allowance = next((a for a in self.allowed if a.category == category
                              and _covers(a.attribute, path)), None)
            if allowance is None:
                refused.append(category)
            else:
                self.used.append((loc, path, allowance))
        if not refused:
            return None
        law = ", ".join(f"{c}, {LAW.get(c, GDPR)}" for c in refused)
        return (f"{loc}: {path} is sensitive data ({law}): remove it, or allow it with a reason "
                f"under allow_sensitive: [{{attribute: {path}, category: {refused[0]}, "
                "reason: ...}]")


def describe_uses(uses: Sequence[tuple[str, str, str, str]]) -> str:
    """The allowed uses of a file, for the checking commands.

    >>> print(describe_uses([("line 9: segments[0] (name: x).when.field", "a.b", "health", "ok")]))
    sensitive data allowed:
      line 9: segments[0] (name: x).when.field: a.b (health): ok
    """
    return "sensitive data allowed:" + (" none" if not uses else "".join(
        f"\n  {where}: {attribute} ({category}): {reason}"
        for where, attribute, category, reason in uses))


def allowance_problems(data: Any) -> list[str]:
    """What the schema cannot say of ``allow_sensitive``: a reason that is only blanks."""
    listed = data.get("allow_sensitive") if isinstance(data, Mapping) else None
    return [f"allow_sensitive[{i}].reason: say why this use is fair (who agreed, on what "
            "basis); it is shown in the check's output for review"
            for i, e in enumerate(listed if isinstance(listed, list) else ())
            if isinstance(e, Mapping) and isinstance(e.get("reason"), str)
            and e["reason"] and not e["reason"].strip()]
