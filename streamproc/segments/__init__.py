"""Customer segmentation: built-in segmentations and marketers' custom rules, on plain dicts.

Everything here is a pure function of the profile (``streamproc/state/profile.py``) and event
time, except loading the rules file. :func:`assign_all` is the entry point.
"""

from __future__ import annotations

from streamproc.segments.assign import assign_all, assign_deferred, changed
from streamproc.segments.assignment import Assignment, Transition
from streamproc.segments.builtin import CUSTOM_PREFIX, MEMBER, NOT_MEMBER, SEGMENTATIONS
from streamproc.segments.config import SegmentConfig
from streamproc.segments.demographic import assign_demographics
from streamproc.segments.intent_tier import assign_intent
from streamproc.segments.journey import assign_journey
from streamproc.segments.lifecycle import assign_lifecycle
from streamproc.segments.quantiles import (
    BUCKETS,
    BUCKETS_VERSION,
    DEFAULT_CUTS,
    DIMENSIONS,
    Cuts,
    bucket_of,
    cut_points,
    cuts_from_histograms,
    score,
    score_bucket,
)
from streamproc.segments.rfm import assign_rfm, rfm_scores, rfm_segment, rfm_values
from streamproc.segments.rulefile import RuleFile
from streamproc.segments.rules import Rule, RuleSet, load_rules, parse_rules
from streamproc.segments.tiers import assign_value_tier

__all__ = [
    "BUCKETS",
    "BUCKETS_VERSION",
    "CUSTOM_PREFIX",
    "DEFAULT_CUTS",
    "DIMENSIONS",
    "MEMBER",
    "NOT_MEMBER",
    "SEGMENTATIONS",
    "Assignment",
    "Cuts",
    "Rule",
    "RuleFile",
    "RuleSet",
    "SegmentConfig",
    "Transition",
    "assign_all",
    "assign_deferred",
    "assign_demographics",
    "assign_intent",
    "assign_journey",
    "assign_lifecycle",
    "assign_rfm",
    "assign_value_tier",
    "bucket_of",
    "changed",
    "cut_points",
    "cuts_from_histograms",
    "load_rules",
    "parse_rules",
    "rfm_scores",
    "rfm_segment",
    "rfm_values",
    "score",
    "score_bucket",
]
