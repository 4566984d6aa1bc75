"""Identity on the real stack (docs/identity.md), with two workers: a visitor browses
anonymously and fills a cart, logs in (an identify event through the HTTP API), and the next
decision for the customer uses the cart and the interests; a decide under the anonymous id is
the customer's; a later event under the anonymous id reaches the customer's profile once."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from streamproc.events.partitioner import partition_for

from .conftest import Env
from .polling import until
from .test_api import H, profile_of, start_api
from .test_web import free_port, get, sample

pytestmark = [pytest.mark.integration, pytest.mark.core]


def on_other_partitions(env: Env) -> tuple[str, str]:
    """An anonymous id and a customer id whose partitions differ: the merge crosses them."""
    partitions = env.settings.partitions
    anon = env.customer("anon")
    while True:
        customer = env.customer("cust")
        if partition_for(customer.encode(), partitions) != partition_for(anon.encode(),
                                                                          partitions):
            return anon, customer


async def post(http: aiohttp.ClientSession, url: str, events: list[dict]) -> None:
    async with http.post(f"{url}/v1/events", json=events, headers=H) as resp:
        assert resp.status == 202, await resp.text()


async def test_anonymous_cart_and_interests_carry_over_at_login(
        stack_env: Env) -> None:
    async with aiohttp.ClientSession() as http:
        await login_story(stack_env, http)


async def login_story(stack_env: Env, http: aiohttp.ClientSession) -> None:
    stack_env.start_worker()
    stack_env.start_worker()
    url, _ = await start_api(stack_env)
    anon, customer = on_other_partitions(stack_env)
    boots = {"product_id": "boots-7", "category": "shoes", "brand": "Stride", "price": 89.0}
    await post(http, url, [
        {"type": "page_view", "customer_id": customer, "url": "https://shop.example/",
         "page_type": "home"},
        {"type": "product_view", "customer_id": anon, "product": boots},
        {"type": "product_view", "customer_id": anon, "product": boots},
        {"type": "cart_add", "customer_id": anon, "product": boots, "quantity": 1},
    ])

    async def carted() -> dict | None:
        p = await profile_of(stack_env, anon)
        return p if p and p["cart"]["value"] == 89.0 else None

    await until("the anonymous cart is in the anonymous profile", carted)
    await post(http, url, [{"type": "identify", "customer_id": anon, "identified_as": customer,
                            "identifier_kind": "anonymous"}])

    async def merged() -> dict | None:
        p = await profile_of(stack_env, customer)
        return p if p and anon in p.get("aliases", []) else None

    p = await until("the customer's profile has the anonymous one merged", merged)
    assert p["cart"]["items"]["boots-7"]["qty"] == 1 and p["cart"]["value"] == 89.0
    assert p["counts"]["product_view"] == 2 and p["counts"]["page_view"] == 1
    assert "shoes" in p["affinities"]["categories"]
    alias = await profile_of(stack_env, anon)
    assert alias is not None and alias["alias_of"] == customer and not alias["cart"]["items"]

    # The next decision, for the customer: made from the merged cart and interests.
    params = {"customer_id": customer, "slot": "cart_drawer"}
    async with http.get(f"{url}/v1/decide", params=params, headers=H) as resp:
        decision = (await resp.json())["decision"]
    assert decision["customer_id"] == customer
    assert decision["scores"]["cart_value"] == 89.0
    assert decision["segments"]["cart"] != "empty"
    assert decision["action"]["id"] in {"cart_reminder", "free_delivery_nudge"}
    # A decide under the anonymous id is the customer's (its profile, its decision).
    params = {"customer_id": anon, "slot": "cart_drawer"}
    async with http.get(f"{url}/v1/decide", params=params, headers=H) as resp:
        decision = (await resp.json())["decision"]
    assert decision["customer_id"] == customer and decision["scores"]["cart_value"] == 89.0

    # A later event under the anonymous id (an old tab) reaches the customer's profile, once.
    await post(http, url, [{"type": "cart_add", "customer_id": anon, "quantity": 1,
                            "product": {"product_id": "socks-2", "category": "sports",
                                        "price": 11.0}}])

    async def forwarded() -> dict | None:
        p = await profile_of(stack_env, customer)
        return p if p and "socks-2" in p["cart"]["items"] else None

    p = await until("the event under the alias reaches the customer", forwarded)
    assert p["cart"]["value"] == 100.0 and p["counts"]["cart_add"] == 2
    alias = await profile_of(stack_env, anon)
    assert alias is not None and not alias["counts"]


async def test_events_posted_under_an_alias_reach_the_customer_once_and_are_counted(
        stack_env: Env) -> None:
    """After a merge, events posted to /v1/events under the anonymous id (one of them retried
    by the client with the same event id) are forwarded and applied to the customer's profile
    exactly once; the workers' /metrics count the link, the merge, the forwards and the unlink
    once each (summed over both workers: each step runs on the worker of its partition)."""
    ports = [free_port(), free_port()]
    for port in ports:
        stack_env.start_worker(settings={"STREAMPROC_WEB_PORT": str(port)})
    url, _ = await start_api(stack_env)
    anon, customer = on_other_partitions(stack_env)
    shoes = {"product_id": "shoes-7", "category": "shoes", "price": 40.0}
    async with aiohttp.ClientSession() as http:
        await post(http, url, [
            {"type": "page_view", "customer_id": customer, "url": "https://shop.example/",
             "page_type": "home"},
            {"type": "product_view", "customer_id": anon, "product": shoes}])

        async def seen() -> bool:
            return all([await profile_of(stack_env, c) for c in (anon, customer)])

        await until("both profiles exist", seen)
        await post(http, url, [{"type": "identify", "customer_id": anon,
                                "identified_as": customer, "identifier_kind": "anonymous"}])

        async def merged() -> dict | None:
            p = await profile_of(stack_env, customer)
            return p if p and anon in p.get("aliases", []) else None

        await until("the merge is applied", merged)
        cart_add = {"event_id": f"alias-cart-{anon}", "type": "cart_add", "customer_id": anon,
                    "product": shoes, "quantity": 2}
        await post(http, url, [cart_add])
        await post(http, url, [cart_add])  # the client retries it: the same event id
        await post(http, url, [{"type": "search", "customer_id": anon, "query": "marker"}])

        async def marked() -> dict | None:  # the marker comes after both copies, in order
            p = await profile_of(stack_env, customer)
            return p if p and p["counts"].get("search") == 1 else None

        p = await until("the events under the alias reach the customer", marked)
        assert p["counts"]["cart_add"] == 1 and p["cart"]["items"]["shoes-7"]["qty"] == 2
        assert p["counts"]["product_view"] == 1 and p["counts"]["page_view"] == 1
        alias = await profile_of(stack_env, anon)
        assert alias is not None and alias["alias_of"] == customer and not alias["counts"]

        await post(http, url, [{"type": "unlink", "customer_id": anon}])

        async def forgotten() -> bool:
            p = await profile_of(stack_env, customer)
            return bool(p and anon not in p.get("aliases", []))

        await until("the customer forgets the unlinked identifier", forgotten)

    def total(text_of: list[str], name: str, **labels: str) -> float:
        return sum(sample(t, name, **labels) or 0.0 for t in text_of)

    async def counted() -> list[str] | None:
        texts = [(await asyncio.to_thread(get, port, "/metrics"))[1].decode() for port in ports]
        return texts if total(texts, "streamproc_identity_links_total",
                              change="unlinked") == 1 else None

    texts = await until("the workers count the unlink", counted, log=stack_env.worker_log)
    assert total(texts, "streamproc_identity_links_total", change="linked") == 1
    assert total(texts, "streamproc_identity_merges_total") == 1
    # The cart_add and the marker; the retried copy was dropped by the alias's duplicate window.
    assert total(texts, "streamproc_identity_forwarded_total") == 2
