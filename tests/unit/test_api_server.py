"""The HTTP API served for real (aiohttp's test server) with Kafka and Redis unreachable: what a
client gets when nothing behind the API answers, and for its own mistakes. The happy paths are
in tests/integration/test_api.py, on the real stack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.api.openapi import OPENAPI
from streamproc.api.server import build_app
from streamproc.errors import ConfigError
from streamproc.settings import Settings

KEY = "shop-key-0001"
ADMIN = "admin-token-0001"
NOWHERE = Settings(kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:1/0",
                   api_keys=f"shop={KEY}", api_admin_token=ADMIN,
                   api_origins="https://shop.example", api_max_body_bytes=4096, api_rate=0)


@pytest.fixture(params=["redis://127.0.0.1:1/0",
                        # none of a cluster's nodes answering raises no RedisError
                        "redis+cluster://127.0.0.1:1,127.0.0.1:2/0"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[TestClient]:
    settings = replace(NOWHERE, redis_url=request.param)
    async with TestClient(TestServer(build_app(settings))) as c:
        yield c


H = {"X-API-Key": KEY}


async def test_decide_with_redis_down_is_the_neutral_action_with_the_reason(client) -> None:
    resp = await client.get("/v1/decide", params={"customer_id": "c1", "slot": "homepage_hero"},
                            headers=H)
    assert resp.status == 200
    body = await resp.json()
    decision = body["decision"]
    assert body["exposure"] == "none"
    assert decision["action"]["id"] == "bestsellers_hero" and not decision["personalised"]
    assert any("profile store unavailable" in r for r in decision["reasons"])
    assert decision["latency_ms"] < 1000


async def test_decide_mistakes_are_400_and_located(client) -> None:
    resp = await client.get("/v1/decide", params={"customer_id": "c1", "slot": "attic"},
                            headers=H)
    assert resp.status == 400
    assert (await resp.json())["problems"][0]["field"] == "slot"
    resp = await client.post("/v1/decide", data=b"[1]", headers=H)
    assert resp.status == 400


async def test_events_kafka_down_are_not_accepted(client) -> None:
    resp = await client.post("/v1/events", headers=H, json={
        "type": "search", "customer_id": "c1", "query": "boots"})
    assert resp.status == 503
    body = await resp.json()
    assert body["accepted"] == [] and len(body["failed"]) == 1


async def test_invalid_events_are_400_with_their_place(client) -> None:
    resp = await client.post("/v1/events", headers=H, json=[
        {"type": "search", "customer_id": "c1", "query": 5}, {"type": "nope"}])
    assert resp.status == 400
    body = await resp.json()
    assert body["accepted"] == []
    assert [(p["index"], p["field"]) for p in body["rejected"]] == [(0, "query"), (1, "type")]


async def test_too_large(client) -> None:
    resp = await client.post("/v1/events", headers=H, data=b"[" + b" " * 5000 + b"]")
    assert resp.status == 413
    resp = await client.post("/v1/events", headers=H, data=orjson.dumps([{}] * 501))
    assert resp.status == 413


async def test_keys(client) -> None:
    params = {"customer_id": "c1", "slot": "homepage_hero"}
    assert (await client.get("/v1/decide", params=params)).status == 401
    assert (await client.get("/v1/decide", params=params,
                             headers={"X-API-Key": "shop-key-0002"})).status == 403
    assert (await client.get("/v1/decisions/c1")).status == 401


async def test_admin_endpoints_need_the_token_and_a_valid_id(client) -> None:
    assert (await client.get("/v1/customers/c1", headers=H)).status == 401
    assert (await client.delete("/v1/customers/c1",
                                headers={"Authorization": "Bearer wrong"})).status == 401
    auth = {"Authorization": f"Bearer {ADMIN}"}
    assert (await client.get("/v1/customers/bad%20id", headers=auth)).status == 400
    assert (await client.get("/v1/customers/c1", headers=auth)).status == 503  # Redis down


async def test_admin_endpoints_are_off_without_a_token() -> None:
    s = Settings(kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:1/0")
    async with TestClient(TestServer(build_app(s))) as c:
        resp = await c.get("/v1/customers/c1", headers={"Authorization": "Bearer "})
        assert resp.status == 403 and "STREAMPROC_API_ADMIN_TOKEN" in (await resp.json())["error"]


def test_open_endpoints_refuse_a_public_address() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        build_app(Settings(api_host="0.0.0.0"))


async def test_cors_only_for_configured_origins_and_browser_paths(client) -> None:
    pre = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}
    resp = await client.options("/v1/events", headers=pre)
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "X-API-Key" in resp.headers["Access-Control-Allow-Headers"]
    resp = await client.options("/v1/events", headers={**pre, "Origin": "https://evil.example"})
    assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.options("/v1/customers/c1", headers=pre)
    assert resp.status == 403
    resp = await client.get("/v1/decide", headers={**H, "Origin": "https://shop.example"},
                            params={"customer_id": "c1", "slot": "homepage_hero"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example"


async def test_rate_limit() -> None:
    s = Settings(kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:1/0", api_rate=2)
    async with TestClient(TestServer(build_app(s))) as c:
        codes = [(await c.get("/v1/decisions/c1")).status for _ in range(4)]
        assert codes[-1] == 429 and codes.count(429) >= 1


async def test_readyz_says_what_is_missing(client) -> None:
    resp = await client.get("/readyz")
    assert resp.status == 503
    problems = (await resp.json())["problems"]
    assert any("Kafka" in p for p in problems) and any("Redis" in p for p in problems)
    assert (await client.get("/livez")).status == 200


async def test_openapi_describes_exactly_the_routes(client) -> None:
    routes = {(r.method.lower(), r.resource.canonical) for r in client.app.router.routes()
              if r.method != "HEAD" and r.resource is not None}
    described = {(m, path) for path, ops in OPENAPI["paths"].items() for m in ops}
    assert routes == described
    served = await (await client.get("/openapi.json")).json()
    assert served["paths"].keys() == OPENAPI["paths"].keys()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=12)
event_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["search", "cart_add", "feedback", "erase", "decision_served", "x"]),
     "customer_id": st.text(max_size=12) | st.integers(-2**63, 2**63 - 1)},
    optional={"query": json_values, "ts": st.text(max_size=30), "event_id": json_values,
              "product": json_values})


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(json_values, event_like, st.lists(event_like, max_size=3),
                      st.binary(max_size=64)))
async def test_hostile_event_bodies_are_never_a_500_nor_accepted_without_kafka(
        client, body) -> None:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    resp = await client.post("/v1/events", headers=H, data=data)
    assert resp.status in (400, 413, 503), await resp.text()
    answer = await resp.json()
    assert answer.get("accepted", []) == []  # no Kafka: nothing accepted


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(st.sampled_from(["customer_id", "slot", "request_id", "channel",
                                                "page", "zzz"]),
                              st.text(max_size=70), max_size=5),
       post=st.booleans(), extra=json_values)
async def test_hostile_decide_requests_are_never_a_500(client, params, post, extra) -> None:
    if post:
        resp = await client.post("/v1/decide", headers=H,
                                 data=orjson.dumps({**params, "context": extra}))
    else:
        resp = await client.get("/v1/decide", headers=H, params=params)
    assert resp.status in (200, 400), await resp.text()
    body = await resp.json()
    if resp.status == 200:
        assert not body["decision"]["personalised"]


async def test_metrics_need_the_admin_token_and_count_the_answers(client) -> None:
    assert (await client.get("/metrics")).status == 401
    resp = await client.get("/v1/decide", params={"customer_id": "c1", "slot": "homepage_hero"},
                            headers=H)
    assert (await resp.json())["exposure"] == "none"  # Redis down: the neutral fallback
    resp = await client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    page = await resp.text()
    assert 'streamproc_api_decides_total{exposure="none"} 1.0' in page
    assert 'streamproc_api_decides_total{exposure="pending"} 0.0' in page
