"""Named RFM segments from recency, frequency and monetary scores.

:func:`rfm_values` reads the three values from a profile, :func:`rfm_scores` scores them 1 to 5
(:mod:`.quantiles`), and :func:`rfm_segment` names the result with this grid, where
``FM = (F + M) // 2`` (frequency and monetary averaged, rounded down):

======  =================  ===================  ===================  =========  =========
R \\ FM  1                  2                    3                    4          5
======  =================  ===================  ===================  =========  =========
5       new                potential_loyalists  potential_loyalists  champions  champions
4       promising          potential_loyalists  potential_loyalists  loyal      loyal
3       needs_attention    needs_attention      needs_attention      loyal      loyal
2       hibernating        hibernating          at_risk              at_risk    cant_lose
1       lost               lost                 at_risk              at_risk    cant_lose
======  =================  ===================  ===================  =========  =========

In words: *champions* bought very recently and often/a lot; *loyal* buy often/a lot and not
long ago; *potential_loyalists* are recent with average frequency and spend; *new* and
*promising* bought very recently / recently but little so far; *needs_attention* are average on
recency and at most average on value; *at_risk* spent well but not for a long time; *cant_lose*
were the best (FM 5) but have not bought for a long time; *hibernating* and *lost* bought little,
long ago. A customer who never purchased is a *prospect*.

>>> rfm_segment(5, 4, 5), rfm_segment(1, 5, 5), rfm_segment(3, 1, 2)
('champions', 'cant_lose', 'needs_attention')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamproc.days import days_since, plural, reached_ms
from streamproc.segments.assignment import Assignment, Deferred
from streamproc.segments.quantiles import DEFAULT_CUTS, Cuts, score, worst_value_within

RFM_SEGMENTS = (
    "champions", "loyal", "potential_loyalists", "new", "promising", "needs_attention",
    "at_risk", "cant_lose", "hibernating", "lost",
)
PROSPECT = "prospect"
SEGMENTS = (*RFM_SEGMENTS, PROSPECT)

_GRID: dict[int, tuple[str, str, str, str, str]] = {
    5: ("new", "potential_loyalists", "potential_loyalists", "champions", "champions"),
    4: ("promising", "potential_loyalists", "potential_loyalists", "loyal", "loyal"),
    3: ("needs_attention", "needs_attention", "needs_attention", "loyal", "loyal"),
    2: ("hibernating", "hibernating", "at_risk", "at_risk", "cant_lose"),
    1: ("lost", "lost", "at_risk", "at_risk", "cant_lose"),
}


def rfm_segment(r: int, f: int, m: int) -> str:
    """The named segment of scores 1 to 5 (the grid above)."""
    if not all(isinstance(s, int) and 1 <= s <= 5 for s in (r, f, m)):
        raise ValueError(f"RFM scores must be whole numbers 1 to 5, got {(r, f, m)}")
    return _GRID[r][(f + m) // 2 - 1]


def rfm_values(profile: Mapping[str, Any], now_ms: int) -> dict[str, float] | None:
    """``recency_days``, ``frequency`` and ``monetary`` of a customer; None if they never bought.

    Recency is measured from ``purchases.last_ms`` to ``now_ms`` (so it is current even when
    ``rfm.T`` was computed at an earlier event); frequency is ``rfm.frequency``, else the
    purchase days minus one; monetary is the average order value.

    >>> p = {"purchases": {"orders": 2, "total": 90.0, "last_ms": 0, "days": {"0": 40, "3": 50}}}
    >>> rfm_values(p, 86_400_000)
    {'recency_days': 1.0, 'frequency': 1.0, 'monetary': 45.0}
    """
    purchases = profile.get("purchases") or {}
    orders = purchases.get("orders") or 0
    if orders <= 0:
        return None
    last_ms = purchases.get("last_ms")
    rfm = profile.get("rfm") or {}
    if last_ms is not None:
        recency_days = days_since(now_ms, last_ms)
    else:
        recency_days = max(0.0, float(rfm.get("T", 0.0)) - float(rfm.get("recency", 0.0)))
    frequency = rfm.get("frequency")
    if frequency is None:
        frequency = max(len(purchases.get("days") or {}) - 1, 0)
    return {
        "recency_days": recency_days,
        "frequency": float(frequency),
        "monetary": float(purchases.get("total") or 0.0) / orders,
    }


def rfm_scores(values: Mapping[str, float], cuts: Mapping[str, Cuts]) -> tuple[int, int, int]:
    """(R, F, M), each 1 to 5; a dimension missing from ``cuts`` uses the default cuts."""
    # Written out: run for every event of a buyer, a generator here cost as much as the scores.
    return (score("recency_days", values["recency_days"],
                  cuts.get("recency_days") or DEFAULT_CUTS["recency_days"]),
            score("frequency", values["frequency"],
                  cuts.get("frequency") or DEFAULT_CUTS["frequency"]),
            score("monetary", values["monetary"],
                  cuts.get("monetary") or DEFAULT_CUTS["monetary"]))


def assign_rfm(profile: Mapping[str, Any], now_ms: int, cuts: Mapping[str, Cuts]) -> Assignment:
    """The RFM segment, with its scores and values as the reason.

    >>> p = {"purchases": {"orders": 7, "total": 589.4, "last_ms": 0}, "rfm": {"frequency": 6}}
    >>> segment, reason = assign_rfm(p, 2 * 86_400_000, {})
    >>> segment
    'potential_loyalists'
    >>> reason
    'R5 F4 M3: bought 2 days ago, 6 repeat purchase days, 84.20 per order'
    """
    return rfm_deferred(profile, now_ms, cuts).assignment()


def rfm_deferred(profile: Mapping[str, Any], now_ms: int, cuts: Mapping[str, Cuts]) -> Deferred:
    """:func:`assign_rfm` with the reason built only when it is read, and the time until
    which it holds (:func:`rfm_until`; for a profile without ``purchases.last_ms``, whose
    recency comes from ``rfm``, None: it moves with ``rfm``).

    >>> d = rfm_deferred({"purchases": {"orders": 1, "total": 30.0, "last_ms": 0}}, 0, {})
    >>> d.segment, d.until_ms // 86_400_000  # R5 until 30 days, then R4: promising
    ('new', 30)
    """
    values = rfm_values(profile, now_ms)
    if values is None:
        return Deferred(PROSPECT, _no_purchase)
    r, f, m = rfm_scores(values, cuts)
    last_ms = profile["purchases"].get("last_ms")
    until = None if last_ms is None else rfm_until(
        last_ms, r, (f + m) // 2, cuts.get("recency_days") or DEFAULT_CUTS["recency_days"])

    def explain() -> str:
        days = int(values["recency_days"])
        bought = "bought today" if days == 0 else f"bought {plural(days, 'day')} ago"
        return (f"R{r} F{f} M{m}: {bought}, "
                f"{plural(values['frequency'], 'repeat purchase day')}, "
                f"{values['monetary']:,.2f} per order")

    return Deferred(_GRID[r][(f + m) // 2 - 1], explain, until)  # scores 1 to 5 (rfm_scores)


def rfm_until(last_ms: int, r: int, fm: int, recency_cuts: Cuts) -> int | None:
    """The first event time at which the segment of a buyer scored R ``r`` and FM ``fm``,
    whose last purchase was at ``last_ms``, changes by time alone (None: never). Only R moves
    with time, downwards as the purchase ages, and the segment changes at the first lower R
    whose grid cell differs (no column of the grid comes back to a segment it left).

    >>> rfm_until(0, 5, 4, DEFAULT_CUTS["recency_days"]) // 86_400_000  # champions, then loyal
    30
    >>> rfm_until(0, 4, 5, DEFAULT_CUTS["recency_days"]) // 86_400_000  # loyal until R2
    180
    >>> rfm_until(0, 1, 3, DEFAULT_CUTS["recency_days"]) is None  # at_risk for good
    True
    """
    segment = _GRID[r][fm - 1]
    lower = next((s for s in range(r - 1, 0, -1) if _GRID[s][fm - 1] != segment), None)
    if lower is None:
        return None
    # R <= lower from the age at which the recency bucket is at or below cuts[lower - 1].
    days = worst_value_within("recency_days", recency_cuts[lower - 1])
    return None if days is None else reached_ms(last_ms, days)


def _no_purchase() -> str:
    return "no purchase yet"
