"""Recommendations on the real stack: customers browse, the learner learns which products go
together and reads the product feed, and ``streamproc recommend`` names the related, in-stock
products for a customer who viewed one of them, with the reason."""

from __future__ import annotations

import asyncio
import random
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import yaml

from streamproc.decisions.catalogue import default_catalogue_path
from streamproc.simulator import Population
from streamproc.simulator.sessions import product_feed
from tests.integration.conftest import Env
from tests.integration.test_api import KEY, start_api

SECRET = "integration-recs-secret"
LEARNING = {"STREAMPROC_MODEL_SECRET": SECRET, "STREAMPROC_MODEL_SNAPSHOT_SECONDS": "1",
            "STREAMPROC_MODEL_RELOAD_SECONDS": "1"}


def iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def view(cid: str, pid: str, category: str, at: datetime, n: int) -> dict[str, Any]:
    return {"event_id": f"{cid}-v{n}", "type": "product_view", "customer_id": cid,
            "ts": iso(at), "context": {"session_id": f"{cid}-s"},
            "product": {"product_id": pid, "category": category, "price": 20.0}}


def feed(pid: str, category: str, in_stock: bool, at: datetime) -> tuple[bytes, bytes]:
    event = {"event_id": f"feed-{pid}", "type": "product", "ts": iso(at), "product_id": pid,
             "category": category, "price": 20.0, "in_stock": in_stock, "margin": 0.3}
    return pid.encode(), orjson.dumps(event)


async def recommended(env: Env, cid: str, want: str, timeout: float = 90.0,
                      not_: str | None = None) -> dict[str, Any]:
    """``streamproc recommend`` until it names ``want`` (the learner's snapshot has it), and
    not ``not_`` (the snapshot has the product feed too: the learner reads it beside)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        done = await asyncio.to_thread(env.cli, "recommend", cid, "--n", "5")
        last = done
        if done.returncode == 0:
            shown = orjson.loads(done.stdout)
            named = [p["id"] for p in shown["products"]]
            if want in named and (not_ is None or not_ not in named):
                return dict(shown)
        await asyncio.sleep(0.5)
    raise AssertionError(f"streamproc recommend never named {want} (without {not_}) in "
                         f"{timeout}s: "
                         f"{last and (last.returncode, last.stdout, last.stderr)}\n"
                         f"{env.worker_log()}")


async def test_browsing_then_the_recommendation_names_related_in_stock_products(
        stack_env: Env) -> None:
    env = stack_env
    env.env.update(LEARNING)
    now = datetime.now(UTC) - timedelta(minutes=5)
    await env.produce(env.settings.topics.products,
                      [feed("stove-1", "outdoor", True, now), feed("gone-1", "outdoor", False, now),
                       (b"bad-1", b'{"type": "product", "product_id": "bad-1"}'),
                       feed("tent-1", "outdoor", True, now)])
    env.start_worker()
    others = [env.customer("viewer") for _ in range(4)]
    events = []
    for cid in others:  # every one of them views the tent, the stove and the sold-out lamp
        for n, pid in enumerate(("tent-1", "stove-1", "gone-1")):
            events.append(view(cid, pid, "outdoor", now + timedelta(seconds=n), n))
    me = env.customer("me")
    events.append(view(me, "tent-1", "outdoor", now + timedelta(seconds=30), 0))
    await env.produce_events(env.settings.topics.browsing, events)

    shown = await recommended(env, me, "stove-1", not_="gone-1")
    reasons = {p["id"]: p["reason"] for p in shown["products"]}
    assert shown["known"] is True and shown["model_version"] >= 1
    assert reasons["stove-1"] == "viewed together with tent-1"
    assert "gone-1" not in reasons  # out of stock, says the feed
    assert "tent-1" not in reasons  # what the customer is looking at now

    # The feed's invalid record is in the dead-letter topic, with its reason.
    letters = await env.consume_until(env.settings.topics.deadletter, lambda rs: any(
        r["value"]["source"]["topic"] == env.settings.topics.products for r in rs))
    [letter] = [r["value"] for r in letters
                if r["value"]["source"]["topic"] == env.settings.topics.products]
    assert letter["reason"] == "schema_violation" and letter["key"] is not None

    # A customer nobody knows gets the popular products, with that reason.
    stranger = await asyncio.to_thread(env.cli, "recommend", env.customer("new"))
    assert stranger.returncode == 0, stranger.stderr
    cold = orjson.loads(stranger.stdout)
    assert cold["known"] is False and cold["products"]
    assert {p["reason"] for p in cold["products"]} == {
        "popular right now: no browsing history yet"}
    assert "gone-1" not in [p["id"] for p in cold["products"]]


async def test_the_http_decide_endpoint_serves_a_recommendation_with_its_products(
        stack_env: Env) -> None:
    env = stack_env
    env.env.update(LEARNING)
    # A catalogue whose product_recs slot has the recommendation as its only personalised
    # action, and no experiment: the decision is the recommendation whenever it has products.
    shipped = yaml.safe_load(default_catalogue_path().read_text())
    shipped["actions"] = [a for a in shipped["actions"]
                          if a.get("neutral") or a["id"] == "recommended_for_you"]
    shipped["experiments"] = []
    catalogue = env.tmp / "catalogue.yaml"
    catalogue.write_text(yaml.safe_dump(shipped))
    env.env["STREAMPROC_CATALOGUE"] = str(catalogue)
    now = datetime.now(UTC) - timedelta(minutes=5)
    env.start_worker()
    events = []
    for cid in [env.customer("viewer") for _ in range(3)]:
        for n, pid in enumerate(("tent-2", "stove-2")):
            events.append(view(cid, pid, "outdoor", now + timedelta(seconds=n), n))
    me = env.customer("me")
    events.append(view(me, "tent-2", "outdoor", now + timedelta(seconds=30), 0))
    await env.produce_events(env.settings.topics.browsing, events)
    await recommended(env, me, "stove-2")  # the learner's snapshot has the relation now

    url, _ = await start_api(env)
    params = {"customer_id": me, "slot": "product_recs", "request_id": "recs-1"}
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        while True:  # until the API has reloaded the snapshot (every second here)
            async with http.get(f"{url}/v1/decide", params=params,
                                headers={"X-API-Key": KEY}) as resp:
                body = await resp.json()
            assert resp.status == 200, body
            action = body["decision"]["action"]
            if action["id"] == "recommended_for_you" or time.monotonic() > deadline:
                break
            params["request_id"] = f"recs-{time.monotonic()}"
            await asyncio.sleep(0.5)
    assert action["kind"] == "recommendation", body["decision"]["reasons"]
    assert action["params"]["products"][0] == {"id": "stove-2",
                                               "reason": "viewed together with tent-2"}


RELATED = ("viewed together with ", "bought by those who viewed ", "bought together with ")


async def test_a_simulated_customer_gets_related_in_stock_products_with_reasons(
        stack_env: Env) -> None:
    """`streamproc simulate` sends the product feed first, then the customers' events; the
    recommendation of the customer who browsed most names products related to what they
    browsed, none out of stock."""
    env = stack_env
    env.env.update(LEARNING)
    seed = random.randrange(1_000_000)  # simulated customer ids unique in the shared Redis
    population = Population.generate(20, seed)
    gone = {e.key for e in product_feed(population, datetime.now(UTC), seed)
            if not e.event["in_stock"]}
    assert gone
    env.start_worker()
    done = await asyncio.to_thread(env.cli, "simulate", "--customers", "20", "--rate", "2000",
                                   "--max-events", "3000", "--seed", str(seed), "--no-feedback")
    assert done.returncode == 0, done.stderr
    assert f"product feed: 360 products ({len(gone)} out of stock)" in done.stderr
    counted = re.search(r"browsing=([\d,]+) purchases=[\d,]+ profiles=([\d,]+)", done.stderr)
    assert counted, done.stderr
    sent, answers = (int(n.replace(",", "")) for n in counted.groups())
    browsing = await env.consume_until(env.settings.topics.browsing,
                                       lambda rs: len(rs) >= sent)
    seen: dict[str, set[str]] = {}
    for r in browsing:
        if r["value"]["type"] in ("product_view", "cart_add"):
            seen.setdefault(r["value"]["customer_id"], set()).add(
                r["value"]["product"]["product_id"])
    # A simulated customer may withdraw personalisation consent, after which nothing of theirs
    # is kept to relate products to: the customer is the top browser among those whose last
    # answer is a grant.
    granted: dict[str, bool] = {}  # a customer's answers are in order on their partition
    for r in await env.consume_until(env.settings.topics.profiles,
                                     lambda rs: len(rs) >= answers):
        event = r["value"]
        if event["type"] == "consent_update" and event["purpose"] == "personalisation":
            granted[event["customer_id"]] = event["granted"]
    me = max((cid for cid in seen if granted.get(cid)), key=lambda cid: len(seen[cid]))

    deadline = time.monotonic() + 180  # the learner's snapshots lag on a busy machine
    why = "no model snapshot yet"
    while True:
        got = await asyncio.to_thread(env.cli, "recommend", me, "--n", "10")
        if got.returncode == 0:
            shown = orjson.loads(got.stdout)
            products = shown["products"]
            related = [p for p in products if p["reason"].startswith(RELATED)]
            if related and not gone & {p["id"] for p in products}:
                break
            shown_gone = sorted(gone & {p["id"] for p in products})
            why = (f"model v{shown.get('model_version')}: {len(related)} related of "
                   f"{len(products)}, out of stock shown: {shown_gone}")
        else:  # until the learner's first snapshot
            assert "no model snapshot" in got.stderr, got.stderr
        if time.monotonic() >= deadline:  # the whole answer and profile, for the failure
            profile = await asyncio.to_thread(env.cli, "profile", me)
            (env.tmp / "recommend-last.json").write_text(got.stdout + "\n" + profile.stdout)
        assert time.monotonic() < deadline, (why, f"answer and profile in {env.tmp}",
                                             env.worker_log())
        await asyncio.sleep(0.5)
    assert shown["known"] is True and len(products) == 10
    assert all(p["reason"] for p in products)
    for p in related:  # related to a product this customer browsed
        assert p["reason"].split(" ")[-1] in seen[me], p
