"""The contextual policy: features, exact propensities, learning, cold start, its state, and the
engine using it per slot (with its reasons and the lessons the learner learns it from)."""

from __future__ import annotations

import copy
import json
import pickle
import random
from collections import Counter

import pytest

from streamproc.decisions.bandit import BanditError, ThompsonChooser
from streamproc.decisions.catalogue import parse_time_ms
from streamproc.decisions.contextual import (
    DIMENSIONS,
    FEATURE_NAMES,
    ContextualChooser,
    as_vector,
    context_features,
)
from streamproc.decisions.engine import Engine, Lesson, reward_of
from streamproc.decisions.lessons import BanditLearner
from streamproc.state.profile import new_profile

from .helpers import GRANTED
from .test_decisions_engine import SHIPPED, Customer, catalogue

NOON_UTC = 12 * 3_600_000  # 1 January 1970, a Thursday


def mobile_or_desktop(device: str) -> dict[str, float]:
    return context_features({"device": device}, NOON_UTC)


def trained(min_outcomes: int = 5, n: int = 40) -> ContextualChooser:
    """App offers work on mobile, web offers on desktop."""
    chooser = ContextualChooser(exploration=0.1, min_outcomes=min_outcomes)
    for _ in range(n):
        for device in ("mobile", "desktop"):
            x = mobile_or_desktop(device)
            chooser.learn("hero", "app_offer", x, 1.0 if device == "mobile" else 0.0)
            chooser.learn("hero", "web_offer", x, 1.0 if device == "desktop" else 0.0)
    return chooser


# -- features ------------------------------------------------------------------------------------

def test_features_are_in_the_unit_interval_and_name_the_moment() -> None:
    p = new_profile("c1")
    p.update(device="tablet", scores={"intent": 3.0},
             segments={"intent": "warm", "cluster": "11", "value_tier": "profitable"},
             attributes={"timezone": "Asia/Tokyo"})
    p["cart"] = {"items": {str(i): {} for i in range(9)}, "value": 10_000.0, "updated_ms": 0}
    p["purchases"]["last_ms"] = 0
    p["engagement"] = {"email": {"sent": 4, "clicked": 1}}
    saturday_3am_utc = 2 * 86_400_000 + 3 * 3_600_000  # 12:00 in Tokyo
    x = context_features(p, saturday_3am_utc)
    assert all(0.0 <= v <= 1.0 for v in x.values()), x
    assert x["intent"] == 1.0 and x["basket"] == 1.0 and x["basket_items"] == 1.0
    assert {"intent_warm", "cluster_3", "value_profitable", "device_tablet", "hour_lunch",
            "weekend"} <= set(x)
    assert 0.9 < x["recency"] < 1.0 and x["engagement"] == 0.25
    assert set(x) <= set(FEATURE_NAMES)


def test_an_empty_profile_has_only_the_bias_and_the_hour() -> None:
    assert context_features(new_profile("c1"), 3 * 3_600_000) == {"bias": 1.0, "hour_night": 1.0}


# -- the policy ----------------------------------------------------------------------------------

def test_propensities_are_exact_bounded_and_match_the_picks() -> None:
    chooser = trained()
    x = mobile_or_desktop("mobile")
    candidates = ["app_offer", "web_offer", "video"]
    for _ in range(5):
        chooser.learn("hero", "video", x, 0.0)
    probs = chooser.probabilities(candidates, "hero", x)
    assert sum(probs) == pytest.approx(1.0)
    assert min(probs) == pytest.approx(0.1 / 3)  # exploration is bounded to its share
    counts: Counter[str] = Counter()
    for i in range(6000):
        pick = chooser.choose(candidates, "hero", x, f"d{i}".encode())
        assert pick is not None
        assert pick.propensity == probs[candidates.index(pick.action_id)]
        counts[pick.action_id] += 1
    for action, p in zip(candidates, probs, strict=True):
        assert counts[action] / 6000 == pytest.approx(p, abs=0.015)


def test_it_learns_which_action_suits_which_customer() -> None:
    chooser = trained()
    for device, best in (("mobile", "app_offer"), ("desktop", "web_offer")):
        probs = chooser.probabilities(["app_offer", "web_offer"], "hero",
                                      mobile_or_desktop(device))
        assert probs[["app_offer", "web_offer"].index(best)] == pytest.approx(0.95)


def test_a_pick_names_the_features_that_drove_it() -> None:
    chooser = trained()
    picks = [chooser.choose(["app_offer", "web_offer"], "hero", mobile_or_desktop("desktop"),
                            f"seed{i}".encode()) for i in range(40)]
    best = [p for p in picks if p is not None and p.action_id == "web_offer"]
    explored = [p for p in picks if p is not None and p.action_id == "app_offer"]
    assert best and explored
    assert "features that drove it: device_desktop=1.00" in best[0].reasons[0]
    assert "explored app_offer" in explored[0].reasons[0]
    assert "the best, web_offer" in explored[0].reasons[0]


def test_cold_actions_leave_the_pick_to_the_bandit() -> None:
    chooser = trained(min_outcomes=50, n=20)  # 40 outcomes per action in hero
    assert chooser.cold(["app_offer", "web_offer"], "hero") == ["app_offer", "web_offer"]
    assert chooser.choose(["app_offer"], "hero", mobile_or_desktop("mobile"), b"s") is None
    assert chooser.choose(["app_offer"], "other_slot", {}, b"s") is None


def test_bad_settings_and_rewards_are_refused() -> None:
    with pytest.raises(BanditError):
        ContextualChooser(exploration=0.0)
    with pytest.raises(BanditError):
        ContextualChooser(alpha=-1.0)
    with pytest.raises(BanditError):
        ContextualChooser().learn("s", "a", {}, float("nan"))


def test_the_state_is_plain_json_and_gives_the_same_policy_back() -> None:
    chooser = trained()
    chooser.expect("d1", "hero", "app_offer", tuple(as_vector({"bias": 1.0})), 5)
    state = json.loads(json.dumps(chooser.to_state()))
    copy_ = ContextualChooser.from_state(state)
    x = mobile_or_desktop("mobile")
    assert copy_.probabilities(["app_offer", "web_offer"], "hero", x) == \
        chooser.probabilities(["app_offer", "web_offer"], "hero", x)
    assert copy_.pending == 1 and copy_.updates == chooser.updates
    # Pickled (the learner's snapshot) as that plain state.
    assert pickle.loads(pickle.dumps(chooser)).to_state() == chooser.to_state()
    state["features"] = [*state["features"][:-1], "moon_phase"]  # a name this version lacks
    with pytest.raises(BanditError, match="another feature set"):
        ContextualChooser.from_state(state)
    state["features"] = ["bias"]  # names it knows, but the numbers are of more features
    with pytest.raises(BanditError, match="do not fit its 1 features"):
        ContextualChooser.from_state(state)


def test_expectations_learn_their_reward_or_a_zero_after_the_wait() -> None:
    chooser = ContextualChooser(reward_wait_ms=1000)
    x = tuple(as_vector(mobile_or_desktop("mobile")))
    chooser.expect("d1", "hero", "app_offer", x, 0)
    chooser.expect("d1", "hero", "app_offer", x, 0)  # a copy
    chooser.expect("d2", "hero", "app_offer", x, 10)
    assert chooser.reward("d1", 1.0) and not chooser.reward("d1", 1.0)
    assert chooser.advance(500) == 0 and chooser.advance(1010) == 1
    assert chooser.outcomes("hero", "app_offer") == 2 and chooser.pending == 0
    theta = chooser.arms["hero/app_offer"].theta()
    assert theta[FEATURE_NAMES.index("device_mobile")] > 0


# -- the learner's side --------------------------------------------------------------------------

def test_the_learner_teaches_both_policies_and_scales_revenue() -> None:
    learner = BanditLearner(ThompsonChooser(reward_wait_ms=60_000))
    x = tuple(as_vector(mobile_or_desktop("mobile")))
    for i, revenue in enumerate([40.0, 60.0, 50.0, 5000.0]):
        learner.apply(Lesson("expect", f"d{i}", "app_offer", "hero:new", 0, features=x), None)
        learner.apply(Lesson("reward", f"d{i}", "app_offer", "hero:new", 0, revenue,
                             revenue=True), None)
    assert learner.contextual.outcomes("hero", "app_offer") == 4
    alpha, beta = learner.chooser.posterior("hero:new", "app_offer")
    # Each reward in [0, 1]; the 5000 order is capped, not a hundred successes.
    assert alpha + beta == 6.0 and 1.0 + 2.0 < alpha < 1.0 + 4.0
    assert learner.stats()["contextual_outcomes"] == 4


def test_an_expect_without_features_teaches_only_the_bandit() -> None:
    learner = BanditLearner(ThompsonChooser(reward_wait_ms=60_000))
    learner.apply(Lesson("expect", "d1", "a", "hero:new", 0), None)
    learner.apply(Lesson("reward", "d1", "a", "hero:new", 0, 1.0), None)
    assert learner.chooser.updates == 1 and learner.contextual.updates == 0


# -- per slot in the catalogue -------------------------------------------------------------------

def contextual_catalogue(reward: str = "click", experiments: list | None = None) -> object:
    slots = copy.deepcopy(SHIPPED["slots"])
    for slot in slots:
        if slot["id"] == "cart_drawer":
            slot.update(policy="contextual", reward=reward)
    return catalogue(slots=slots, experiments=experiments or [])


def engine_with(chooser: ContextualChooser, **kw: object) -> Engine:
    engine = Engine(contextual_catalogue(**kw), ThompsonChooser(),  # type: ignore[arg-type]
                    consent_defaults=GRANTED)
    engine.contextual = chooser
    return engine


def cart_add(engine: Engine, device: str, cid: str = "c1") -> dict:
    c = Customer(engine, cid)
    [record] = c.event("cart_add", "2026-03-02T12:30:00Z",
                       product={"product_id": "p1", "category": "shoes", "price": 30.0},
                       quantity=1, context={"device": device})
    c.record = record  # type: ignore[attr-defined]
    return {"record": record, "lessons": c.lessons}


def warm_cart_drawer() -> ContextualChooser:
    chooser = ContextualChooser(exploration=0.1, min_outcomes=10)
    rng = random.Random(3)
    for _ in range(60):
        device = rng.choice(["mobile", "desktop"])
        x = context_features({"device": device, "cart": {"value": 30.0, "items": {"p1": {}}}},
                             NOON_UTC)
        chooser.learn("cart_drawer", "free_delivery_nudge", x, float(device == "mobile"))
        chooser.learn("cart_drawer", "cart_reminder", x, float(device == "desktop"))
    return chooser


def test_a_contextual_slot_picks_by_features_logs_them_and_says_why() -> None:
    engine = engine_with(warm_cart_drawer())
    out = cart_add(engine, "mobile")
    record = out["record"]
    assert record["policy"] == "linucb-v1"
    assert record["action"]["id"] == "free_delivery_nudge"
    assert record["features"]["device_mobile"] == 1.0
    assert any("features that drove it: device_mobile" in r for r in record["reasons"])
    [lesson] = out["lessons"]
    assert lesson.features is not None and len(lesson.features) == DIMENSIONS
    assert cart_add(engine, "desktop", "c2")["record"]["action"]["id"] == "cart_reminder"


def test_a_cold_contextual_slot_falls_back_to_the_bandit_and_says_so() -> None:
    out = cart_add(engine_with(ContextualChooser(min_outcomes=30)), "mobile")
    record = out["record"]
    assert record["policy"] == "thompson-v1"
    assert any("contextual policy still learning" in r for r in record["reasons"])
    assert out["lessons"][0].features is not None  # it learns behind the bandit


def test_an_experiment_arm_can_serve_the_contextual_policy_to_a_share() -> None:
    experiment = {"id": "ctx-1", "slots": ["cart_drawer"], "control_share": 0.0,
                  "arms": [{"id": "contextual", "policy": "contextual", "share": 0.5},
                           {"id": "bandit", "policy": "bandit", "share": 0.5}]}
    engine = engine_with(warm_cart_drawer(), experiments=[experiment])
    policies = Counter()
    for i in range(40):
        record = cart_add(engine, "mobile", f"c{i}")["record"]
        policies[(record["experiment"]["arm"], record["policy"])] += 1
    assert set(policies) == {("contextual", "linucb-v1"), ("bandit", "thompson-v1")}


@pytest.mark.parametrize(("kind", "data", "expected"), [
    ("click", {"outcome": "click"}, (1.0, False)),
    ("click", {"outcome": "conversion", "revenue": 10.0}, (1.0, False)),
    ("conversion", {"outcome": "click"}, (None, False)),
    ("conversion", {"outcome": "conversion"}, (1.0, False)),
    ("revenue", {"outcome": "conversion", "revenue": 12.5}, (12.5, True)),
    ("revenue", {"outcome": "conversion"}, (0.0, True)),
    ("revenue", {"outcome": "dismiss"}, (0.0, False)),
    ("revenue", {"outcome": "impression"}, (None, False)),
])
def test_each_slot_is_rewarded_by_what_its_catalogue_says(kind: str, data: dict,
                                                          expected: tuple) -> None:
    assert reward_of(kind, data) == expected


def test_a_revenue_slot_waits_for_the_conversion_and_sends_its_amount() -> None:
    engine = engine_with(warm_cart_drawer(), reward="revenue")
    c = Customer(engine)
    [record] = c.event("cart_add", "2026-03-02T12:30:00Z",
                       product={"product_id": "p1", "category": "shoes", "price": 30.0},
                       quantity=1)
    did = record["decision_id"]
    assert engine.feedback(c.p, {"decision_id": did, "outcome": "click"}, 0) == []
    [lesson] = engine.feedback(c.p, {"decision_id": did, "outcome": "conversion",
                                     "revenue": 80.0}, 0)
    assert (lesson.reward, lesson.revenue) == (80.0, True)


# -- the moment in conditions --------------------------------------------------------------------

def lunch_request(engine: Engine, at: str, device: str = "mobile",
                  timezone: str | None = None) -> list[str]:
    c = Customer(engine, f"c-{at[:13]}-{device}".replace("T", "h"))
    if timezone:
        c.p["attributes"]["timezone"] = timezone
    c.event("page_view", at, url="https://shop.example/", page_type="home",
            context={"device": device})
    record = c.request("homepage_hero", at)
    return [*record["candidates"], record["action"]["id"]]


def test_the_lunch_offer_follows_the_customers_own_clock() -> None:
    engine = Engine(catalogue(experiments=[]), ThompsonChooser(), consent_defaults=GRANTED)
    monday = "2026-03-02T{}:30:00Z"
    assert "lunch_break_deal" in lunch_request(engine, monday.format(12))
    assert "lunch_break_deal" not in lunch_request(engine, monday.format(12), device="desktop")
    assert "lunch_break_deal" not in lunch_request(engine, monday.format("09"))
    assert "lunch_break_deal" not in lunch_request(engine, "2026-03-07T12:30:00Z")  # Saturday
    # 03:30 UTC is 12:30 in Tokyo; 12:30 UTC is 21:30 there.
    assert "lunch_break_deal" in lunch_request(engine, monday.format("03"), timezone="Asia/Tokyo")
    assert "lunch_break_deal" not in lunch_request(engine, monday.format(12),
                                                   timezone="Asia/Tokyo")


def test_a_context_update_brings_the_weather_offer_while_the_report_is_fresh() -> None:
    engine = Engine(catalogue(experiments=[]), ThompsonChooser(), consent_defaults=GRANTED)
    c = Customer(engine, "rainy")
    c.event("context_update", "2026-03-02T09:00:00Z", weather="rain", temperature_c=8.0,
            place="city:london")
    c.event("context_update", "2026-03-02T08:00:00Z", weather="clear")  # late: an older report
    assert c.p["surroundings"] == {"weather": "rain", "temperature_c": 8.0,
                                   "place": "city:london", "ts_ms": parse_time_ms(
                                       "2026-03-02T09:00:00Z")}
    assert "rainy_day_delivery" in c.request("homepage_hero", "2026-03-02T10:00:00Z")[
        "candidates"]
    stale = c.request("homepage_hero", "2026-03-02T13:00:00Z")
    assert "rainy_day_delivery" not in stale["candidates"]
    assert any("rainy_day_delivery: data stale: surroundings.weather" in r
               for r in stale["reasons"]), stale["reasons"]
    c.event("context_update", "2026-03-02T13:30:00Z", weather="clear")
    assert "rainy_day_delivery" not in c.request("homepage_hero", "2026-03-02T13:31:00Z")[
        "candidates"]
