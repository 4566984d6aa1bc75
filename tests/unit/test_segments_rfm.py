"""Named RFM segments: the full grid, the values read from a profile, the reason."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from streamproc.segments.quantiles import DEFAULT_CUTS, NO_BASE
from streamproc.segments.rfm import (
    PROSPECT,
    RFM_SEGMENTS,
    assign_rfm,
    rfm_segment,
    rfm_values,
)

DAY = 86_400_000

# (R, FM) -> segment, with FM = (F + M) // 2: the documented grid, restated.
EXPECTED = {
    5: ["new", "potential_loyalists", "potential_loyalists", "champions", "champions"],
    4: ["promising", "potential_loyalists", "potential_loyalists", "loyal", "loyal"],
    3: ["needs_attention", "needs_attention", "needs_attention", "loyal", "loyal"],
    2: ["hibernating", "hibernating", "at_risk", "at_risk", "cant_lose"],
    1: ["lost", "lost", "at_risk", "at_risk", "cant_lose"],
}


def test_every_combination_maps_to_one_known_segment() -> None:
    seen = set()
    for r, f, m in itertools.product(range(1, 6), repeat=3):
        segment = rfm_segment(r, f, m)
        assert segment in RFM_SEGMENTS
        assert segment == EXPECTED[r][(f + m) // 2 - 1], (r, f, m)
        seen.add(segment)
    assert seen == set(RFM_SEGMENTS)  # every named segment is reachable


@pytest.mark.parametrize(
    ("scores", "segment"),
    [
        ((5, 5, 5), "champions"), ((5, 4, 4), "champions"), ((5, 4, 3), "potential_loyalists"),
        ((5, 1, 1), "new"), ((5, 1, 2), "new"), ((5, 1, 3), "potential_loyalists"),
        ((4, 1, 1), "promising"), ((4, 5, 3), "loyal"), ((3, 5, 5), "loyal"),
        ((3, 3, 4), "needs_attention"), ((2, 5, 5), "cant_lose"), ((1, 5, 5), "cant_lose"),
        ((1, 5, 4), "at_risk"), ((2, 3, 3), "at_risk"), ((2, 2, 3), "hibernating"),
        ((1, 2, 3), "lost"), ((1, 1, 1), "lost"),
    ],
)
def test_named_examples(scores: tuple[int, int, int], segment: str) -> None:
    assert rfm_segment(*scores) == segment


@pytest.mark.parametrize("scores", [(0, 3, 3), (6, 3, 3), (3, 3, 0), (3.0, 3, 3)])
def test_scores_out_of_range_are_refused(scores: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="1 to 5"):
        rfm_segment(*scores)


def buyer(orders: int, total: float, last_day: float, **rfm: float) -> dict[str, Any]:
    return {"purchases": {"orders": orders, "total": total, "last_ms": int(last_day * DAY),
                          "first_ms": 0, "days": {"0": 1.0}},
            "rfm": rfm}


def test_values_from_profile() -> None:
    p = buyer(4, 200.0, 10, frequency=3, recency=10, T=12)
    assert rfm_values(p, 12 * DAY) == {"recency_days": 2.0, "frequency": 3.0, "monetary": 50.0}


def test_values_fall_back_without_rfm_block() -> None:
    p = {"purchases": {"orders": 3, "total": 30.0, "last_ms": 0,
                       "days": {"0": 10.0, "4": 10.0, "9": 10.0}}}
    assert rfm_values(p, DAY // 2) == {"recency_days": 0.5, "frequency": 2.0, "monetary": 10.0}


def test_values_recency_from_btyd_without_last_purchase_time() -> None:
    p = {"purchases": {"orders": 1, "total": 30.0}, "rfm": {"frequency": 0, "recency": 0,
                                                           "T": 40.0}}
    assert rfm_values(p, 0)["recency_days"] == 40.0  # type: ignore[index]


@pytest.mark.parametrize("profile", [{}, {"purchases": {"orders": 0, "total": 0.0}},
                                     {"purchases": None}])
def test_never_purchased_is_a_prospect(profile: dict[str, Any]) -> None:
    assert rfm_values(profile, 0) is None
    assert assign_rfm(profile, 0, DEFAULT_CUTS) == (PROSPECT, "no purchase yet")


def test_reason_states_scores_and_values() -> None:
    p = buyer(7, 589.4, 0, frequency=6)
    assert assign_rfm(p, 2 * DAY, DEFAULT_CUTS).reason == (
        "R5 F4 M3: bought 2 days ago, 6 repeat purchase days, 84.20 per order"
    )
    p = buyer(1, 1234.5, 0, frequency=1)
    assert assign_rfm(p, DAY // 3, DEFAULT_CUTS).reason == (
        "R5 F2 M5: bought today, 1 repeat purchase day, 1,234.50 per order"
    )


def test_empty_base_scores_everyone_one() -> None:
    p = buyer(7, 589.4, 0, frequency=6)
    cuts = {"recency_days": NO_BASE, "frequency": NO_BASE, "monetary": NO_BASE}
    assert assign_rfm(p, 2 * DAY, cuts) == ("lost", "R1 F1 M1: bought 2 days ago, "
                                                    "6 repeat purchase days, 84.20 per order")
