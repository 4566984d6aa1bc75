"""Delayed labels: purchases label recent snapshots positive, time labels old ones negative."""

from __future__ import annotations

import json
import random

import pytest

from streamproc.models.labels import Labelled, PendingLabels

MIN = 60_000
HORIZON = 30 * MIN


def pairs(items: list[Labelled]) -> list[tuple[dict[str, float], bool]]:
    return [(i.features, i.label) for i in items]


def test_purchase_within_the_horizon_labels_positive() -> None:
    labels = PendingLabels(horizon_ms=HORIZON)
    labels.add("c1", 0, {"v": 1.0}, score=0.3)
    labels.add("c1", 5 * MIN, {"v": 2.0})
    got = labels.on_purchase("c1", 20 * MIN)
    assert pairs(got) == [({"v": 1.0}, True), ({"v": 2.0}, True)]
    assert got[0].ts_ms == 0 and got[0].score == 0.3 and got[0].customer_id == "c1"
    assert got[1].score is None
    assert len(labels) == 0 and labels.expire(10 * HORIZON) == []


def test_no_purchase_expires_negative_after_the_horizon() -> None:
    labels = PendingLabels(horizon_ms=HORIZON)
    labels.add("c1", 0, {"v": 1.0})
    assert labels.expire(HORIZON) == []  # exactly at the horizon a purchase still counts
    assert pairs(labels.expire(HORIZON + 1)) == [({"v": 1.0}, False)]
    assert labels.on_purchase("c1", HORIZON + 2) == []


def test_a_purchase_just_after_the_horizon_is_late_and_the_snapshot_negative() -> None:
    labels = PendingLabels(horizon_ms=HORIZON)
    labels.add("c1", 0, {"v": 1.0})
    labels.add("c1", 10 * MIN, {"v": 2.0})
    # The purchase comes before the watermark passed: only the snapshot in its horizon counts.
    assert pairs(labels.on_purchase("c1", HORIZON + 1)) == [({"v": 2.0}, True)]
    assert pairs(labels.expire(HORIZON + 1)) == [({"v": 1.0}, False)]


def test_a_duplicate_purchase_labels_nothing_twice() -> None:
    labels = PendingLabels(horizon_ms=HORIZON)
    labels.add("c1", 0, {"v": 1.0})
    assert len(labels.on_purchase("c1", MIN)) == 1
    assert labels.on_purchase("c1", MIN) == []
    labels.add("c1", 2 * MIN, {"v": 2.0})  # after the purchase: waits for another one
    assert labels.on_purchase("c1", MIN) == []
    assert pairs(labels.on_purchase("c1", 3 * MIN)) == [({"v": 2.0}, True)]


def test_other_customers_and_later_snapshots_are_left_alone() -> None:
    labels = PendingLabels(horizon_ms=HORIZON)
    labels.add("c1", 0, {"v": 1.0})
    labels.add("c2", 0, {"v": 2.0})
    labels.add("c1", 10 * MIN, {"v": 3.0})
    assert pairs(labels.on_purchase("c1", 5 * MIN)) == [({"v": 1.0}, True)]
    assert labels.customers() == ["c1", "c2"] and len(labels) == 2
    assert labels.due_ms("c1") == 10 * MIN + HORIZON + 1
    assert labels.due_ms("nobody") is None


def test_one_snapshot_per_minute_bucket_and_a_cap_per_customer() -> None:
    labels = PendingLabels(horizon_ms=HORIZON, min_gap_ms=MIN, max_per_customer=3)
    labels.add("c1", 1_000, {"v": 1.0})
    labels.add("c1", 30_000, {"v": 2.0})  # same minute: the later one stays
    labels.add("c1", 10_000, {"v": 9.0})  # same minute but earlier (out of order): ignored
    assert [s[1] for s in labels.customer_to_list("c1")] == [{"v": 2.0}]
    for minute in range(1, 5):
        labels.add("c1", minute * MIN, {"v": float(10 + minute)})
    kept = [s[1]["v"] for s in labels.customer_to_list("c1")]
    assert kept == [12.0, 13.0, 14.0]  # the oldest are dropped unlabelled


def test_expire_orders_by_snapshot_time_then_customer() -> None:
    labels = PendingLabels(horizon_ms=HORIZON)
    labels.add("b", 2 * MIN, {"v": 2.0})
    labels.add("a", 2 * MIN, {"v": 1.0})
    labels.add("c", MIN, {"v": 0.0})
    got = labels.expire(10 * HORIZON)
    assert [(i.customer_id, i.ts_ms) for i in got] == [("c", MIN), ("a", 2 * MIN), ("b", 2 * MIN)]


def stream(seed: int, n: int = 3000) -> list[tuple[str, str, int]]:
    """Random browsing and purchases of 20 customers, in event time (with duplicates)."""
    rng = random.Random(seed)
    t, out = 0, []
    for _ in range(n):
        t += rng.randint(0, 40_000)
        customer = f"c{rng.randint(0, 19)}"
        kind = "purchase" if rng.random() < 0.03 else "view"
        out.append((kind, customer, t))
        if kind == "purchase" and rng.random() < 0.3:
            out.append((kind, customer, t))  # a redelivered duplicate
    return out


def run(events: list[tuple[str, str, int]], labels: PendingLabels,
        restart_at: int | None = None) -> list[Labelled]:
    out: list[Labelled] = []
    for i, (kind, customer, t) in enumerate(events):
        if i == restart_at:
            labels = PendingLabels.from_dict(json.loads(json.dumps(labels.to_dict())))
        if kind == "purchase":
            out += labels.on_purchase(customer, t)
        else:
            labels.add(customer, t, {"t": float(t)}, score=0.5)
        out += labels.expire(t)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_restart_in_the_middle_gives_the_same_labels(seed: int) -> None:
    events = stream(seed)
    straight = run(events, PendingLabels())
    restarted = run(events, PendingLabels(), restart_at=len(events) // 2)
    assert straight == restarted
    assert any(i.label for i in straight) and any(not i.label for i in straight)
    # every labelled snapshot is labelled once
    times = [(i.customer_id, i.ts_ms) for i in straight]
    assert len(times) == len(set(times))


def test_one_customer_round_trips_through_json() -> None:
    labels = PendingLabels()
    labels.add("c1", 0, {"v": 1.0}, score=0.25)
    labels.add("c1", 5 * MIN, {"v": 2.0})
    stored = json.dumps(labels.customer_to_list("c1"))
    other = PendingLabels()
    other.load_customer("c1", json.loads(stored))
    assert other.to_dict() == labels.to_dict()
    assert pairs(other.expire_customer("c1", 5 * MIN + HORIZON)) == [({"v": 1.0}, False)]
    other.load_customer("c1", [])
    assert len(other) == 0


def test_bad_settings_and_formats_are_refused() -> None:
    with pytest.raises(ValueError):
        PendingLabels(horizon_ms=0)
    with pytest.raises(ValueError, match="format"):
        PendingLabels.from_dict({"format": 99})
