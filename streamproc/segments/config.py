"""The thresholds of the built-in segmentations: one frozen :class:`SegmentConfig`.

Defaults suit a general retailer; ``settings.py`` exposes the few worth tuning per deployment.
Days are event-time days (see :mod:`streamproc.days`), money is in the shop's currency.

>>> SegmentConfig(tier_profitable=300.0).tier_profitable
300.0
>>> SegmentConfig(lifecycle_active_days=200)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streamproc.errors.ConfigError: segment config: lifecycle_lapsed_days (180) must be more than ...
"""

from __future__ import annotations

from dataclasses import dataclass

from streamproc.errors import ConfigError


@dataclass(frozen=True)
class SegmentConfig:
    """Thresholds of the built-in segmentations; inconsistent values raise ConfigError."""

    # Days of per-day activity counters the profile keeps (STREAMPROC_ACTIVITY_DAYS): the longest
    # window a custom rule's ``count`` may use.
    activity_days: int = 30
    # Below this many customers in a dimension's histogram, RFM uses the fixed default cuts
    # (quantiles of a handful of customers say nothing).
    rfm_min_customers: int = 100
    # Value tier: lifetime spend (purchases.total) at or above which a customer is in the tier.
    tier_very_profitable: float = 1000.0
    tier_profitable: float = 250.0
    tier_emerging: float = 50.0
    # Lifecycle, in days (see lifecycle.py for the definitions).
    lifecycle_new_days: float = 30.0
    lifecycle_active_days: float = 90.0
    lifecycle_lapsed_days: float = 180.0
    lifecycle_reactivated_days: float = 30.0
    # Journey (see journey.py).
    journey_engaged_product_views: int = 3
    journey_engaged_sessions: int = 2
    journey_loyal_orders: int = 5
    # Intent tiers: lower bounds of warm and hot on the intent score (see intent.py); the same
    # defaults as IntentModel's thresholds.
    intent_warm: float = 0.2
    intent_hot: float = 0.5

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError("segment config: " + "; ".join(problems))

    def problems(self) -> list[str]:
        out: list[str] = []
        if not 1 <= self.activity_days <= 366:
            out.append(f"activity_days ({self.activity_days}) must be 1 to 366")
        if self.rfm_min_customers < 0:
            out.append(f"rfm_min_customers ({self.rfm_min_customers}) must not be negative")
        if not 0 <= self.tier_emerging < self.tier_profitable < self.tier_very_profitable:
            out.append(
                f"tiers must rise: 0 <= tier_emerging ({self.tier_emerging}) < tier_profitable "
                f"({self.tier_profitable}) < tier_very_profitable ({self.tier_very_profitable})"
            )
        for name in ("lifecycle_new_days", "lifecycle_active_days", "lifecycle_reactivated_days"):
            if getattr(self, name) <= 0:
                out.append(f"{name} ({getattr(self, name)}) must be more than 0")
        if self.lifecycle_lapsed_days <= self.lifecycle_active_days:
            out.append(
                f"lifecycle_lapsed_days ({self.lifecycle_lapsed_days:g}) must be more than "
                f"lifecycle_active_days ({self.lifecycle_active_days:g})"
            )
        for name in ("journey_engaged_product_views", "journey_engaged_sessions"):
            if getattr(self, name) < 1:
                out.append(f"{name} ({getattr(self, name)}) must be at least 1")
        if self.journey_loyal_orders < 3:
            # 2 orders already make a repeat buyer; loyal must be a later stage.
            out.append(f"journey_loyal_orders ({self.journey_loyal_orders}) must be at least 3")
        if not 0.0 <= self.intent_warm <= self.intent_hot <= 1.0:
            out.append(f"intent thresholds must be 0 <= intent_warm ({self.intent_warm}) <= "
                       f"intent_hot ({self.intent_hot}) <= 1")
        return out
