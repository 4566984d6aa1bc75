"""A region's context_update on the real stack: a worker keeps it in the region's Redis key and
the next decision of a customer in that region (not of one elsewhere) sees its weather, with the
reason naming the region; an invalid region id goes to the dead-letter topic with its reason.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml

from streamproc.decisions.catalogue import default_catalogue_path
from streamproc.state.keys import REGIONS_KEY, region_key
from streamproc.state.regions import REGION_TTL_MS
from streamproc.state.store import RedisStore
from tests.unit.helpers import event

from .conftest import Env
from .polling import until
from .test_api import profile_of
from .test_shared_bandit import decisions_for, iso

pytestmark = pytest.mark.integration


def no_experiments(env: Env) -> str:
    data = yaml.safe_load(default_catalogue_path().read_text())
    data["experiments"] = []  # no control group: every customer gets the offers
    path = env.tmp / "catalogue.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def ask(cid: str, at: float) -> dict[str, Any]:
    return event("slot_request", customer=cid, ts=iso(at), slot="homepage_hero",
                 page={"page_type": "home"})


async def test_a_region_report_changes_the_next_decision_of_its_customers(
        stack_env: Env, test_redis: aioredis.Redis) -> None:
    env, topics = stack_env, stack_env.settings.topics
    env.env["STREAMPROC_CATALOGUE"] = no_experiments(env)
    region = f"city:test-{uuid.uuid4().hex[:8]}"
    before, after, elsewhere = (env.customer("rg") for _ in range(3))
    now = time.time()
    members = [event("profile_update", customer=cid, ts=iso(now - 60),
                     attributes={"region": region if cid != elsewhere else "city:elsewhere"})
               for cid in (before, after, elsewhere)]
    env.start_worker()
    await env.produce_events(topics.profiles, members)

    async def members_known() -> bool:
        found = [await profile_of(env, cid) for cid in (before, after, elsewhere)]
        return all(p and (p.get("attributes") or {}).get("region") for p in found)

    await until("the customers' regions in their profiles", members_known, timeout=90)

    # Before any report: the weather offer is not a candidate.
    first = ask(before, now)
    await env.produce_events(topics.browsing, [first])
    (_, decided), = await decisions_for(env, {first["event_id"]})
    assert decided["action"]["id"] == "bestsellers_hero", decided
    assert "rainy_day_delivery" not in decided["candidates"]

    # The region's report (keyed by region:<id>), kept in the region's own key.
    report = event("context_update", customer=f"region:{region}", ts=iso(now + 1),
                   weather="rain", temperature_c=7.5)
    invalid = event("context_update", customer="region:" + "x" * 70, ts=iso(now + 1),
                    weather="rain")
    await env.produce_events(topics.profiles, [report, invalid])
    stored = await until("the region's context in Redis", lambda: test_redis.hgetall(
        region_key(region)))
    assert stored[b"weather"] == b"rain" and float(stored[b"temperature_c"]) == 7.5

    # The next decisions: the region's customer gets the weather offer, the other does not.
    second, third = ask(after, now + 2), ask(elsewhere, now + 2)
    await env.produce_events(topics.browsing, [second, third])
    got = {d["customer_id"]: d for _, d in await decisions_for(
        env, {second["event_id"], third["event_id"]})}
    rainy = got[after]
    assert rainy["action"]["id"] == "rainy_day_delivery", rainy
    assert any(f"surroundings from region {region}'s report" in r and "rain, 7.5 °C" in r
               for r in rainy["reasons"]), rainy["reasons"]
    assert rainy["features"]["weather_wet"] == 1.0 and rainy["features"]["temp_cold"] == 1.0
    assert got[elsewhere]["action"]["id"] == "bestsellers_hero"
    assert "rainy_day_delivery" not in got[elsewhere]["candidates"]

    # The invalid region id: dead-lettered with its reason, the worker still running.
    def ours(r: dict[str, Any]) -> bool:
        return bool(r["value"]) and invalid["event_id"] in r["value"]["value"]["data"]

    dead = await env.consume_until(topics.deadletter, lambda rs: any(map(ours, rs)))
    letter = next(r["value"] for r in dead if ours(r))
    assert letter["reason"] == "invalid_region" and "invalid region id" in letter["error"]
    assert all(proc.poll() is None for proc in env.workers), env.worker_log()


async def check_region_store(store: RedisStore, client: Any) -> None:
    """A region's reports in Redis: only a newer one changes it, field by field; every region
    is read back; a region whose key is gone leaves the index."""
    oslo, lima = f"city:oslo-{uuid.uuid4().hex[:6]}", f"city:lima-{uuid.uuid4().hex[:6]}"
    assert await store.save_region(oslo, {"ts_ms": 1_772_359_200_000, "weather": "snow",
                                          "temperature_c": -3.5})
    assert not await store.save_region(oslo, {"ts_ms": 1_772_359_100_000, "weather": "clear"})
    assert await store.save_region(oslo, {"ts_ms": 1_772_359_300_000, "temperature_c": -4.0})
    assert await store.save_region(lima, {"ts_ms": 1_772_359_200_000, "weather": "clear"})
    found = await store.region_contexts()
    assert found[oslo] == {"ts_ms": 1_772_359_300_000, "weather": "snow",
                           "temperature_c": -4.0}
    assert found[lima] == {"ts_ms": 1_772_359_200_000, "weather": "clear"}
    assert 0 < await client.pttl(region_key(oslo)) <= REGION_TTL_MS
    await client.delete(region_key(lima))  # as its expiry would
    assert lima not in await store.region_contexts()
    assert lima.encode() not in await client.smembers(REGIONS_KEY)


async def test_a_regions_context_in_redis(test_redis: aioredis.Redis) -> None:
    await check_region_store(RedisStore(test_redis), test_redis)


async def test_a_regions_context_on_redis_cluster(cluster_redis: Any) -> None:
    # The index and the region's hash are in different slots: two commands, never one script.
    await check_region_store(RedisStore(cluster_redis), cluster_redis)
