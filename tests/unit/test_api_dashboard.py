"""The dashboard's routes served for real (aiohttp's test server) with Kafka and Redis
unreachable: who may read the data, what a mistake gets, the page and its vendored charting
library; and the JSON shaping behind the charts. The numbers on the real stack are in
tests/integration/test_dashboard.py."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streamproc.api.dashboard import VENDOR, Cache, bandit_view, deadletter_reasons
from streamproc.api.server import build_app
from streamproc.decisions.bandit import ThompsonChooser
from streamproc.decisions.kpi_summary import summarise_counters
from streamproc.settings import Settings
from streamproc.state.counters import Counters

READ = "read-token-0001"
ADMIN = "admin-token-0001"
UNREACHABLE = {"kafka_bootstrap": "127.0.0.1:1", "redis_url": "redis://127.0.0.1:1/0"}


async def _client(settings: Settings) -> TestClient:
    client = TestClient(TestServer(build_app(settings)))
    await client.start_server()
    return client


@pytest.fixture
async def locked() -> AsyncIterator[TestClient]:
    client = await _client(Settings(**UNREACHABLE, api_read_token=READ, api_admin_token=ADMIN))
    yield client
    await client.close()


@pytest.mark.parametrize("path", ["/v1/kpis", "/v1/kpis/experiments", "/v1/kpis/bandit",
                                  "/v1/kpis/models", "/v1/kpis/pipeline"])
async def test_every_data_endpoint_needs_the_token_when_one_is_set(locked, path: str) -> None:
    resp = await locked.get(path)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert "STREAMPROC_API_READ_TOKEN" in (await resp.json())["error"]
    wrong = await locked.get(path, headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401


@pytest.mark.parametrize("token", [READ, ADMIN])
async def test_the_read_or_the_admin_token_opens_the_data(locked, token: str) -> None:
    resp = await locked.get("/v1/kpis", headers={"Authorization": f"Bearer {token}"})
    # Past the access check: Redis is unreachable here, said as such.
    assert resp.status == 503
    assert "KPI counters in Redis are unavailable" in (await resp.json())["error"]
    models = await locked.get("/v1/kpis/models", headers={"Authorization": f"Bearer {token}"})
    assert models.status == 200
    body = await models.json()
    assert body["served"] is False and body["model_version"] == 0.0


async def test_without_tokens_the_data_is_open_on_loopback_only() -> None:
    client = await _client(Settings(**UNREACHABLE))
    try:
        assert (await client.get("/v1/kpis/models")).status == 200
    finally:
        await client.close()
    client = await _client(Settings(**UNREACHABLE, api_host="0.0.0.0", api_keys="s=k-000001"))
    try:
        resp = await client.get("/v1/kpis/models")
        assert resp.status == 403
        assert "STREAMPROC_API_READ_TOKEN" in (await resp.json())["error"]
        # The page itself holds no data: it is served, and asks for the token.
        assert (await client.get("/dashboard/")).status == 200
    finally:
        await client.close()


@pytest.mark.parametrize("query", ["days=0", "days=x", "days=9999", "by=a%20b", "by="])
async def test_bad_parameters_are_400(locked, query: str) -> None:
    resp = await locked.get(f"/v1/kpis?{query}", headers={"Authorization": f"Bearer {READ}"})
    assert resp.status == 400
    assert "must be" in (await resp.json())["error"]


async def test_the_page_loads_nothing_from_elsewhere(locked) -> None:
    assert (await locked.get("/dashboard", allow_redirects=False)).headers["Location"] == \
        "/dashboard/"
    page = await (await locked.get("/dashboard/")).text()
    assert 'src="echarts.min.js"' in page and 'src="dashboard.js"' in page
    for name in ("dashboard.js", "dashboard.css"):
        text = await (await locked.get(f"/dashboard/{name}")).text()
        assert not re.search(r"https?://", text), name
    assert not re.search(r"(src|href)=\"https?://", page)
    assert (await locked.get("/dashboard/../settings.py")).status == 404
    assert (await locked.get("/dashboard/nothing.js")).status == 404


async def test_the_vendored_echarts_is_the_recorded_one(locked) -> None:
    served = await (await locked.get("/dashboard/echarts.min.js")).read()
    record = (VENDOR / "ECHARTS.txt").read_text()
    sha = re.search(r"sha256 dist/echarts.min.js: ([0-9a-f]{64})", record)
    assert sha is not None and hashlib.sha256(served).hexdigest() == sha.group(1)
    assert "Apache" in (VENDOR / "ECHARTS-NOTICE").read_text()
    assert "Apache License" in (VENDOR / "ECHARTS-LICENSE").read_text()


def test_kpis_json_has_the_segments_and_the_days_per_segment() -> None:
    day = 20_513
    counters = Counters(
        days={day: {"rfm:new|e:control|a|decisions": 2, "rfm:new|e:control|a|customers": 2,
                    "rfm:new|e:control|a|buyers": 1, "rfm:lost|e:x|b|customers": 4,
                    "all:all|e:control|a|decisions": 2}},
        moves={day: {"rfm|-|new": 3, "rfm|new|lost": 1, "cluster|-|2": 5}},
        sizes={"rfm:new": 2, "rfm:lost": 1, "cluster:2": 5, "rfm:gone": 0})
    out = summarise_counters(counters, "rfm")
    assert [(r["segment"], r["conversion"]) for r in out["daily_segments"]] == [
        ("lost", 0.0), ("new", 0.5)]
    assert out["segments"]["sizes"] == [
        {"segmentation": "rfm", "segment": "lost", "customers": 1},
        {"segmentation": "rfm", "segment": "new", "customers": 2}]
    assert [(m["from"], m["to"], m["customers"]) for m in out["segments"]["moves"]] == [
        ("-", "new", 3), ("new", "lost", 1)]
    everything = summarise_counters(counters, "all")["segments"]
    assert {s["segmentation"] for s in everything["sizes"]} == {"rfm", "cluster"}


def test_bandit_view_of_a_learnt_bandit() -> None:
    bandit = ThompsonChooser()
    for reward in (1.0, 1.0, 0.0, 1.0):
        bandit.learn("hero_a", "rfm:new", reward)
    bandit.learn("hero_b", "rfm:new", 0.0)
    rows = [{"arm": "hero:bandit", "action": "hero_a", "decisions": 6},
            {"arm": "hero:bandit", "action": "hero_b", "decisions": 2},
            {"arm": "(none):reuse", "action": "hero_b", "decisions": 50}]
    view = bandit_view(bandit.summary(), rows, 7)
    by_action = {a["action"]: a for a in view["actions"]}
    assert view["version"] == 7
    assert by_action["hero_a"]["share"] == 0.75 and by_action["hero_b"]["share"] == 0.25
    assert by_action["hero_a"]["mean"] > by_action["hero_b"]["mean"]
    assert by_action["hero_a"]["outcomes"] == 4


def test_dead_letters_by_reason_most_first() -> None:
    found = deadletter_reasons([{"reason": "invalid event: ts"}] * 3 + [{"reason": "x"}])
    assert found == [{"reason": "invalid event", "count": 3}, {"reason": "x", "count": 1}]


async def test_cache_computes_once_for_concurrent_askers_and_again_when_stale() -> None:
    now = [0.0]
    cache = Cache(30.0, clock=lambda: now[0])
    calls = []

    async def compute() -> int:
        calls.append(1)
        await asyncio.sleep(0.01)
        return len(calls)

    assert await asyncio.gather(*(cache.get("k", compute) for _ in range(5))) == [1] * 5
    now[0] = 29.0
    assert await cache.get("k", compute) == 1
    now[0] = 31.0
    assert await cache.get("k", compute) == 2
