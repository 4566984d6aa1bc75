"""KPI counting (streamproc.decisions.kpis): attribution, reach, feedback, retention, NPS, and
exactly once through the processor whatever the redeliveries and duplicates."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.days import DAY_MS, HOUR_MS
from streamproc.decisions.kpis import KpiCounter, Tally, month_of
from streamproc.events.codec import RawMessage
from streamproc.processor import Processor
from streamproc.segments.segmenter import Segmenter
from streamproc.state.keys import kpi_cohort_key, kpi_day_key
from streamproc.state.memory import MemoryStore
from streamproc.state.profile import new_profile

from .helpers import SETTINGS, Partition, event, replay_with_redeliveries

WINDOW = 24 * HOUR_MS
T0 = 20_513 * DAY_MS  # 2026-03-01T00:00Z


def decision(did: str, arm: str = "uniform", action: str = "shoes_10pct",
             segments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"decision_id": did * 4, "segments": segments or {"rfm": "new", "cluster": "2"},
            "experiment": {"id": "hero", "arm": arm},
            "policy": "neutral" if arm == "control" else "uniform", "action": {"id": action}}


def day(tally: Tally, ts_ms: int) -> dict[str, int]:
    return tally.get(kpi_day_key("shop", ts_ms // DAY_MS), (0, {}))[1]


def buy(counter: KpiCounter, p: Any, ts_ms: int, tally: Tally, amount: float = 10.0) -> None:
    p["purchases"]["orders"] += 1
    counter.count(p, "purchase", ts_ms, {"amount": amount}, [], tally)


def test_a_purchase_inside_the_window_is_attributed_once_to_the_latest_decision() -> None:
    counter, p, tally = KpiCounter("shop", WINDOW), new_profile("c"), {}
    counter.count_decisions(p, [decision("a", action="old")], T0, tally)
    counter.count_decisions(p, [decision("b", action="new")], T0 + HOUR_MS, tally)
    buy(counter, p, T0 + 2 * HOUR_MS, tally, 19.99)
    counts = day(tally, T0)
    assert counts["all:all|hero:uniform|new|purchases"] == 1
    assert counts["rfm:new|hero:uniform|new|revenue_cents"] == 1999
    assert counts["cluster:2|hero:uniform|new|purchases"] == 1
    assert "all:all|hero:uniform|old|purchases" not in counts
    buy(counter, p, T0 + 3 * HOUR_MS, tally, 1.0)
    assert counts["all:all|hero:uniform|new|purchases"] == 2
    assert counts["all:all|hero:uniform|new|revenue_cents"] == 2099
    assert counts["all:all|hero:uniform|new|buyers"] == 1  # one customer


def test_a_purchase_outside_the_window_or_at_the_decision_time_is_not_attributed() -> None:
    counter, p, tally = KpiCounter("shop", WINDOW), new_profile("c"), {}
    counter.count_decisions(p, [decision("a")], T0, tally)
    buy(counter, p, T0, tally)  # same instant: the decision it triggered, not one before it
    buy(counter, p, T0 + WINDOW + 1, tally)
    assert "all:all|hero:uniform|shoes_10pct|purchases" not in day(tally, T0)
    buy(counter, p, T0 + WINDOW, tally)  # the window's last millisecond
    assert day(tally, T0)["all:all|hero:uniform|shoes_10pct|purchases"] == 1


def test_the_control_groups_neutral_decisions_are_attributed_alike() -> None:
    counter, p, tally = KpiCounter("shop", WINDOW), new_profile("c"), {}
    counter.count_decisions(p, [decision("a", arm="control", action="hero_default")], T0, tally)
    buy(counter, p, T0 + HOUR_MS, tally, 5.0)
    counts = day(tally, T0)
    assert counts["all:all|hero:control|hero_default|purchases"] == 1
    assert counts["all:all|hero:control|hero_default|revenue_cents"] == 500


def test_a_decision_that_showed_nothing_reaches_nobody_and_earns_nothing() -> None:
    counter, p, tally = KpiCounter("shop", WINDOW), new_profile("c"), {}
    counter.count_decisions(p, [decision("a", action="none")], T0, tally)
    buy(counter, p, T0 + HOUR_MS, tally)
    counts = day(tally, T0)
    assert counts["all:all|hero:uniform|none|decisions"] == 1
    assert not any(f.endswith(("|customers", "|purchases")) for f in counts)


def test_customers_reached_count_each_customer_once_per_row_and_day() -> None:
    counter, p, tally = KpiCounter("shop", WINDOW), new_profile("c"), {}
    for i in range(3):
        counter.count_decisions(p, [decision(f"a{i}")], T0 + i, tally)
    counter.count_decisions(p, [decision("b", segments={"rfm": "loyal"})], T0 + 5, tally)
    counter.count_decisions(p, [decision("c")], T0 + DAY_MS, tally)
    assert day(tally, T0)["all:all|hero:uniform|shoes_10pct|decisions"] == 4
    assert day(tally, T0)["all:all|hero:uniform|shoes_10pct|customers"] == 2
    assert day(tally, T0)["rfm:new|hero:uniform|shoes_10pct|customers"] == 1
    assert day(tally, T0 + DAY_MS)["rfm:new|hero:uniform|shoes_10pct|customers"] == 1


def test_feedback_counts_on_the_row_and_day_of_its_decision() -> None:
    counter, p, tally = KpiCounter("shop", WINDOW), new_profile("c"), {}
    counter.count_decisions(p, [decision("a")], T0, tally)
    p["segments"] = {"rfm": "loyal"}  # moved since: the decision's row still gets it
    for outcome in ("impression", "open", "click", "conversion", "unsubscribe"):
        counter.count(p, "feedback", T0 + DAY_MS,
                      {"decision_id": "a" * 4, "outcome": outcome}, [], tally)
    counter.count(p, "feedback", T0 + DAY_MS, {"decision_id": "zzzz", "outcome": "click"}, [],
                  tally)
    counts = day(tally, T0)
    for kpi in ("impressions", "opens", "clicks", "conversions"):
        assert counts[f"rfm:new|hero:uniform|shoes_10pct|{kpi}"] == 1
    assert day(tally, T0 + DAY_MS) == {}


def feedback(counter: KpiCounter, p: Any, did: str, outcome: str, ts_ms: int,
             tally: Tally) -> None:
    counter.count(p, "feedback", ts_ms, {"decision_id": did * 4, "outcome": outcome}, [], tally)


def test_repeated_opens_and_clicks_of_one_decision_count_once() -> None:
    counter, p, tally = KpiCounter("shop", WINDOW), new_profile("c"), {}
    counter.count_decisions(p, [decision("a"), decision("b", action="cart_reminder")], T0,
                            tally)
    for minute in range(3):  # an email opened three times, its link clicked twice
        feedback(counter, p, "a", "open", T0 + minute * 60_000, tally)
    feedback(counter, p, "a", "impression", T0 + 5 * 60_000, tally)
    for minute in (6, 7):
        feedback(counter, p, "a", "click", T0 + minute * 60_000, tally)
    feedback(counter, p, "b", "open", T0 + 8 * 60_000, tally)  # another decision: its own
    counts = day(tally, T0)
    row = "all:all|hero:uniform|shoes_10pct|"
    assert (counts[row + "impressions"], counts[row + "opens"], counts[row + "clicks"]) == (
        1, 1, 1)
    assert counts["rfm:new|hero:uniform|cart_reminder|opens"] == 1
    assert counts["rfm:new|hero:uniform|cart_reminder|impressions"] == 1


def test_an_open_without_an_impression_counts_the_decision_seen_once() -> None:
    counter, p, tally = KpiCounter("shop", WINDOW), new_profile("c"), {}
    counter.count_decisions(p, [decision("a")], T0, tally)
    feedback(counter, p, "a", "open", T0 + 1, tally)  # an email sender reports no impression
    counts = day(tally, T0)
    row = "cluster:2|hero:uniform|shoes_10pct|"
    assert counts[row + "impressions"] == counts[row + "opens"] == 1
    feedback(counter, p, "a", "conversion", T0 + 2, tally)
    feedback(counter, p, "a", "impression", T0 + 3, tally)  # seen already: nothing more
    assert counts[row + "impressions"] == counts[row + "conversions"] == 1
    assert row + "clicks" not in counts


def test_an_open_days_after_the_send_counts_on_the_send_day_and_segments() -> None:
    counter, p, tally = KpiCounter("shop", WINDOW), new_profile("c"), {}
    counter.count_decisions(p, [decision("a", segments={"rfm": "new"})], T0 + 23 * HOUR_MS,
                            tally)
    p["segments"] = {"rfm": "loyal"}  # moved since the send
    counter.count_decisions(p, [decision("b", segments={"rfm": "loyal"})], T0 + 3 * DAY_MS,
                            tally)
    feedback(counter, p, "a", "open", T0 + 3 * DAY_MS + 1, tally)
    feedback(counter, p, "a", "open", T0 + 4 * DAY_MS, tally)
    sent_day, open_day = day(tally, T0), day(tally, T0 + 3 * DAY_MS)
    assert sent_day["rfm:new|hero:uniform|shoes_10pct|opens"] == 1
    assert sent_day["rfm:new|hero:uniform|shoes_10pct|impressions"] == 1
    assert not any(f.endswith(("|opens", "|impressions")) for f in open_day)
    assert day(tally, T0 + 4 * DAY_MS) == {}


def test_no_rate_exceeds_one_where_raw_feedback_would() -> None:
    from streamproc.decisions.kpi_summary import summarise

    counter, p, tally = KpiCounter("shop", WINDOW), new_profile("c"), {}
    outcomes = ("open", "click", "open", "conversion", "impression", "click", "open")
    sent: Counter[str] = Counter()  # feedback events by outcome: what was counted before
    for i in range(40):
        ts = T0 + i * HOUR_MS
        segments = {"rfm": ("new", "loyal")[i % 2]}
        counter.count_decisions(p, [decision(f"d{i:02d}", segments=segments)], ts, tally)
        for j in range(i % 5):  # 0 to 4 answers of this decision and of an earlier one
            for did in (f"d{i:02d}", f"d{max(0, i - 3):02d}"):
                outcome = outcomes[(i + j) % len(outcomes)]
                feedback(counter, p, did, outcome, ts + j, tally)
                sent[outcome] += 1
    assert sent["open"] > sent["impression"] and sent["click"] > sent["impression"]
    days = {n: counts for n, (key, (_, counts)) in enumerate(sorted(tally.items()))
            if ":day:" in key}
    for by in ("all", "rfm"):
        summary = summarise(days, {}, by)
        rates = [r[k] for part in ("rows", "daily", "daily_segments") for r in summary[part]
                 for k in ("open_rate", "click_rate")]
        assert rates and all(r is not None and 0 < r <= 1 for r in rates)


def test_retention_counts_each_month_once_from_the_first_purchase() -> None:
    counter, p, tally = KpiCounter("shop", WINDOW), new_profile("c"), {}
    p["segments"] = {"lifecycle": "new"}
    buy(counter, p, T0, tally)
    buy(counter, p, T0 + 40 * DAY_MS, tally)
    buy(counter, p, T0 + 45 * DAY_MS, tally)  # the same month again
    p["segments"] = {"lifecycle": "active"}  # the cohort keeps its first segments
    buy(counter, p, T0 + 70 * DAY_MS, tally)
    counts = tally[kpi_cohort_key("shop", month_of(T0))][1]
    assert counts == {"buyer:first_time|0": 1, "cart:empty|0": 1, "lifecycle:new|0": 1,
                      "all:all|0": 1, "buyer:first_time|1": 1, "cart:empty|1": 1,
                      "lifecycle:new|1": 1, "all:all|1": 1, "buyer:first_time|2": 1,
                      "cart:empty|2": 1, "lifecycle:new|2": 1, "all:all|2": 1}


def test_a_customer_who_bought_before_counting_began_is_in_no_cohort() -> None:
    counter, p, tally = KpiCounter("shop", WINDOW), new_profile("c"), {}
    p["purchases"]["orders"] = 3
    buy(counter, p, T0, tally)
    assert tally == {}


def test_nps_counts_promoters_passives_and_detractors_by_segment() -> None:
    counter, p, tally = KpiCounter("shop", WINDOW), new_profile("c"), {}
    for score in (10, 9, 8, 3, 0):
        counter.count(p, "survey", T0, {"score": score}, [], tally)
    counts = day(tally, T0)
    assert counts["all:all|-|-|responses"] == 5
    assert counts["buyer:prospect|-|-|promoters"] == 2
    assert counts["all:all|-|-|passives"] == 1
    assert counts["all:all|-|-|detractors"] == 2


def make() -> tuple[Processor, MemoryStore]:
    store = MemoryStore()
    return Processor(SETTINGS, store, clock_ms=lambda: 1_772_359_200_050,
                     segmenter=Segmenter(SETTINGS, clock=lambda: 0.0)), store


async def decisions_of(bodies: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The decision ids a clean pass makes, per customer."""
    proc, _ = make()
    part = Partition()
    result = await proc.process([part.message(b) for b in bodies])
    found: dict[str, list[str]] = {}
    for key, value in result.decisions:
        found.setdefault(key.decode(), []).append(orjson.loads(value)["decision_id"])
    return found


def nonzero(kpis: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The counters without those at 0: a segment size back to 0 over several writes keeps its
    field (as Redis does), one that stays at 0 within a write was never written."""
    return {k: {f: n for f, n in fields.items() if n} for k, fields in kpis.items()}


# Redelivery and producer duplicates in any mix give the counters of one clean pass.
@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["page_view", "cart_add", "slot_request", "purchase",
                                    "survey"]), min_size=1, max_size=16),
    customers=st.lists(st.sampled_from(["a", "b", "c"]), min_size=16, max_size=16),
    answers=st.lists(st.tuples(st.integers(0, 40), st.sampled_from(
        ["impression", "open", "click", "conversion"])), max_size=8),
    replays=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 30)), max_size=5),
    dupes=st.lists(st.integers(0, 30), max_size=5),
    cut=st.integers(1, 30),
)
async def test_duplicates_and_redeliveries_give_the_counts_of_one_clean_pass(
        kinds: list[str], customers: list[str], answers: list[tuple[int, str]],
        replays: list[tuple[int, int]], dupes: list[int], cut: int) -> None:
    bodies = [event(k, customer=customers[i], minute=i) for i, k in enumerate(kinds)]
    made = [(cid, d) for cid, ids in (await decisions_of(bodies)).items() for d in ids]
    if made:
        bodies += [event("feedback", customer=made[i % len(made)][0], minute=30 + n,
                         decision_id=made[i % len(made)][1], outcome=outcome)
                   for n, (i, outcome) in enumerate(answers)]
        bodies.append(event("purchase", customer=made[0][0], minute=59, amount=12.34))

    clean_proc, clean_store = make()
    clean_part = Partition()
    clean = await clean_proc.process([clean_part.message(b) for b in bodies])

    messy_part = Partition()
    log: list[RawMessage] = []
    for i, body in enumerate(bodies):
        log.append(messy_part.message(body))
        if i in dupes:
            log.append(messy_part.message(body))
    proc, store = make()
    await replay_with_redeliveries(proc.process, log, replays, cut)
    await proc.process(log)

    assert nonzero(store.kpis) == nonzero(clean_store.kpis)
    counted = sum(n for counts in clean_store.kpis.values() for f, n in counts.items()
                  if f.startswith("all:all|") and f.endswith("|decisions"))
    assert counted == len(clean.decisions)


def test_a_decision_counted_after_the_purchase_but_before_it_in_event_time_takes_it() -> None:
    counter, p, tally = KpiCounter("shop", WINDOW), new_profile("c"), {}
    counter.count_decisions(p, [decision("a", action="early")], T0, tally)
    buy(counter, p, T0 + 3 * HOUR_MS, tally, 7.0)
    # A timer's decision (due before the purchase) or another topic's, processed later:
    counter.count_decisions(p, [decision("b", action="late")], T0 + 2 * HOUR_MS, tally)
    # ... and one after the purchase claims nothing.
    counter.count_decisions(p, [decision("c", action="after")], T0 + 4 * HOUR_MS, tally)
    counts = day(tally, T0)
    assert counts["all:all|hero:uniform|early|purchases"] == 0
    assert counts["all:all|hero:uniform|early|revenue_cents"] == 0
    assert counts["all:all|hero:uniform|early|buyers"] == 0
    assert counts["all:all|hero:uniform|late|purchases"] == 1
    assert counts["all:all|hero:uniform|late|revenue_cents"] == 700
    assert counts["all:all|hero:uniform|late|buyers"] == 1
    assert "all:all|hero:uniform|after|purchases" not in counts
