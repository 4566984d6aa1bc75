"""The KPI counters as JSON (streamproc.decisions.kpi_summary): the numbers the CLI prints and
the HTTP service will serve."""

from __future__ import annotations

import orjson

from streamproc.decisions.kpi_summary import render_kpis, summarise

DAY = 20_513  # 2026-03-01
COUNTS = {
    DAY: {"cluster:2|hero:control|hero_default|decisions": 10,
          "cluster:2|hero:control|hero_default|customers": 8,
          "cluster:2|hero:control|hero_default|impressions": 6,
          "cluster:2|hero:control|hero_default|opens": 3,
          "cluster:2|hero:control|hero_default|purchases": 2,
          "cluster:2|hero:control|hero_default|buyers": 2,
          "cluster:2|hero:control|hero_default|revenue_cents": 3000,
          "all:all|hero:control|hero_default|decisions": 10,
          "all:all|hero:bandit|shoes|decisions": 5,
          "cluster:2|-|-|responses": 4, "cluster:2|-|-|promoters": 1,
          "cluster:2|-|-|detractors": 2, "cluster:2|-|-|passives": 1,
          "broken-field": 7},
    DAY + 1: {"all:all|hero:bandit|shoes|decisions": 1},
}


def test_rows_of_one_segmentation_with_rates_and_none_where_nothing_to_divide() -> None:
    out = summarise(COUNTS, {}, by="cluster")
    assert out["days"] == ["2026-03-01", "2026-03-02"]
    assert out["segmentations"] == ["all", "cluster"]
    [row] = out["rows"]
    assert (row["segment"], row["arm"], row["action"]) == ("2", "hero:control", "hero_default")
    assert row["open_rate"] == 0.5 and row["click_rate"] == 0.0
    assert row["conversion"] == 0.25 and row["revenue"] == 30.0
    assert row["revenue_per_customer"] == 3.75
    [nps] = out["nps"]
    assert (nps["segment"], nps["responses"], nps["nps"]) == ("2", 4, -25.0)
    orjson.dumps(out)  # JSON-ready


def test_daily_totals_per_arm_come_from_everyone() -> None:
    out = summarise(COUNTS, {})
    daily = {(d["day"], d["arm"]): d for d in out["daily"]}
    assert daily[("2026-03-01", "hero:bandit")]["decisions"] == 5
    assert daily[("2026-03-02", "hero:bandit")]["decisions"] == 1
    assert daily[("2026-03-01", "hero:bandit")]["conversion"] is None  # nobody reached
    assert sum(r["decisions"] for r in out["rows"]) == 16


def test_retention_and_the_table() -> None:
    out = summarise(COUNTS, {674: {"all:all|0": 10, "all:all|1": 3, "all:all|3": 1}})
    [cohort] = out["retention"]
    assert cohort["cohort"] == "2026-03" and cohort["customers"] == 10
    assert [(m["n"], m["rate"]) for m in cohort["months"]] == [(1, 0.3), (3, 0.1)]
    table = render_kpis(out)
    assert "hero:bandit" in table and "cohort 2026-03 all: 10 customers; m1 30.0%" in table
    assert "no KPI counters" in render_kpis(summarise({}, {}))
