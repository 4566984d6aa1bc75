"""Decisions on the real stack: a slot request answered on the topic and in Redis, consent
withdrawal stopping every personalised decision and every message, and the example website
consumer following the decisions topic (erasure included)."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from streamproc.decisions.catalogue import (
    MESSAGE_CHANNELS,
    default_catalogue_path,
    load_catalogue,
)
from streamproc.decisions.experiments import assign
from streamproc.state.keys import latest_decisions_key
from tests.unit.helpers import event

from .conftest import REPO, Env

pytestmark = [pytest.mark.integration, pytest.mark.core]

SHOES = {"product_id": "shoe-1", "category": "shoes", "price": 60.0}


def iso(seconds: float) -> str:
    """An event time near now: the latest decisions in Redis are kept only until they expire."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def shoe_views(cid: str, start: float, n: int = 4) -> list[dict[str, Any]]:
    return [event("product_view", customer=cid, ts=iso(start + i), product=SHOES)
            for i in range(n)]


def decisions_for(records: list[dict[str, Any]], cid: str) -> list[dict[str, Any]]:
    return [r["value"] for r in records if r["key"] == cid.encode() and r["value"] is not None]


def afternoon_zone(seconds: float) -> str:
    """A fixed-offset zone where ``seconds`` falls between 12:00 and 13:00 local time, so that no
    message channel is in quiet hours whatever the hour a test runs at.

    >>> afternoon_zone(0), afternoon_zone(23 * 3600.0)  # 00:00 UTC: 12:00 the day before at UTC-12
    ('Etc/GMT+12', 'Etc/GMT+11')
    """
    hour = datetime.fromtimestamp(seconds, UTC).hour
    offset = (12 - hour + 12) % 24 - 12  # hours east of UTC, in [-12, 11]
    return f"Etc/GMT{-offset:+d}"  # the tz database's Etc/GMT signs are inverted


async def wait_for_profile(env: Env, cid: str, ready: Any) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            shown = env.cli("profile", cid)
            if shown.returncode == 0:
                found: dict[str, Any] = orjson.loads(shown.stdout)
                if ready(found["profile"]):
                    return found
            await asyncio.sleep(0.3)


async def test_a_slot_request_is_answered_on_the_topic_and_kept_in_redis(stack_env: Env,
                                                                         test_redis) -> None:
    topics = stack_env.settings.topics
    # A customer in the experiment's bandit arm: the worker's learning bandit chooses for them.
    experiment = load_catalogue(default_catalogue_path()).experiments[0]
    cid = next(c for c in iter(lambda: stack_env.customer("slot"), None)
               if assign(c, experiment) == "bandit")
    stack_env.start_worker()
    now = time.time()
    request = event("slot_request", customer=cid, ts=iso(now + 5), slot="homepage_hero",
                    page={"url": "https://shop.example/", "page_type": "home"})
    await stack_env.produce_events(topics.browsing, [*shoe_views(cid, now), request])

    records = await stack_env.consume_until(topics.decisions, lambda rs: any(
        d["trigger"]["event_id"] == request["event_id"] for d in decisions_for(rs, cid)))
    [decision] = [d for d in decisions_for(records, cid)
                  if d["trigger"]["event_id"] == request["event_id"]]
    assert decision["slot"] == "homepage_hero" and decision["trigger"]["name"] == "slot_request"
    assert decision["experiment"] == {"id": "hero-2026", "arm": "bandit"}
    assert decision["policy"] == "thompson-v1"  # the bandit is wired into the worker
    assert 0 < decision["propensity"] <= 1
    # Four shoe views make the shoe offer eligible.
    assert "running_shoes_10pct" in decision["candidates"]
    assert decision["action"]["id"] in decision["candidates"]
    assert decision["personalised"] is True

    # The worker keeps it in Redis before publishing it, for websites reading Redis directly.
    stored = await test_redis.hget(latest_decisions_key(cid), "homepage_hero")
    assert stored is not None and orjson.loads(stored) == decision
    ttl_ms = await test_redis.pttl(latest_decisions_key(cid))
    # The slot's decisions live 60 minutes of event time (the request is 5 s ahead of now).
    assert 55 * 60_000 < ttl_ms <= 60 * 60_000 + 5_000
    shown = stack_env.cli("profile", cid)
    assert orjson.loads(shown.stdout)["latest_decisions"] == {"homepage_hero": decision}


async def test_without_channel_consent_nothing_is_sent_on_that_channel(
    stack_env: Env,
) -> None:
    topics = stack_env.settings.topics
    cid = stack_env.customer("consent")
    stack_env.start_worker()
    now = time.time()
    await stack_env.produce_events(topics.profiles, [
        event("profile_update", customer=cid, ts=iso(now - 1),
              attributes={"timezone": afternoon_zone(now)}),
        event("consent_update", customer=cid, ts=iso(now), purpose="email", granted=True)])
    await wait_for_profile(stack_env, cid, lambda p: "email" in p["consent"])
    buy = event("purchase", customer=cid, ts=iso(now + 1), order_id="o-1", amount=60.0,
                lines=[{"product_id": "shoe-1", "category": "shoes", "quantity": 1,
                        "unit_price": 60.0}])
    await stack_env.produce_events(topics.purchases, [buy])
    records = await stack_env.consume_until(topics.decisions, lambda rs: any(
        d["trigger"]["event_id"] == buy["event_id"] for d in decisions_for(rs, cid)))
    [before] = decisions_for(records, cid)
    assert (before["channel"], before["personalised"]) == ("email", True)  # consent: emailed

    # The channels withdrawn, personalisation kept (its withdrawal stops every decision:
    # test_consent.py): no message goes out, the web slots stay personalised.
    await stack_env.produce_events(topics.profiles, [
        event("consent_update", customer=cid, ts=iso(now + 2), purpose=purpose, granted=False)
        for purpose in ("email", "sms", "call_centre")])
    await wait_for_profile(stack_env, cid, lambda p: len(p["consent"]) == 3)
    again = {**buy, "event_id": f"{buy['event_id']}-2", "order_id": "o-2", "ts": iso(now + 13)}
    await stack_env.produce_events(topics.purchases, [again])
    records = await stack_env.consume_until(topics.decisions, lambda rs: any(
        d["trigger"]["event_id"] == again["event_id"] for d in decisions_for(rs, cid)))
    made = [d for d in decisions_for(records, cid) if d["trigger"]["event_id"] == again["event_id"]]
    assert made and all(d["channel"] not in MESSAGE_CHANNELS or d["action"]["kind"] == "none"
                        for d in made), made
    assert all(any("nothing sent by" in r for r in d["reasons"]) for d in made
               if d["channel"] in MESSAGE_CHANNELS)


async def test_the_example_website_consumer_keeps_the_latest_and_forgets_the_erased(
    stack_env: Env,
) -> None:
    topics = stack_env.settings.topics
    cid = stack_env.customer("web")
    stack_env.start_worker()
    # Its log (aiokafka's warnings, e.g. while a new topic gets its leaders) goes to a file:
    # stdout carries only the JSON lines it prints.
    stderr = open(stack_env.tmp / "website_consumer.log", "wb")  # noqa: SIM115
    consumer = await asyncio.create_subprocess_exec(
        sys.executable, str(REPO / "examples" / "website_consumer.py"),
        "--bootstrap", stack_env.settings.kafka_bootstrap, "--topic", topics.decisions,
        stdout=asyncio.subprocess.PIPE, stderr=stderr)
    assert consumer.stdout is not None
    lines: list[dict[str, Any]] = []

    async def read_until(done: Any) -> dict[str, Any]:
        async with asyncio.timeout(60):
            while True:
                line = await consumer.stdout.readline()  # type: ignore[union-attr]
                assert line, (f"the consumer stopped: {lines}\n"
                              f"{(stack_env.tmp / 'website_consumer.log').read_text()[-3000:]}")
                lines.append(orjson.loads(line))
                if done(lines[-1]):
                    return lines[-1]

    try:
        await read_until(lambda c: c["event"] == "started")
        now = time.time()
        await stack_env.produce_events(topics.browsing, [
            event("slot_request", customer=cid, ts=iso(now), slot="cart_drawer"),
            event("cart_add", customer=cid, ts=iso(now + 1), product=SHOES, quantity=2),
        ])
        first = await read_until(lambda c: c.get("customer_id") == cid)
        assert first["slot"] == "cart_drawer"
        assert first["action"]["id"] == "free_delivery_banner"  # an empty cart: neutral
        second = await read_until(lambda c: c.get("customer_id") == cid)
        assert second["action"]["id"] == "cart_reminder"  # the newer decision replaces it
        assert second["action"]["params"]["cart_value"] == 120.0

        done = stack_env.cli("forget", cid)
        assert done.returncode == 0, done.stderr
        erased = await read_until(lambda c: c.get("customer_id") == cid)
        assert erased == {"event": "erased", "customer_id": cid, "slots": 1}
    finally:
        consumer.terminate()
        await consumer.wait()
        stderr.close()
