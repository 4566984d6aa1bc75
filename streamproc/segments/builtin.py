"""Every built-in segmentation and the segments it can assign: for checking rules and for docs."""

from __future__ import annotations

from streamproc.segments import demographic, intent_tier, journey, lifecycle, rfm, tiers

CUSTOM_PREFIX = "custom."
MEMBER, NOT_MEMBER = "member", "not_member"

# None: any value (a country code).
SEGMENTATIONS: dict[str, tuple[str, ...] | None] = {
    "rfm": rfm.SEGMENTS,
    "value_tier": tiers.SEGMENTS,
    "lifecycle": lifecycle.SEGMENTS,
    "journey": journey.SEGMENTS,
    "age_band": (*demographic.AGE_BANDS, demographic.UNKNOWN),
    "gender": (*demographic.GENDERS, demographic.UNKNOWN),
    "country": None,
    # Only for customers with an intent score (scores.intent).
    "intent": intent_tier.SEGMENTS,
    # Only for customers assigned to a behaviour cluster: its stable id, "0" to "k-1".
    "cluster": None,
}
