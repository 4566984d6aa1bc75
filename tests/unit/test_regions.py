"""A region's context_update: kept per region, seen by the decisions of the customers there
(their own fresher report wins), invalid region ids dead-lettered; the weather as contextual
features, named in the reasons with the region it came from."""

from __future__ import annotations

import copy

import orjson
import pytest

from streamproc.api.deciding import Decider
from streamproc.decisions.bandit import ThompsonChooser
from streamproc.decisions.contextual import (
    DIMENSIONS,
    FEATURE_NAMES,
    FEATURE_SETS,
    ContextualChooser,
    as_vector,
    context_features,
)
from streamproc.decisions.engine import Engine
from streamproc.processor import Processor
from streamproc.state.memory import MemoryStore
from streamproc.state.profile import new_profile
from streamproc.state.regions import (
    RegionContexts,
    effective,
    region_of,
    region_surroundings,
)
from streamproc.worker.metrics import MeteredStore, WorkerMetrics

from .helpers import GRANTED, SETTINGS, Partition, event
from .test_decisions_engine import catalogue

HOUR = 3_600_000


def make() -> tuple[Processor, MemoryStore]:
    store = MemoryStore()
    engine = Engine(catalogue(experiments=[]), ThompsonChooser(), consent_defaults=GRANTED)
    return Processor(SETTINGS, store, clock_ms=lambda: 1_772_359_200_050, engine=engine), store


def decisions(result) -> list[dict]:
    return [orjson.loads(value) for _, value in result.decisions]


# -- whose region, which report ----------------------------------------------------------------

def test_the_declared_region_wins_over_the_city_of_the_events() -> None:
    p = new_profile("c1")
    assert region_of(p) is None
    p["location"] = {"city": "New York"}
    assert region_of(p) == "city:new-york"
    p["attributes"] = {"city": "Boston"}  # declared: before the city of the events
    assert region_of(p) == "city:boston"
    p["attributes"] = {"region": "US-East", "city": "Boston"}
    assert region_of(p) == "us-east"
    p["attributes"] = {"region": "not {a} region"}  # not an id: the city again
    assert region_of(p) == "city:new-york"


def test_the_fresher_report_wins_and_the_customers_own_comes_back() -> None:
    own = {"weather": "clear", "ts_ms": 5 * HOUR}
    older = {"weather": "rain", "ts_ms": 4 * HOUR}
    newer = {"weather": "snow", "ts_ms": 6 * HOUR}
    assert effective(own, older) is own and effective(own, newer) is newer
    p = new_profile("c1")
    p["attributes"] = {"region": "oslo"}
    p["surroundings"] = own
    with region_surroundings(p, {"oslo": older}) as region:
        assert region is None and p["surroundings"] is own
    with pytest.raises(RuntimeError), region_surroundings(p, {"oslo": newer}) as region:
        assert region == "oslo" and p["surroundings"]["weather"] == "snow"
        raise RuntimeError("the engine failed")
    assert p["surroundings"] is own  # restored even so
    del p["surroundings"]
    with region_surroundings(p, {"oslo": newer}):
        assert p["surroundings"]["region"] == "oslo"
    assert "surroundings" not in p


async def test_the_cache_reads_at_most_every_max_age_and_keeps_its_own_newer_reports() -> None:
    store = MemoryStore()
    now = [0.0]
    cache = RegionContexts(30, clock=lambda: now[0])
    await store.save_region("oslo", {"ts_ms": 10, "weather": "rain"})
    await cache.refresh(store)
    assert cache.contexts == {"oslo": {"ts_ms": 10, "weather": "rain"}} and cache.reads == 1
    await store.save_region("oslo", {"ts_ms": 20, "weather": "snow"})
    now[0] = 29.0
    await cache.refresh(store)
    assert cache.contexts["oslo"]["weather"] == "rain" and cache.reads == 1  # not yet
    cache.put("oslo", {"ts_ms": 30, "temperature_c": -2.0})  # a report this worker applied
    now[0] = 31.0
    await cache.refresh(store)
    assert cache.reads == 2
    assert cache.contexts["oslo"] == {"ts_ms": 30, "weather": "rain", "temperature_c": -2.0}


# -- through the processor ----------------------------------------------------------------------

async def test_a_region_report_reaches_the_decisions_of_its_customers() -> None:
    proc, store = make()
    part = Partition()
    first = await proc.process([
        part.message(event("page_view", customer="c1", context={"city": "London"})),
        part.message(event("page_view", customer="c2", context={"city": "Paris"})),
        part.message(event("context_update", customer="region:City:London", minute=1,
                           weather="rain", temperature_c=9.5)),
    ])
    assert not first.deadletters and first.applied == 3
    # Kept as the region's context, not as a customer.
    assert store.regions == {"city:london": {"weather": "rain", "temperature_c": 9.5,
                                             "ts_ms": 1_772_359_260_000}}
    assert await store.read_profile("region:City:London") is None
    result = await proc.process([
        part.message(event("slot_request", customer=c, minute=5)) for c in ("c1", "c2")])
    london, paris = decisions(result)
    assert "rainy_day_delivery" in london["candidates"]
    assert "rainy_day_delivery" not in paris["candidates"]
    # Not stored in the customer's profile: the profile keeps only their own reports.
    p = (await store.read_profile("c1"))["profile"]
    assert "surroundings" not in p or not p["surroundings"].get("weather")


async def test_the_customers_own_fresher_report_wins_over_the_regions() -> None:
    proc, _ = make()
    part = Partition()
    await proc.process([
        part.message(event("profile_update", customer="c1",
                           attributes={"region": "city:london"})),
        part.message(event("context_update", customer="region:city:london", minute=1,
                           weather="rain")),
        part.message(event("context_update", customer="c1", minute=2, weather="clear")),
    ])
    own = decisions(await proc.process([part.message(event("slot_request", minute=5))]))[0]
    assert "rainy_day_delivery" not in own["candidates"]
    # Later in the day (the hero shown at 10:05 is no longer fresh), the region's newer report.
    await proc.process([part.message(event("context_update", customer="region:city:london",
                                           ts="2026-03-01T17:55:00Z", weather="storm"))])
    region = decisions(await proc.process([part.message(event(
        "slot_request", ts="2026-03-01T18:00:00Z"))]))[0]
    assert "rainy_day_delivery" in region["candidates"]
    assert region["features"]["weather_wet"] == 1.0


async def test_an_older_report_arriving_late_changes_nothing() -> None:
    proc, store = make()
    part = Partition()
    await proc.process([
        part.message(event("context_update", customer="region:oslo", minute=9, weather="snow")),
        part.message(event("context_update", customer="region:oslo", minute=3, weather="clear",
                           temperature_c=4.0)),
        part.message(event("context_update", customer="region:oslo", minute=9)),  # says nothing
    ])
    assert store.regions["oslo"] == {"weather": "snow", "ts_ms": 1_772_359_740_000}


@pytest.mark.parametrize(("customer", "type_", "reason"), [
    ("region:", "context_update", "invalid_region"),
    ("region:" + "x" * 65, "context_update", "invalid_region"),
    ("region:city:london", "page_view", "reserved_id"),
])
async def test_invalid_region_ids_are_dead_lettered_with_the_reason(
        customer: str, type_: str, reason: str) -> None:
    proc, store = make()
    part = Partition()
    result = await proc.process([part.message(event(type_, customer=customer)),
                                 part.message(event("page_view", customer="c1"))])
    assert result.applied == 1 and len(result.deadletters) == 1  # the worker goes on
    key, record = result.deadletters[0]
    dead = orjson.loads(record)
    assert dead["reason"] == reason and "region" in dead["error"] and key == customer.encode()
    assert store.regions == {}


# -- weather as contextual features -------------------------------------------------------------

def test_fresh_weather_becomes_features_and_a_stale_report_none() -> None:
    p = new_profile("c1")
    p["surroundings"] = {"weather": "snow", "temperature_c": -1.0, "ts_ms": 0}
    x = context_features(p, 2 * HOUR)
    assert x["weather_wet"] == 1.0 and x["temp_cold"] == 1.0
    p["surroundings"] = {"weather": "heat", "temperature_c": 31.0, "ts_ms": 0}
    x = context_features(p, 2 * HOUR)
    assert x["weather_fair"] == 1.0 and x["temp_warm"] == 1.0 and "weather_wet" not in x
    assert not {"weather_wet", "weather_fair", "temp_cold", "temp_mild", "temp_warm"} & set(
        context_features(p, 7 * HOUR))  # six hours on, not the moment's weather any more
    assert set(FEATURE_SETS[0]) < set(FEATURE_NAMES) == set(FEATURE_SETS[-1])


def rainy(wet: bool) -> dict[str, float]:
    return {"bias": 1.0, "weather_wet": 1.0} if wet else {"bias": 1.0, "weather_fair": 1.0}


def test_the_policy_learns_a_weather_dependent_response_and_names_the_region() -> None:
    chooser = ContextualChooser(exploration=0.1, min_outcomes=5)
    for _ in range(30):
        for wet in (True, False):
            chooser.learn("hero", "delivery", rainy(wet), 1.0 if wet else 0.0)
            chooser.learn("hero", "sale", rainy(wet), 0.0 if wet else 1.0)
    pick = chooser.choose(["delivery", "sale"], "hero", rainy(True), b"d1", "region oslo")
    assert pick is not None and pick.action_id == "delivery"
    assert pick.propensity == pytest.approx(0.95)
    assert "weather_wet=1.00" in pick.reasons[0] and "region oslo" in pick.reasons[0]
    dry = chooser.choose(["delivery", "sale"], "hero", rainy(False), b"d1")
    assert dry is not None and dry.action_id == "sale" and "region" not in dry.reasons[0]


async def test_a_rule_that_read_the_regions_weather_says_so() -> None:
    proc, _ = make()
    part = Partition()
    await proc.process([
        part.message(event("page_view", customer="c1", context={"city": "Oslo"})),
        part.message(event("context_update", customer="region:city:oslo", minute=1,
                           weather="snow", temperature_c=-3.0)),
    ])
    for minute in range(2, 40):  # until the bandit shows the weather offer once
        record = decisions(await proc.process([part.message(event("slot_request",
                                                                  minute=minute))]))[0]
        if record["action"]["id"] == "rainy_day_delivery":
            break
    assert record["action"]["id"] == "rainy_day_delivery", record["reasons"]
    assert any("surroundings from region city:oslo's report" in r and "snow, -3.0 °C" in r
               for r in record["reasons"]), record["reasons"]


# -- snapshots of the older feature set ---------------------------------------------------------

def test_a_state_of_the_older_feature_set_is_served_exactly() -> None:
    chooser = ContextualChooser(exploration=0.1, min_outcomes=5)
    for _ in range(20):
        chooser.learn("hero", "app_offer", {"bias": 1.0, "device_mobile": 1.0}, 1.0)
        chooser.learn("hero", "app_offer", {"bias": 1.0, "device_desktop": 1.0}, 0.0)
        chooser.learn("hero", "web_offer", {"bias": 1.0, "device_desktop": 1.0}, 1.0)
        chooser.learn("hero", "web_offer", {"bias": 1.0, "device_mobile": 1.0}, 0.0)
    chooser.expect("d1", "hero", "app_offer", tuple(as_vector({"bias": 1.0})), 5)
    # What a snapshot of the previous version holds: the same numbers over the older set.
    old = [FEATURE_NAMES.index(n) for n in FEATURE_SETS[0]]
    state = chooser.to_state()
    state["features"] = list(FEATURE_SETS[0])
    for arm in state["arms"].values():
        arm["a_inv"] = [[row[j] for j in old] for i, row in enumerate(arm["a_inv"]) if i in old]
        arm["b"] = [arm["b"][i] for i in old]
    state["pending"] = [[d, s, a, [x[i] for i in old], ts] for d, s, a, x, ts in
                        state["pending"]]
    served = ContextualChooser.from_state(orjson.loads(orjson.dumps(state)))
    for x in ({"bias": 1.0, "device_mobile": 1.0}, {"bias": 1.0, "device_desktop": 1.0,
                                                    "weather_wet": 1.0}):
        assert served.probabilities(["app_offer", "web_offer"], "hero", x) == \
            chooser.probabilities(["app_offer", "web_offer"], "hero", x)
    assert served.pending == 1 and served.to_state()["features"] == list(FEATURE_NAMES)
    # A lesson of a worker still on the older set is embedded, not dropped.
    served.expect("d2", "hero", "web_offer", [1.0] + [0.0] * (len(FEATURE_SETS[0]) - 1), 6)
    assert served.pending == 2
    served.expect("d3", "hero", "web_offer", [1.0] * (DIMENSIONS + 1), 6)  # no set has it
    assert served.pending == 2


# -- the HTTP API's decide ----------------------------------------------------------------------

async def test_the_apis_decide_sees_the_regions_report_from_its_cache() -> None:
    store = MemoryStore()
    regions = RegionContexts(0)
    decider = Decider(Engine(catalogue(experiments=[]), ThompsonChooser(),
                             consent_defaults=GRANTED), regions=regions)
    now = 1_772_359_200_000
    p = new_profile("c1")
    p["location"] = {"city": "Oslo"}
    req = decider.request({"customer_id": "c1", "slot": "homepage_hero"}, now)
    dry = decider.decide(req, copy.deepcopy(p), now)
    assert dry is not None and "rainy_day_delivery" not in dry.record["candidates"]
    await store.save_region("city:oslo", {"ts_ms": now - HOUR, "weather": "snow"})
    await regions.refresh(store)  # what the server's reload task does
    wet = decider.decide(req, copy.deepcopy(p), now)
    assert wet is not None and wet.record["action"]["id"] == "rainy_day_delivery"
    assert any("region city:oslo" in r for r in wet.record["reasons"])
    assert "surroundings" not in p  # the profile read from Redis is not changed


async def test_a_workers_region_round_trips_are_counted() -> None:
    metrics = WorkerMetrics()
    proc = Processor(SETTINGS, MeteredStore(MemoryStore(), metrics))
    part = Partition()
    await proc.process([part.message(event("context_update", customer="region:oslo",
                                           weather="fog"))])
    await proc.process([part.message(event("page_view", customer="c1", minute=1))])
    v = metrics.value
    assert v("streamproc_redis_round_trips_total", operation="save_region") == 1
    # Read once: the second batch comes within STREAMPROC_REGION_CONTEXT_SECONDS.
    assert v("streamproc_redis_round_trips_total", operation="regions") == 1
    assert proc.regions.contexts["oslo"]["weather"] == "fog"
