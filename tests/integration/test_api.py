"""The HTTP API on the real stack: events posted over HTTP are in Kafka and applied by a worker;
a decide answers from the profile, and its exposure reaches the profile once through the worker,
also when the same decide is retried; no Redis or an unknown customer gives the neutral action."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from streamproc.decisions.catalogue import default_catalogue_path, load_catalogue
from streamproc.decisions.decision_log import read_topic
from streamproc.decisions.experiments import CONTROL, assign
from streamproc.decisions.kpis import KPIS, arm_of
from streamproc.stack import stack_status
from streamproc.state.store import RedisStore

from .conftest import Env, stop_process
from .kpi_recount import recount, unique
from .polling import until

pytestmark = [pytest.mark.integration, pytest.mark.core]
KEY = "it-write-key-1"
H = {"X-API-Key": KEY}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_api(env: Env, **extra: str) -> tuple[str, subprocess.Popen[bytes]]:
    """``streamproc serve`` on a free port, ready (Kafka producer up) before it returns."""
    port = free_port()
    log = open(env.tmp / f"api-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamproc.cli", "serve", "--port", str(port)],
        env={**env.env, "STREAMPROC_API_KEYS": f"it={KEY}", **extra},
        stdout=log, stderr=subprocess.STDOUT, cwd=env.tmp)
    env.workers.append(proc)  # stopped by the fixture
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(60):
            while True:
                assert proc.poll() is None, (env.tmp / f"api-{port}.log").read_text()
                try:
                    async with http.get(f"{url}/readyz") as resp:
                        if resp.status == 200 or (extra and resp.status == 503
                                                  and "Kafka" not in await resp.text()):
                            return url, proc
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def treated_customer(env: Env) -> str:
    """A customer the homepage_hero experiment does not put in its control group."""
    spec = load_catalogue(default_catalogue_path()).experiment_for("homepage_hero")
    assert spec is not None
    while True:
        cid = env.customer("api")
        arm = assign(cid, spec)
        policy = next(a["policy"] for a in spec["arms"] if a["id"] == arm) if arm != CONTROL \
            else "neutral"
        if policy != "neutral":
            return cid


async def profile_of(env: Env, cid: str) -> dict[str, Any] | None:
    store = RedisStore.from_settings(env.settings)
    try:
        found = await store.read_profile(cid)
    finally:
        await store.close()
    return None if found is None else found["profile"]


async def exposure_recorded(env: Env, cid: str, did: str) -> dict[str, Any]:
    """The customer's profile once the worker has recorded the decision's exposure."""
    async def recorded() -> dict[str, Any] | None:
        p = await profile_of(env, cid)
        recent = ((p or {}).get("decisions") or {}).get("recent", [])
        return p if any(e[0] == did[:12] for e in recent) else None

    found: dict[str, Any] = await until("the worker records the exposure", recorded)
    return found


async def shoe_lover(env: Env, url: str, http: aiohttp.ClientSession,
                     then: Callable[[], object] = lambda: None) -> str:
    """A treated customer with consent and eight shoe views, posted over HTTP; ``then`` runs
    after the post (e.g. starts the worker); returns once the worker applied them."""
    cid = treated_customer(env)
    shoes = {"product_id": "shoes-7", "category": "shoes", "price": 89.9}
    async with http.post(f"{url}/v1/events", headers=H, json=[
            {"type": "consent_update", "customer_id": cid, "purpose": "personalisation",
             "granted": True, "source": "web_form"},
            *[{"type": "product_view", "customer_id": cid, "product": shoes}
              for _ in range(8)]]) as resp:
        assert resp.status == 202
    then()

    async def known() -> bool:
        p = await profile_of(env, cid)
        return bool(p and p["counts"].get("product_view") == 8)

    await until("the worker applies the events", known)
    return cid


async def test_events_over_http_reach_kafka_and_the_worker_then_decide_records_once(
        stack_env: Env, http: aiohttp.ClientSession) -> None:
    stack_env.start_worker()
    # Waiting for Kafka's confirmation (a long wait and deadline: a busy machine is slow).
    url, _ = await start_api(stack_env, STREAMPROC_API_EXPOSURE_WAIT_MS="20000",
                             STREAMPROC_API_DEADLINE_MS="20000")
    cid = treated_customer(stack_env)
    shoes = {"product_id": "shoes-7", "category": "shoes", "price": 89.9}
    body = [{"type": "consent_update", "customer_id": cid, "purpose": "personalisation",
             "granted": True, "source": "web_form"},
            *[{"type": "product_view", "customer_id": cid, "product": shoes} for _ in range(8)],
            {"type": "product_view", "customer_id": cid, "product": {"price": -1}}]
    async with http.post(f"{url}/v1/events", json=body, headers=H) as resp:
        answer = await resp.json()
    assert resp.status == 400, answer  # one invalid event: located, the others accepted
    assert [(p["index"], p["field"]) for p in answer["rejected"]] == [(9, "product")]
    accepted = answer["accepted"]
    assert len(accepted) == 9
    topics = stack_env.settings.topics
    records = await stack_env.consume_until(
        topics.browsing, lambda rs: {r["value"]["event_id"] for r in rs if r["value"]} >= set(
            accepted[1:]))
    assert all(r["key"] == cid.encode() for r in records)
    await stack_env.consume_until(topics.profiles, lambda rs: any(
        r["value"]["event_id"] == accepted[0] for r in rs))

    async def applied() -> dict[str, Any] | None:
        p = await profile_of(stack_env, cid)
        return p if p and p["counts"].get("product_view") == 8 else None

    await until("the worker applies the events", applied)

    # A decide from the profile, then the same decide again (a client retry).
    params = {"customer_id": cid, "slot": "homepage_hero", "request_id": "pv-1"}
    async with http.get(f"{url}/v1/decide", params=params, headers=H) as resp:
        first = await resp.json()
    assert resp.status == 200, first
    decision = first["decision"]
    assert decision["personalised"], decision["reasons"]
    assert first["exposure"] == "recorded"  # Kafka confirmed before the answer
    did = decision["decision_id"]

    p = await exposure_recorded(stack_env, cid, did)
    assert p["decisions"]["seen"][decision["action"]["id"]][1] == "homepage_hero"

    async with http.get(f"{url}/v1/decide", params=params, headers=H) as resp:
        again = await resp.json()
    assert again["decision"]["decision_id"] == did and again["exposure"] == "already"
    async with http.get(f"{url}/v1/decisions/{cid}", headers=H) as resp:
        latest = await resp.json()
    assert latest["decisions"]["homepage_hero"]["decision_id"] == did

    # A later decide (another request) is published after anything of the first: then the
    # first decision is on the decisions topic exactly once, and in the history once.
    params2 = {**params, "request_id": "pv-2"}
    async with http.get(f"{url}/v1/decide", params=params2, headers=H) as resp:
        second = (await resp.json())["decision"]["decision_id"]
    decisions = await stack_env.consume_until(
        topics.decisions, lambda rs: any((r["value"] or {}).get("decision_id") == second
                                         for r in rs))
    assert sum(1 for r in decisions if (r["value"] or {}).get("decision_id") == did) == 1
    served = next(r["value"] for r in decisions if (r["value"] or {}).get("decision_id") == did)
    assert served["trigger"]["topic"] == topics.browsing and served["propensity"] > 0
    final = await profile_of(stack_env, cid)
    assert final is not None
    assert sum(1 for e in final["decisions"]["recent"] if e[0] == did[:12]) == 1


async def test_a_decide_retried_before_the_worker_recorded_it_is_recorded_once(
        stack_env: Env, http: aiohttp.ClientSession) -> None:
    url, _ = await start_api(stack_env)  # no worker yet: both decides are in flight
    cid = await shoe_lover(stack_env, url, http, stack_env.start_worker)
    params = {"customer_id": cid, "slot": "homepage_hero", "request_id": "twice"}
    answers = []
    for _ in range(3):
        async with http.get(f"{url}/v1/decide", params=params, headers=H) as resp:
            answers.append(await resp.json())
    did = answers[0]["decision"]["decision_id"]
    assert {a["decision"]["decision_id"] for a in answers} == {did}
    topics = stack_env.settings.topics
    records = await stack_env.consume_until(topics.browsing, lambda rs: len(
        [r for r in rs if (r["value"] or {}).get("type") == "decision_served"]) >= 1)
    copies = [r for r in records if (r["value"] or {}).get("event_id") == f"served-{did}"]
    assert copies, "the decision_served event is on the browsing topic"
    # Send a marker after the copies and wait for it: the worker has seen every copy then.
    marker = {"type": "search", "customer_id": cid, "query": "marker"}
    async with http.post(f"{url}/v1/events", headers=H, json=marker) as resp:
        marker_id = (await resp.json())["accepted"][0]

    async def marked() -> dict[str, Any] | None:
        p = await profile_of(stack_env, cid)
        return p if p and p["counts"].get("search") == 1 else None

    p = await until("the worker applies the marker", marked)
    assert marker_id
    recent = p["decisions"]["recent"]
    assert sum(1 for e in recent if e[0] == did[:12]) == (1 if answers[0]["decision"][
        "policy"] not in ("neutral", "reuse") else 0)
    decisions = await stack_env.consume_until(topics.decisions, lambda rs: any(
        (r["value"] or {}).get("decision_id") == did for r in rs))
    assert sum(1 for r in decisions if (r["value"] or {}).get("decision_id") == did) == 1


async def test_unknown_customer_and_no_redis_give_the_neutral_action(
        stack_env: Env, http: aiohttp.ClientSession) -> None:
    url, _ = await start_api(stack_env)
    params = {"customer_id": stack_env.customer("stranger"), "slot": "cart_drawer"}
    async with http.get(f"{url}/v1/decide", params=params, headers=H) as resp:
        body = await resp.json()
    assert resp.status == 200 and body["exposure"] == "none"
    assert body["decision"]["action"]["id"] == "free_delivery_banner"
    assert any("unknown customer" in r for r in body["decision"]["reasons"])
    # The fallback is on the decisions topic too, with its propensity.
    did = body["decision"]["decision_id"]
    records = await stack_env.consume_until(stack_env.settings.topics.decisions, lambda rs: any(
        (r["value"] or {}).get("decision_id") == did for r in rs))
    assert next(r for r in records if r["value"]["decision_id"] == did)["value"][
        "propensity"] == 1.0

    # An API whose Redis is gone (nothing listens there): neutral, with the reason, in time.
    dead = f"redis://127.0.0.1:{free_port()}/0"
    url2, proc = await start_api(stack_env, STREAMPROC_REDIS_URL=dead)
    async with http.get(f"{url2}/v1/decide", params=params, headers=H) as resp:
        body = await resp.json()
    assert resp.status == 200 and not body["decision"]["personalised"]
    assert any("profile store unavailable" in r or "deadline" in r
               for r in body["decision"]["reasons"])
    assert body["decision"]["latency_ms"] < 1000
    stop_process(proc, 10)
    assert orjson.dumps(body)


async def test_admin_export_and_erase_of_a_customer(
        stack_env: Env, http: aiohttp.ClientSession) -> None:
    """GET /v1/customers/{id} (with ?human=true: ISO times) and DELETE, only with the admin
    token: the erasure is the worker's (keys gone, tombstones, the learner told)."""
    stack_env.start_worker()
    token = "it-admin-token-1"
    url, _ = await start_api(stack_env, STREAMPROC_API_ADMIN_TOKEN=token)
    admin = {"Authorization": f"Bearer {token}"}
    cid, other = stack_env.customer("adm"), stack_env.customer("keep")
    body = [{"type": "product_view", "customer_id": c,
             "product": {"product_id": "p-1", "category": "shoes", "price": 20.0}}
            for c in (cid, other)]
    async with http.post(f"{url}/v1/events", json=body, headers=H) as resp:
        assert resp.status == 202, await resp.text()

    async def applied() -> bool:
        return all([await profile_of(stack_env, c) for c in (cid, other)])

    await until("the worker applies both", applied)
    async with http.get(f"{url}/v1/customers/{cid}", headers=H) as resp:
        assert resp.status == 401  # a write key is not the admin token
    async with http.get(f"{url}/v1/customers/{cid}", headers=admin) as resp:
        raw = await resp.json()
    async with http.get(f"{url}/v1/customers/{cid}?human=true", headers=admin) as resp:
        human = await resp.json()
    assert resp.status == 200 and raw["customer_id"] == human["customer_id"] == cid
    seen = raw["profile"]["first_seen_ms"]
    assert isinstance(seen, int)
    assert isinstance(human["profile"]["first_seen_ms"], str)
    assert human["profile"]["first_seen_ms"].startswith("20")

    async with http.delete(f"{url}/v1/customers/{cid}", headers=admin) as resp:
        erased = await resp.json()
    assert resp.status == 200 and erased["deleted_keys"] >= 1, erased
    assert await profile_of(stack_env, cid) is None
    assert await profile_of(stack_env, other) is not None
    async with http.get(f"{url}/v1/customers/{cid}", headers=admin) as resp:
        assert resp.status == 404
    topics = stack_env.settings.topics
    await stack_env.consume_until(topics.decisions, lambda rs: any(
        r["key"] == cid.encode() and r["value"] is None for r in rs))

    def erased_ids(rs: list[dict[str, Any]]) -> set[str]:
        return {o["customer_id"] for r in rs for o in (r["value"] or [])
                if isinstance(o, dict) and o.get("kind") == "erase"}

    learning = await stack_env.consume_until(topics.learning, lambda rs: cid in erased_ids(rs))
    assert other not in erased_ids(learning)


def metric(text: str, name: str) -> float:
    """One sample's value in a Prometheus text page (0 when it is absent)."""
    return next((float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                 if line.startswith(name + " ")), 0.0)


async def test_an_answer_that_does_not_wait_for_kafka_is_pending_and_recorded_once(
        stack_env: Env, http: aiohttp.ClientSession) -> None:
    """STREAMPROC_API_EXPOSURE_WAIT_MS=0: a personalised decide answers before Kafka confirms
    its decision_served event, says so (`pending`), and the exposure is still recorded once by
    the worker; the API counts the answer, then Kafka's confirmation."""
    stack_env.start_worker()
    token = "it-admin-token-2"
    url, _ = await start_api(stack_env, STREAMPROC_API_EXPOSURE_WAIT_MS="0",
                             STREAMPROC_API_ADMIN_TOKEN=token)
    admin = {"Authorization": f"Bearer {token}"}
    cid = await shoe_lover(stack_env, url, http)
    params = {"customer_id": cid, "slot": "homepage_hero", "request_id": "no-wait-1"}
    async with http.get(f"{url}/v1/decide", params=params, headers=H) as resp:
        answer = await resp.json()
    assert resp.status == 200 and answer["exposure"] == "pending", answer
    decision = answer["decision"]
    assert decision["personalised"] and decision["propensity"] > 0
    did = decision["decision_id"]

    p = await exposure_recorded(stack_env, cid, did)
    assert sum(1 for e in p["decisions"]["recent"] if e[0] == did[:12]) == 1
    decisions = await stack_env.consume_until(stack_env.settings.topics.decisions, lambda rs: any(
        (r["value"] or {}).get("decision_id") == did for r in rs))
    logged = [r["value"] for r in decisions if (r["value"] or {}).get("decision_id") == did]
    assert len(logged) == 1 and logged[0]["propensity"] == decision["propensity"]

    async with http.get(f"{url}/metrics") as resp:
        assert resp.status == 401  # the admin token, as the other admin endpoints

    async def confirmed() -> str | None:  # Kafka's answer reaches the API in its own time
        async with http.get(f"{url}/metrics", headers=admin) as resp:
            assert resp.status == 200
            page = await resp.text()
        return page if metric(page, "streamproc_api_exposures_unconfirmed") == 0 else None

    page = await until("Kafka confirms the exposure to the API", confirmed)
    assert metric(page, 'streamproc_api_decides_total{exposure="pending"}') == 1
    assert metric(page, 'streamproc_api_exposures_total{outcome="confirmed"}') == 1
    assert metric(page, 'streamproc_api_exposures_total{outcome="failed"}') == 0
    assert metric(page, "streamproc_api_exposures_unconfirmed") == 0


async def test_a_pending_exposure_waits_out_a_frozen_broker_and_is_recorded_once(
        stack_env: Env, http: aiohttp.ClientSession) -> None:
    """The broker frozen: a decide still answers `pending` at once, the API counts the exposure
    as unconfirmed while the idempotent producer retries, and once the broker is back the
    exposure is confirmed and recorded by the worker once: nothing lost, nothing twice."""
    token = "it-admin-token-3"
    url, _ = await start_api(stack_env, STREAMPROC_API_ADMIN_TOKEN=token)  # the default: no wait
    admin = {"Authorization": f"Bearer {token}"}
    cid = await shoe_lover(stack_env, url, http, stack_env.start_worker)
    kafka = stack_status(stack_env.settings).kafka.pid
    assert kafka, "the local stack's Kafka (streamproc stack up) is frozen by this test"

    async def metrics() -> str:
        async with http.get(f"{url}/metrics", headers=admin) as resp:
            return await resp.text()

    os.kill(kafka, signal.SIGSTOP)
    try:
        params = {"customer_id": cid, "slot": "homepage_hero", "request_id": "frozen-1"}
        async with asyncio.timeout(5):  # no wait for the broker
            async with http.get(f"{url}/v1/decide", params=params, headers=H) as resp:
                answer = await resp.json()
        assert answer["exposure"] == "pending" and answer["decision"]["personalised"], answer
        assert metric(await metrics(), "streamproc_api_exposures_unconfirmed") == 1
    finally:
        os.kill(kafka, signal.SIGCONT)

    async def confirmed() -> str | None:
        page = await metrics()
        return page if metric(page, "streamproc_api_exposures_unconfirmed") == 0 else None

    page = await until("the producer delivers the exposure", confirmed, timeout=120)
    assert metric(page, 'streamproc_api_exposures_total{outcome="confirmed"}') == 1
    assert metric(page, 'streamproc_api_exposures_total{outcome="failed"}') == 0
    did = answer["decision"]["decision_id"]
    p = await exposure_recorded(stack_env, cid, did)
    assert sum(1 for e in p["decisions"]["recent"] if e[0] == did[:12]) == 1


async def test_a_decision_served_over_http_is_counted_in_the_kpis_once(
        stack_env: Env, http: aiohttp.ClientSession) -> None:
    """A decide over HTTP (retried by the client), its decision_served event produced again (a
    producer retry), then a click on it and a purchase: ``/v1/kpis`` counts the decision once
    on its row, with the click and the purchase attributed to it, and equals a recount from
    the topics (every decision published, each once)."""
    stack_env.start_worker()
    token = "it-read-token-1"
    url, _ = await start_api(stack_env, STREAMPROC_API_EXPOSURE_WAIT_MS="20000",
                             STREAMPROC_API_DEADLINE_MS="20000", STREAMPROC_API_READ_TOKEN=token)
    cid = await shoe_lover(stack_env, url, http)
    params = {"customer_id": cid, "slot": "homepage_hero", "request_id": "kpi-1"}
    answers = []
    for _ in range(2):
        async with http.get(f"{url}/v1/decide", params=params, headers=H) as resp:
            answers.append(await resp.json())
    decision = answers[0]["decision"]
    did = decision["decision_id"]
    assert decision["personalised"] and answers[1]["decision"]["decision_id"] == did, answers
    await exposure_recorded(stack_env, cid, did)

    settings = stack_env.settings
    topics = settings.topics
    browsing = await stack_env.consume_until(topics.browsing, lambda rs: any(
        (r["value"] or {}).get("event_id") == f"served-{did}" for r in rs))
    served = next(r["value"] for r in browsing if r["value"]["event_id"] == f"served-{did}")
    await stack_env.produce_events(topics.browsing, [served])  # the same event again
    amount = 89.9
    async with http.post(f"{url}/v1/feedback", headers=H, json={
            "customer_id": cid, "decision_id": did, "outcome": "click"}) as resp:
        assert resp.status == 202, await resp.text()
    async with http.post(f"{url}/v1/events", headers=H, json=[
            {"type": "purchase", "customer_id": cid, "order_id": f"o-{cid}", "currency": "EUR",
             "amount": amount, "lines": [{"product_id": "shoes-7", "category": "shoes",
                                          "quantity": 1, "unit_price": amount}]},
            {"type": "search", "customer_id": cid, "query": "marker"}]) as resp:
        assert resp.status == 202, await resp.text()

    async def settled() -> bool:  # the marker after the copy, the purchase and the click
        p = await profile_of(stack_env, cid)
        return bool(p and p["counts"].get("search") == 1 and p["purchases"]["orders"] == 1
                    and p["counts"].get("feedback") == 1)

    await until("the worker applies the copy, the click and the purchase", settled)
    window_ms = settings.attribution_hours * 3_600_000
    reader = {"Authorization": f"Bearer {token}"}

    last: list[Any] = [None, None]

    async def counted() -> tuple[dict[Any, Any], list[dict[str, Any]]] | None:
        decisions = unique(await read_topic(settings, topics.decisions), "decision_id")
        feedback = [e for e in unique(await read_topic(settings, topics.feedback), "event_id")
                    if e.get("type") == "feedback"]
        purchases = unique(await read_topic(settings, topics.purchases), "event_id")
        want: dict[tuple[str, str], Counter[str]] = {}
        for counts in recount(decisions, feedback, purchases, window_ms).values():
            for name, n in counts.items():
                segment, arm, action, kpi = name.split("|")
                if segment == "all:all":
                    want.setdefault((arm, action), Counter())[kpi] += n
        async with http.get(f"{url}/v1/kpis", params={"days": "2"}, headers=reader) as resp:
            assert resp.status == 200, await resp.text()
            rows = (await resp.json())["rows"]
        got = {(r["arm"], r["action"]): Counter({k: r[k] for k in KPIS if k != "revenue_cents"}
                                                | {"revenue_cents": round(r["revenue"] * 100)})
               for r in rows}
        got, want = {k: +c for k, c in got.items()}, {k: +c for k, c in want.items()}
        last[:] = [got, want]
        return (got, decisions) if got == want else None

    got, decisions = await until("/v1/kpis equals the recount from the topics", counted,
                                 log=lambda: f"/v1/kpis: {last[0]}\nrecount: {last[1]}")
    assert sum(1 for d in decisions if d["decision_id"] == did) == 1
    row = got[(arm_of(decision), decision["action"]["id"])]
    assert row["decisions"] >= 1 and row["customers"] == 1
    assert (row["clicks"], row["impressions"], row["purchases"], row["buyers"]) == (1, 1, 1, 1)
    assert row["revenue_cents"] == round(amount * 100)
