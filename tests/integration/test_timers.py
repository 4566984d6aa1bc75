"""Durable event-time timers on the real stack: a cart left an hour, and a customer who lapses
without an event of their own, followed up email -> SMS -> call centre."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streamproc.decisions.record import iso_ms
from streamproc.events.partitioner import partition_for
from streamproc.state.keys import timer_index_key
from tests.unit.helpers import event

from .conftest import Env
from .test_decisions import wait_for_profile

pytestmark = [pytest.mark.integration, pytest.mark.core]

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000


def at(type_: str, cid: str, ts_ms: int, **fields: Any) -> dict[str, Any]:
    return event(type_, customer=cid, ts=iso_ms(ts_ms), **fields)


def ticker(partition: int, partitions: int) -> str:
    """A customer id whose key the producer's partitioner (murmur2) puts on ``partition``: the
    worker dead-letters an event sent to another partition than its key's."""
    return next(cid for i in range(10_000)
                if partition_for((cid := f"ticker-{partition}-{i}").encode(),
                                 partitions) == partition)


async def tick(env: Env, ts_ms: int) -> None:
    """Event time moves on, on every partition: a page view of a ticker customer on each."""
    producer = AIOKafkaProducer(bootstrap_servers=env.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for partition in range(env.settings.partitions):
            body = at("page_view", ticker(partition, env.settings.partitions), ts_ms)
            await producer.send_and_wait(env.settings.topics.browsing, orjson.dumps(body),
                                         key=body["customer_id"].encode())
    finally:
        await producer.stop()


def timer_decisions(records: list[dict[str, Any]], cid: str) -> list[dict[str, Any]]:
    return [r["value"] for r in records if r["key"] == cid.encode() and r["value"] is not None
            and r["value"]["trigger"]["type"] == "timer"]


async def test_cart_abandonment_and_a_win_back_cascade_in_event_time(stack_env: Env,
                                                                     test_redis) -> None:
    topics = stack_env.settings.topics
    stack_env.env["STREAMPROC_TIMER_LATENESS_SECONDS"] = "0"
    cart, lapsing = stack_env.customer("cart"), stack_env.customer("lapse")
    stack_env.start_worker()
    # 2025-10-09T12:00:00Z: a past year replayed; noon, so that no step falls in quiet hours.
    start = 1_760_011_200_000
    purchase = at("purchase", lapsing, start, order_id="o-1", amount=60.0,
                  lines=[{"product_id": "p1", "category": "home", "quantity": 1,
                          "unit_price": 60.0}])
    await stack_env.produce_events(topics.profiles, [
        at("consent_update", cid, start - MIN, purpose=purpose, granted=True)
        for cid in (cart, lapsing) for purpose in ("email", "sms", "call_centre")])
    await stack_env.produce_events(topics.purchases, [purchase])
    lapse = start + 180 * DAY
    await stack_env.produce_events(topics.browsing, [
        at("cart_add", cart, lapse - 2 * HOUR,
           product={"product_id": "p9", "category": "kitchen", "price": 80.0}, quantity=1)])

    # Event time moves on only once these are in (they came on other topics).
    await wait_for_profile(stack_env, lapsing, lambda p: len(p["consent"]) == 3
                           and p["purchases"]["orders"] == 1)
    await wait_for_profile(stack_env, cart, lambda p: len(p["consent"]) == 3
                           and p["cart"]["value"] > 0)

    # An hour and a minute after the cart: the cart timer. Past the lapse: the win-back email
    # (at the lapse's own time: nothing of the customer's came in between).
    await tick(stack_env, lapse + MIN)
    records = await stack_env.consume_until(topics.decisions, lambda rs: (
        timer_decisions(rs, cart) and any(d["trigger"]["name"] == "winback"
                                          for d in timer_decisions(rs, lapsing))))
    [abandoned] = timer_decisions(records, cart)
    assert abandoned["trigger"]["name"] == "cart_abandoned"
    assert abandoned["ts"] == iso_ms(lapse - HOUR) and abandoned["channel"] == "email"
    assert abandoned["action"]["id"] == "cart_reminder" and abandoned["personalised"]
    [email] = [d for d in timer_decisions(records, lapsing) if d["trigger"]["name"] == "winback"]
    assert (email["channel"], email["ts"]) == ("email", iso_ms(lapse))
    assert email["segments"]["lifecycle"] == "lapsed" and email["personalised"]

    # Not opened within a day: SMS; two days later: the call centre.
    await tick(stack_env, lapse + 24 * HOUR + MIN)
    await tick(stack_env, lapse + 72 * HOUR + MIN)
    records = await stack_env.consume_until(topics.decisions, lambda rs: len(
        [d for d in timer_decisions(rs, lapsing) if d["trigger"]["name"] == "winback"]) == 3)
    steps = [d for d in timer_decisions(records, lapsing) if d["trigger"]["name"] == "winback"]
    assert [(d["channel"], d["ts"]) for d in steps] == [
        ("email", iso_ms(lapse)), ("sms", iso_ms(lapse + 24 * HOUR)),
        ("call_centre", iso_ms(lapse + 72 * HOUR))]
    assert len({d["decision_id"] for d in steps}) == 3

    # The timers fired leave the index once their decisions are published (a moment after
    # they reach the topic); the lapsed customer has no timer left (nothing more happens to
    # them by time alone), the cart customer only its lifecycle timer.
    keys = [timer_index_key(stack_env.settings.app_id, p)
            for p in range(stack_env.settings.partitions)]

    async def left() -> tuple[list[str], list[str]]:
        members = [m.decode() for k in keys for m in await test_redis.zrange(k, 0, -1)]
        return ([m for m in members if m.startswith(f"{lapsing}|")],
                [m.split("|")[1] for m in members if m.startswith(f"{cart}|")])

    deadline = asyncio.get_running_loop().time() + 10
    while await left() != ([], ["lifecycle"]) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.1)
    lapsing_left, cart_left = await left()
    assert lapsing_left == []
    assert cart_left == ["lifecycle"]
    # Each decision exactly once on the topic (no timer fired twice).
    ids = [d["decision_id"] for d in timer_decisions(records, lapsing) + timer_decisions(
        records, cart)]
    assert len(ids) == len(set(ids))
