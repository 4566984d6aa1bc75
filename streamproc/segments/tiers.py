"""Value tier from historical lifetime value (``purchases.total``).

- ``very_profitable``: spent at least ``tier_very_profitable`` (default 1,000);
- ``profitable``: at least ``tier_profitable`` (250);
- ``emerging``: at least ``tier_emerging`` (50);
- ``unprofitable``: less, including customers who never bought.

Amounts are summed as received: the profile does not convert currencies.

>>> from streamproc.segments.config import SegmentConfig
>>> assign_value_tier({"purchases": {"total": 250.0}}, SegmentConfig())
Assignment(segment='profitable', reason='lifetime value 250.00, at least 250.00')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamproc.segments.assignment import Assignment
from streamproc.segments.config import SegmentConfig

SEGMENTS = ("very_profitable", "profitable", "emerging", "unprofitable")


def assign_value_tier(profile: Mapping[str, Any], config: SegmentConfig) -> Assignment:
    total = float((profile.get("purchases") or {}).get("total") or 0.0)
    for segment, threshold in (
        ("very_profitable", config.tier_very_profitable),
        ("profitable", config.tier_profitable),
        ("emerging", config.tier_emerging),
    ):
        if total >= threshold:
            return Assignment(segment, f"lifetime value {total:,.2f}, at least {threshold:,.2f}")
    return Assignment(
        "unprofitable", f"lifetime value {total:,.2f}, under {config.tier_emerging:,.2f}"
    )
