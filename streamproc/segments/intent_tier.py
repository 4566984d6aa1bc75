"""Purchase intent tier from the worker's intent score (``scores.intent``, 0..1).

The score is the online intent model's probability that the customer buys within
``STREAMPROC_INTENT_HORIZON_MINUTES`` of their last browsing event
(:mod:`streamproc.learning.scorer`). Tiers, with
:class:`~streamproc.segments.config.SegmentConfig`'s thresholds (defaults in brackets, the same
as :meth:`IntentModel.tier <streamproc.models.intent.IntentModel.tier>`):

- ``hot``: score at least ``intent_hot`` (0.5);
- ``warm``: at least ``intent_warm`` (0.2);
- ``cold``: lower.

A customer without a score (no browsing event scored yet, or a worker running without the
scorer) has no intent segment at all, rather than a made-up one.

>>> from streamproc.segments.config import SegmentConfig
>>> assign_intent({"scores": {"intent": 0.62}}, SegmentConfig())
Assignment(segment='hot', reason='purchase intent 0.62, at least 0.50')
>>> assign_intent({"scores": {}}, SegmentConfig()) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamproc.segments.assignment import Assignment
from streamproc.segments.config import SegmentConfig

SEGMENTS = ("cold", "warm", "hot")


def assign_intent(profile: Mapping[str, Any], config: SegmentConfig) -> Assignment | None:
    score = (profile.get("scores") or {}).get("intent")
    if score is None:
        return None
    score = float(score)
    if score >= config.intent_hot:
        return Assignment("hot", f"purchase intent {score:.2f}, at least {config.intent_hot:.2f}")
    if score >= config.intent_warm:
        return Assignment("warm", f"purchase intent {score:.2f}, at least "
                                  f"{config.intent_warm:.2f}")
    return Assignment("cold", f"purchase intent {score:.2f}, under {config.intent_warm:.2f}")
