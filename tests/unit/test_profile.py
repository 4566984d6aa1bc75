from __future__ import annotations

from typing import Any

from streamproc.state.profile import SESSION_GAP_MS, ProfileConfig, apply_event, new_profile

from .helpers import event

SHOE = {"product_id": "p1", "category": "shoes", "price": 20.0}


def apply(p, body, ts_ms=0):
    apply_event(p, body["type"], ts_ms, body)


def test_a_long_gap_of_event_time_starts_a_new_session():
    p = new_profile("c1")
    apply(p, event("page_view"), 0)
    apply(p, event("page_view"), SESSION_GAP_MS)  # exactly the gap: same session
    apply(p, event("page_view"), 2 * SESSION_GAP_MS + 1)
    assert p["counts"]["sessions"] == 2 and p["session"]["views"] == 1


def test_cart_lines_add_up_remove_and_leave_on_purchase():
    p = new_profile("c1")
    apply(p, event("cart_add", product=SHOE, quantity=2))
    apply(p, event("cart_add", product={**SHOE, "product_id": "p2"}, quantity=1))
    assert p["cart"]["value"] == 60.0
    apply(p, event("cart_remove", product_id="p1", quantity=5))
    assert list(p["cart"]["items"]) == ["p2"] and p["cart"]["value"] == 20.0
    apply(p, event("purchase", amount=20.0, lines=[
        {"product_id": "p2", "category": "shoes", "quantity": 1, "unit_price": 20.0}]))
    assert p["cart"]["items"] == {} and p["purchases"]["orders"] == 1


def test_removing_what_is_not_in_the_cart_changes_nothing():
    p = new_profile("c1")
    apply(p, event("cart_remove", product_id="ghost", quantity=1))
    assert p["cart"]["items"] == {} and p["cart"]["value"] == 0.0


def test_out_of_order_events_keep_first_and_last_seen_right():
    p = new_profile("c1")
    apply(p, event("search"), 5_000)
    apply(p, event("search"), 1_000)
    assert (p["first_seen_ms"], p["last_seen_ms"]) == (1_000, 5_000)


DAY = 86_400_000


def test_rfm_follows_the_btyd_definitions():
    p = new_profile("c1")
    buy = lambda amount: event("purchase", amount=amount)  # noqa: E731
    apply(p, buy(10.0), 100 * DAY)
    apply(p, buy(5.0), 100 * DAY + 3_600_000)  # same day: not a repeat purchase day
    apply(p, buy(30.0), 103 * DAY)
    apply(p, buy(50.0), 110 * DAY)
    apply(p, event("page_view"), 120 * DAY)  # time passes: T grows, nothing else
    assert p["rfm"] == {"frequency": 2, "recency": 10, "T": 20, "monetary_value": 40.0}
    assert p["purchases"]["orders"] == 4 and p["purchases"]["total"] == 95.0
    assert p["purchases"]["average"] == 23.75


def test_affinity_halves_after_one_half_life_and_ignores_arrival_order():
    config = ProfileConfig(affinity_half_life_days=10)
    shoe = {"product_id": "p1", "category": "shoes", "brand": "Stride", "price": 20.0}
    a, b = new_profile("a"), new_profile("b")
    first, second = event("product_view", product=shoe), event("product_view", product=shoe)
    apply_event(a, "product_view", 0, first, config)
    apply_event(a, "product_view", 10 * DAY, second, config)
    apply_event(b, "product_view", 10 * DAY, second, config)
    apply_event(b, "product_view", 0, first, config)  # late arrival
    assert a["affinities"]["categories"] == b["affinities"]["categories"] == {"shoes": 1.5}
    assert a["affinities"]["brands"] == {"Stride": 1.5}


def test_faded_affinities_are_forgotten():
    p = new_profile("c1")
    apply_event(p, "product_view", 0, event("product_view"), ProfileConfig(1))
    apply_event(p, "page_view", 10 * DAY, event("page_view"), ProfileConfig(1))
    assert p["affinities"]["categories"] == {}  # 2^-10 < 0.01


def test_daily_activity_is_kept_for_the_configured_days_only():
    p = new_profile("c1")
    config = ProfileConfig(activity_days=7)
    apply_event(p, "product_view", 0, event("product_view"), config)
    apply_event(p, "product_view", 6 * DAY, event("product_view"), config)
    assert p["activity"]["product_view:shoes"] == {"0": 1, "6": 1}
    apply_event(p, "search", 7 * DAY, event("search"), config)
    assert p["activity"]["product_view:shoes"] == {"6": 1}
    assert p["activity"]["search"] == {"7": 1}


def test_activity_trim_finds_an_old_day_wherever_a_late_event_put_it():
    p = new_profile("c1")
    config = ProfileConfig(activity_days=7)
    apply_event(p, "product_view", 10 * DAY, event("product_view"), config)
    apply_event(p, "product_view", 5 * DAY, event("product_view"), config)  # late, kept
    apply_event(p, "product_view", 2 * DAY, event("product_view"), config)  # late, too old
    assert p["activity"]["product_view:shoes"] == {"10": 1, "5": 1}
    apply_event(p, "search", 12 * DAY, event("search"), config)  # day 5 now too old
    assert p["activity"]["product_view:shoes"] == {"10": 1}
    assert p["activity"]["search"] == {"12": 1}


def test_feedback_counts_engagement_per_channel():
    p = new_profile("c1")
    for outcome, minute in (("impression", 0), ("open", 1), ("click", 2), ("conversion", 3)):
        apply(p, event("feedback", outcome=outcome, channel="email"), minute * 60_000)
    apply(p, event("feedback", outcome="impression"), 5 * 60_000)
    assert p["engagement"]["email"] == {"sent": 1, "opened": 1, "clicked": 1, "converted": 1,
                                        "last_ms": 180_000}
    assert p["engagement"]["web"] == {"sent": 1, "last_ms": 300_000}


def test_profile_human_shows_iso_times_and_dates_and_the_default_stays_raw(monkeypatch, capsys):
    import orjson

    from streamproc.cli import commands, main

    stored = {"profile": {"first_seen_ms": 1772359200000, "purchases": {"days": {"20513": 50.0}},
                          "activity": {"purchase": {"20513": 1}},
                          "session": {"id": "c1:1772359200000", "start_ms": 1772359200000},
                          "timers": {"lifecycle": {"due": 1780135380000, "at": [0, 1780135380000]}},
                          "cart": {"items": {"20513": 1}},
                          "provenance": {"city": ["d", 1772359200000]}},
              "version": 4, "latest_decisions": []}

    async def read(settings, customer_id):
        return orjson.loads(orjson.dumps(stored))

    monkeypatch.setattr(commands, "_read_profile", read)
    assert main(["profile", "c1"]) == 0
    raw = orjson.loads(capsys.readouterr().out)
    assert raw == {"customer_id": "c1", **stored}  # for programs: unchanged

    assert main(["profile", "c1", "--human"]) == 0
    shown = orjson.loads(capsys.readouterr().out)["profile"]
    assert shown["first_seen_ms"] == "2026-03-01T10:00:00.000Z"
    assert shown["purchases"]["days"] == {"2026-03-01": 50.0}
    assert shown["activity"] == {"purchase": {"2026-03-01": 1}}
    assert shown["session"] == {"id": "c1:1772359200000", "start_ms": "2026-03-01T10:00:00.000Z"}
    assert shown["timers"]["lifecycle"] == {"due": "2026-05-30T10:03:00.000Z",
                                            "indexed_as": [0, "2026-05-30T10:03:00.000Z"]}
    assert shown["cart"]["items"] == {"20513": 1}  # a product id, not a day
    assert shown["provenance"]["city"].startswith("declared, ")  # not the stored "d"
    assert shown["provenance"]["city"].endswith(" ago (2026-03-01T10:00:00.000Z)")


def test_trimming_the_daily_activity_keeps_the_window_whatever_it_holds() -> None:
    from random import Random

    from streamproc.state.profile import _trim_activity

    rng = Random(4)
    for _ in range(500):
        activity = {f"k{k}": {str(rng.randint(90, 130)): rng.randint(1, 3)
                              for _ in range(rng.randint(0, 3))}
                    for k in range(rng.randint(0, 6))}
        p: Any = {"activity": {k: dict(v) for k, v in activity.items()}}
        _trim_activity(p, 130, 30)
        kept = {k: {d: n for d, n in v.items() if int(d) >= 101} for k, v in activity.items()}
        assert p["activity"] == {k: v for k, v in kept.items() if v}
