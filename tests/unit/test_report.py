"""Experiment report numbers on a small hand-built log, and the log join's counting rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from streamproc.decisions.decision_log import join, read_jsonl
from streamproc.decisions.report import arm_results, render_table


def d(i: int, customer: str, arm: str | None, rfm: str = "new") -> dict[str, Any]:
    return {"decision_id": f"d{i}", "customer_id": customer, "policy": "thompson-v1",
            "experiment": None if arm is None else {"id": "exp", "arm": arm},
            "segments": {"rfm": rfm}, "action": {"id": "a", "kind": "offer"}}


def fb(i: int, decision: int, outcome: str, revenue: float | None = None) -> dict[str, Any]:
    event = {"event_id": f"f{i}", "type": "feedback", "decision_id": f"d{decision}",
             "outcome": outcome}
    if revenue is not None:
        event["revenue"] = revenue
    return event


DECISIONS = [
    d(1, "c1", "control"), d(2, "c2", "control", "loyal"),
    d(3, "b1", "bandit"), d(4, "b1", "bandit"), d(5, "b2", "bandit", "loyal"),
    d(6, "b3", "bandit"), d(7, "x1", None),
    d(3, "b1", "bandit"),  # republished after a crash: same id, counted once
]
FEEDBACK = [
    fb(1, 1, "impression"), fb(2, 1, "conversion", 30.0),
    fb(3, 3, "click"), fb(4, 4, "click"), fb(5, 4, "conversion", 10.0),
    fb(6, 5, "conversion", 20.0), fb(7, 6, "impression"),
    fb(6, 5, "conversion", 20.0),  # a producer retry: same event id
    fb(8, 99, "click"),  # on a decision that is not in the log
]


def test_report_numbers_per_arm() -> None:
    log = join(DECISIONS, FEEDBACK)
    assert log.duplicate_decisions == 1 and log.duplicate_feedback == 1
    assert log.orphan_feedback == 1
    rows = {(r.experiment, r.arm): r for r in arm_results(log, min_customers=1,
                                                             min_conversions=1)}
    control, bandit = rows[("exp", "control")], rows[("exp", "bandit")]
    assert (control.customers, control.decisions) == (2, 2)
    assert control.conversion.value == 0.5
    assert control.click_rate.value == 0.5  # the conversion counts as a click
    assert control.revenue_per_customer.value == 15.0
    assert control.conversion_uplift is None
    assert (bandit.customers, bandit.decisions) == (3, 4)
    assert bandit.conversion.value == pytest.approx(2 / 3)  # b1 and b2 converted
    assert bandit.click_rate.value == pytest.approx(3 / 4)  # d3, d4, d5
    assert bandit.revenue_per_customer.value == pytest.approx(10.0)  # (10 + 20 + 0) / 3
    assert bandit.conversion_uplift is not None and bandit.revenue_uplift is not None
    assert bandit.conversion_uplift.value == pytest.approx(2 / 3 - 1 / 2)
    assert bandit.conversion_uplift.low < bandit.conversion_uplift.value
    assert bandit.relative_conversion_uplift == pytest.approx((2 / 3) / (1 / 2) - 1)
    assert bandit.revenue_uplift.value == pytest.approx(10.0 - 15.0)
    none = rows[("(none)", "thompson-v1")]
    assert (none.customers, none.conversion_uplift) == (1, None)
    # Control sorts first within its experiment; decisions outside experiments come last.
    assert [r.arm for r in arm_results(log, min_customers=1, min_conversions=1)] == [
        "control", "bandit", "thompson-v1"]


def test_report_per_segment_and_one_experiment() -> None:
    rows = arm_results(join(DECISIONS, FEEDBACK), by="segments.rfm", experiment="exp",
                       min_customers=1, min_conversions=1)
    keyed = {(r.arm, r.segment): r for r in rows}
    assert set(keyed) == {("control", "new"), ("control", "loyal"), ("bandit", "new"),
                          ("bandit", "loyal")}
    assert keyed[("bandit", "loyal")].conversion.value == 1.0
    loyal_uplift = keyed[("bandit", "loyal")].conversion_uplift
    assert loyal_uplift is not None and loyal_uplift.value == pytest.approx(1.0)
    assert keyed[("bandit", "new")].conversion.value == pytest.approx(0.5)


def test_table_and_json_shapes() -> None:
    log = join(DECISIONS, FEEDBACK)
    rows = arm_results(log, min_customers=1, min_conversions=1)
    table = render_table(rows, log.notes())
    assert "conversion uplift vs control" in table.splitlines()[0]
    assert "66.67%" in table and "+16.67 pts" in table
    assert "1 feedback events on decisions not in the log" in table
    as_json = orjson.loads(orjson.dumps([r.as_dict() for r in rows]))
    bandit = next(r for r in as_json if r["arm"] == "bandit")
    assert bandit["uplift"]["conversion"]["value"] == pytest.approx(1 / 6, abs=1e-6)
    assert render_table([], []) == "no decisions in the log"


def test_jsonl_reading_keeps_bad_lines_as_skipped(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_text('{"decision_id": "d1", "customer_id": "a"}\nnot json\n\n[1, 2]\n'
                    '{"customer_id": "b"}\n')
    log = join(read_jsonl(path), [])
    assert [r["decision_id"] for r in log.decisions] == ["d1"]
    assert sum(log.skipped.values()) == 3


def test_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    from streamproc.decisions.decision_log import LogError

    with pytest.raises(LogError, match="cannot read"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_small_counts_say_not_enough_data_instead_of_a_number() -> None:
    rows = {r.arm: r for r in arm_results(join(DECISIONS, FEEDBACK), experiment="exp")}
    bandit = rows["bandit"]
    assert bandit.status == "not enough data yet"
    assert bandit.conversion_uplift is None and bandit.revenue_uplift is None
    assert bandit.as_dict()["uplift"] is None
    assert rows["control"].status == "control"
    # Control converts 1 in 2: 10% more needs hundreds of customers an arm.
    assert bandit.customers_needed is not None and bandit.customers_needed > 300
    assert bandit.still_needed == bandit.customers_needed - 2
    assert "not enough data yet" in render_table(list(rows.values()), [])


def _experiment(n: int, rates: dict[str, float]) -> tuple[list[dict[str, Any]],
                                                         list[dict[str, Any]]]:
    """n customers an arm, one decision each; the first ``rate * n`` of an arm buy 20.0
    an hour later, and one more buys two days later (outside a one-day window)."""
    decisions, purchases = [], []
    for arm, rate in rates.items():
        for i in range(n):
            cid = f"{arm}-{i}"
            decisions.append({"decision_id": f"{arm}{i:04d}", "customer_id": cid,
                              "ts": "2026-03-01T10:00:00Z", "policy": "x",
                              "experiment": {"id": "exp", "arm": arm},
                              "segments": {"rfm": "new"}, "action": {"id": "a"}})
            if i < rate * n:
                purchases.append({"customer_id": cid, "ts": "2026-03-01T11:00:00Z",
                                  "amount": 20.0})
            elif i == n - 1:
                purchases.append({"customer_id": cid, "ts": "2026-03-03T11:00:00Z",
                                  "amount": 99.0})
    return decisions, purchases


def test_attributed_purchases_give_the_control_group_its_conversions() -> None:
    from streamproc.decisions.kpis import attribute

    decisions, purchases = _experiment(200, {"control": 0.10, "uniform": 0.25, "bandit": 0.30})
    attributed = attribute(decisions, purchases, 86_400_000)
    rows = {r.arm: r for r in arm_results(join(decisions, []), attributed=attributed)}
    assert rows["control"].conversion.value == pytest.approx(0.10)  # no feedback needed
    assert rows["control"].revenue_per_customer.value == pytest.approx(2.0)
    uniform = rows["uniform"]
    assert uniform.status == "ok"
    assert uniform.conversion_uplift is not None and uniform.revenue_uplift is not None
    assert uniform.conversion_uplift.value == pytest.approx(0.15)
    assert 0 < uniform.conversion_uplift.low < 0.15 < uniform.conversion_uplift.high
    assert uniform.revenue_uplift.value == pytest.approx(3.0)
    assert uniform.revenue_uplift.low > 0
    # Personalisation as a whole: both treated arms pooled against control.
    pooled = rows["(personalised)"]
    assert (pooled.customers, pooled.conversion.value) == (400, pytest.approx(0.275))
    assert pooled.conversion_uplift is not None
    assert pooled.conversion_uplift.value == pytest.approx(0.175)
