"""Value tier from lifetime value: historical spend (``purchases.total``) plus, when the worker
scores it, the expected spend over the next year (``scores.ltv``, the lifetime-value model of
:mod:`streamproc.models.ltv`: BG/NBD purchases times Gamma-Gamma order value, population
parameters fitted online by the learner).

- ``very_profitable``: spent at least ``tier_very_profitable`` (default 1,000);
- ``profitable``: at least ``tier_profitable`` (250);
- ``emerging``: at least ``tier_emerging`` (50);
- ``unprofitable``: less, including customers who never bought.

Amounts are summed as received: the profile does not convert currencies.

>>> from streamproc.segments.config import SegmentConfig
>>> assign_value_tier({"purchases": {"total": 250.0}}, SegmentConfig())
Assignment(segment='profitable', reason='lifetime value 250.00, at least 250.00')
>>> assign_value_tier({"purchases": {"total": 200.0}, "scores": {"ltv": 60.0}}, SegmentConfig())
Assignment(segment='profitable', reason='lifetime value 260.00 (200.00 spent, 60.00 expected \
in a year), at least 250.00')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamproc.segments.assignment import Assignment
from streamproc.segments.config import SegmentConfig

SEGMENTS = ("very_profitable", "profitable", "emerging", "unprofitable")


def assign_value_tier(profile: Mapping[str, Any], config: SegmentConfig) -> Assignment:
    spent = float((profile.get("purchases") or {}).get("total") or 0.0)
    expected = (profile.get("scores") or {}).get("ltv")
    total = spent + float(expected or 0.0)
    value = f"{total:,.2f}" if expected is None else (
        f"{total:,.2f} ({spent:,.2f} spent, {float(expected):,.2f} expected in a year)")
    for segment, threshold in (
        ("very_profitable", config.tier_very_profitable),
        ("profitable", config.tier_profitable),
        ("emerging", config.tier_emerging),
    ):
        if total >= threshold:
            return Assignment(segment, f"lifetime value {value}, at least {threshold:,.2f}")
    return Assignment(
        "unprofitable", f"lifetime value {value}, under {config.tier_emerging:,.2f}"
    )
