"""LabelJoin: event-time labels in either arrival order, watermark negatives, lateness,
duplicates, and a restored copy that goes on exactly like the original."""

from __future__ import annotations

import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.models.join import LabelJoin

MIN = 60_000
H = 30 * MIN


def join(lateness: int = 5 * MIN, min_gap: int | None = None) -> LabelJoin:
    return LabelJoin(horizon_ms=H, lateness_ms=lateness, min_gap_ms=min_gap)


def labels(out) -> list[tuple[str, int, bool]]:
    return [(s.customer_id, s.ts_ms, s.label) for s in out]


def test_positive_when_the_purchase_comes_after_the_snapshot():
    j = join()
    assert j.snapshot("a", "e1", 0, {"x": 1.0}, 0.3) == []
    [label] = j.purchase("a", "p1", 20 * MIN)
    assert (label.label, label.ts_ms, label.score, label.features) == (True, 0, 0.3, {"x": 1.0})


def test_positive_when_the_purchase_arrives_first():
    j = join()
    assert j.purchase("a", "p1", 20 * MIN) == []
    assert labels(j.snapshot("a", "e1", 0, {}, 0.3)) == [("a", 0, True)]
    # A snapshot taken after the purchase is not explained by it.
    assert j.snapshot("a", "e2", 21 * MIN, {}, 0.3) == []


def test_a_purchase_after_the_horizon_does_not_make_it_positive():
    j = join()
    j.snapshot("a", "e1", 0, {}, None)
    assert j.purchase("a", "p1", H + 1) == []
    assert len(j.pending) == 1


def test_negative_once_the_watermark_passes_the_horizon_even_if_the_customer_never_returns():
    j = join(lateness=5 * MIN)
    j.snapshot("idle", "e1", 0, {}, None)
    # Other customers' traffic moves event time on: H + lateness is not enough yet...
    assert j.snapshot("b", "e2", H + 5 * MIN, {}, None) == []
    # ... just past it, the idle customer's window closes.
    assert labels(j.snapshot("b", "e3", H + 5 * MIN + 1, {}, None)) == [("idle", 0, False)]


def test_a_purchase_late_within_the_allowance_still_labels_positive():
    j = join(lateness=10 * MIN)
    j.snapshot("a", "e1", 0, {}, None)
    j.snapshot("b", "e2", H + 9 * MIN, {}, None)  # event time runs ahead of a's purchase
    assert labels(j.purchase("a", "p1", 29 * MIN)) == [("a", 0, True)]


def test_a_snapshot_later_than_the_allowance_is_labelled_at_once_from_the_purchases_kept():
    j = join(lateness=0)
    j.purchase("a", "p1", 10 * MIN)
    j.snapshot("b", "e1", 2 * H + MIN, {}, None)
    assert labels(j.snapshot("a", "e2", 5 * MIN, {}, None)) == [("a", 5 * MIN, True)]
    assert labels(j.snapshot("c", "e3", 5 * MIN, {}, None)) == [("c", 5 * MIN, False)]
    assert j.late_labelled == 1
    # Older than two horizons behind the watermark: dropped, counted.
    assert j.snapshot("d", "e4", 0, {}, None) == [] and j.too_late == 1


def test_duplicate_observations_and_purchases_label_nothing_twice():
    j = join()
    j.snapshot("a", "e1", 0, {}, None)
    assert j.snapshot("a", "e1", 0, {}, None) == []
    assert len(j.purchase("a", "p1", MIN)) == 1
    assert j.purchase("a", "p1", MIN) == []
    assert j.snapshot("a", "e1", 0, {}, None) == []
    assert j.duplicates == 3


def test_a_second_purchase_labels_only_what_is_still_pending():
    j = join()
    j.snapshot("a", "e1", 0, {}, None)
    assert len(j.purchase("a", "p1", MIN)) == 1
    assert j.purchase("a", "p2", 2 * MIN) == []


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        LabelJoin(horizon_ms=0, lateness_ms=0)


Item = tuple[str, str, str, int]  # kind, customer, event id, ts


def stream(rng: random.Random, n: int) -> list[Item]:
    items: list[Item] = []
    ts = 0
    for i in range(n):
        ts += rng.randrange(0, 4 * MIN)
        kind = "purchase" if rng.random() < 0.15 else "snapshot"
        items.append((kind, rng.choice("abcde"), f"e{i}", ts))
    return items


def feed(j: LabelJoin, items: list[Item]) -> list[tuple[str, int, bool]]:
    out = []
    for kind, cid, eid, ts in items:
        if kind == "purchase":
            out.extend(labels(j.purchase(cid, eid, ts)))
        else:
            out.extend(labels(j.snapshot(cid, eid, ts, {"t": float(ts)}, None)))
    return out


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(0, 200), shuffle=st.integers(0, 6))
def test_labels_do_not_depend_on_small_disorder_nor_on_a_restart(seed, cut, shuffle):
    rng = random.Random(seed)
    items = stream(rng, 200)
    # No thinning here (one snapshot per ms bucket): which of two snapshots of one bucket is
    # kept depends on what was labelled in between, i.e. on the arrival order.
    ordered = sorted(feed(join(lateness=30 * MIN, min_gap=1), items))
    # Disorder smaller than the allowance: each item moved by up to `shuffle` places (at most
    # 6 x 4 minutes of event time), with a restart from a pickled copy at `cut`.
    keys = {it: i + rng.uniform(0, shuffle) for i, it in enumerate(items)}
    disordered = sorted(items, key=keys.__getitem__)
    j = join(lateness=30 * MIN, min_gap=1)
    got = feed(j, disordered[:cut])
    j = pickle.loads(pickle.dumps(j))
    got += feed(j, disordered[cut:])
    # Duplicates sprinkled in change nothing either.
    got += feed(j, rng.sample(disordered, 20))
    assert sorted(got) == ordered
