"""Bounded event time on the real stack: page views dated 2099 and 9999 go to the dead-letter
topic (``future_timestamp``, not a failure in the Redis script) and fire nobody's timer early."""

from __future__ import annotations

import time

import pytest

from streamproc.events.partitioner import partition_for

from .conftest import Env
from .test_decisions import wait_for_profile
from .test_timers import at, tick, timer_decisions

pytestmark = [pytest.mark.integration, pytest.mark.core]

MIN = 60_000
Y2099 = 4_102_444_799_000  # 2099-12-31T23:59:59Z
Y9999 = 253_402_300_799_000  # 9999-12-31T23:59:59Z


def on_partition(env: Env, name: str, partition: int) -> str:
    """A new customer id whose key lands on ``partition``."""
    return next(cid for _ in range(10_000) if partition_for(
        (cid := env.customer(name)).encode(), env.settings.partitions) == partition)


async def test_future_page_views_are_dead_lettered_and_move_no_timer(stack_env: Env) -> None:
    topics = stack_env.settings.topics
    stack_env.env["STREAMPROC_TIMER_LATENESS_SECONDS"] = "0"
    cart = stack_env.customer("cart")
    partition = partition_for(cart.encode(), stack_env.settings.partitions)
    clocks = [on_partition(stack_env, "clock", partition) for _ in range(2)]
    marker = on_partition(stack_env, "marker", partition)
    stack_env.start_worker()
    # Three hours ago (records are stamped now: a past event is fine, a future one is not).
    base = (int(time.time() * 1000) - 3 * 3_600_000) // 1000 * 1000
    await stack_env.produce_events(topics.profiles, [
        at("consent_update", cart, base - MIN, purpose="email", granted=True)])
    await stack_env.produce_events(topics.browsing, [
        at("cart_add", cart, base,
           product={"product_id": "p9", "category": "kitchen", "price": 80.0}, quantity=1)])
    await wait_for_profile(stack_env, cart, lambda p: p["consent"] and p["cart"]["value"] > 0)

    # Two minutes after the cart, two wrong clocks on the cart's partition; then event time
    # moves on half an hour; then a marker, read once all of that is done.
    await stack_env.produce_events(topics.browsing, [
        at("page_view", clocks[0], Y2099), at("page_view", clocks[1], Y9999)])
    await tick(stack_env, base + 30 * MIN)
    await stack_env.produce_events(topics.browsing, [at("page_view", marker, base + 31 * MIN)])
    await wait_for_profile(stack_env, marker, lambda p: True)

    dead = await stack_env.consume_until(topics.deadletter, lambda rs: len(rs) >= 2)
    assert sorted(r["value"]["reason"] for r in dead) == ["future_timestamp"] * 2
    assert {r["key"] for r in dead} == {c.encode() for c in clocks}
    assert all("STREAMPROC_MAX_FUTURE_SKEW_S" in r["value"]["error"] for r in dead)
    for cid in clocks:
        assert stack_env.cli("profile", cid).returncode != 0  # never applied
    # The cart's timer is still armed at its own time: nothing fired it.
    shown = await wait_for_profile(stack_env, cart, lambda p: True)
    assert "cart_abandoned" in shown["profile"]["timers"]

    # An hour of real event time after the cart, it fires, once, at its own time.
    await tick(stack_env, base + 61 * MIN)
    records = await stack_env.consume_until(topics.decisions,
                                            lambda rs: timer_decisions(rs, cart))
    [fired] = timer_decisions(records, cart)
    assert fired["trigger"]["name"] == "cart_abandoned"
    assert fired["ts"] == at("page_view", cart, base + 60 * MIN)["ts"]
