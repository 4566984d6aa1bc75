"""Events in through the real Kafka, state in the real Redis, decisions and dead letters out."""

from __future__ import annotations

import orjson
import pytest

from streamproc.state.document import unpack_doc
from streamproc.state.keys import customer_key
from tests.unit.helpers import event

from .conftest import Env

pytestmark = [pytest.mark.integration, pytest.mark.core]


async def test_event_in_decision_out_and_profile_updated(stack_env: Env) -> None:
    topics = stack_env.settings.topics
    cid = stack_env.customer()
    stack_env.start_worker()
    await stack_env.produce_events(topics.browsing, [
        event("page_view", customer=cid),
        event("cart_add", customer=cid, minute=1,
              product={"product_id": "boot-1", "category": "shoes", "price": 79.5}, quantity=2),
    ])
    records = await stack_env.consume_until(
        topics.decisions, lambda rs: any(r["key"] == cid.encode() for r in rs))
    [decision] = [r["value"] for r in records if r["key"] == cid.encode()]
    assert decision["action"]["id"] == "cart_reminder"
    assert decision["action"]["params"] == {"cart_value": 159.0}  # params_from: cart.value
    assert decision["trigger"]["topic"] == topics.browsing

    shown = stack_env.cli("profile", cid)
    assert shown.returncode == 0, shown.stderr
    profile = orjson.loads(shown.stdout)["profile"]
    assert profile["cart"]["value"] == 159.0
    assert profile["counts"] == {"page_view": 1, "cart_add": 1, "sessions": 1}
    assert profile["first_seen_ms"] == 1772359200000  # as stored, for programs

    human = stack_env.cli("profile", cid, "--human")
    assert human.returncode == 0, human.stderr
    shown = orjson.loads(human.stdout)["profile"]
    assert shown["first_seen_ms"] == "2026-03-01T10:00:00.000Z"
    assert list(shown["activity"]["cart_add"]) == ["2026-03-01"]


async def test_bad_messages_are_dead_lettered_and_the_worker_goes_on(stack_env: Env,
                                                                     test_redis) -> None:
    topics = stack_env.settings.topics
    cid = stack_env.customer()
    stack_env.start_worker()
    key = cid.encode()
    too_big = orjson.dumps(event("search", customer=cid, query="q" * 500,
                                 context={"user_agent": "u" * 500})) + b" " * 70_000
    await stack_env.produce(topics.browsing, [
        (key, b"{this is not json"),
        (key, orjson.dumps({**event("search", customer=cid), "query": 42})),
        (key, orjson.dumps(event("search", customer=cid) | {"type": "teleport"})),
        (key, too_big),
        (key, b"\xff\xfe binary \x00"),
        (key, orjson.dumps({**event("search", customer=cid), "ts": "2026-03-01T10:00:00"})),
        (key, orjson.dumps(event("cart_add", customer=cid))),  # a good one after the bad ones
    ])
    dead = await stack_env.consume_until(
        topics.deadletter, lambda rs: len([r for r in rs if r["key"] == key]) >= 6)
    reasons = [r["value"]["reason"] for r in dead if r["key"] == key]
    assert reasons == ["invalid_json", "schema_violation", "unknown_type", "too_large",
                       "invalid_json", "schema_violation"]
    # The reason says what the field needs, not which schema keyword failed.
    assert dead[1]["value"]["error"] == "search: `query` must be a string; got a number (42)"
    assert dead[5]["value"]["error"] == ("search: `ts` needs a time zone, e.g. "
                                         "`2026-03-01T10:00:00Z`; got '2026-03-01T10:00:00'")
    first = dead[0]["value"]
    assert first["source"]["topic"] == topics.browsing and first["source"]["offset"] >= 0
    assert first["value"] == {"encoding": "utf-8", "data": "{this is not json"}
    assert dead[4]["value"]["value"]["encoding"] == "base64"

    decisions = await stack_env.consume_until(
        topics.decisions, lambda rs: any(r["key"] == key for r in rs))
    assert [r["value"]["action"]["id"] for r in decisions if r["key"] == key] == ["cart_reminder"]
    assert all(p.poll() is None for p in stack_env.workers)
    stored = unpack_doc(await test_redis.hget(customer_key(cid), "doc"))
    assert stored["counts"] == {"cart_add": 1, "sessions": 1}  # bad messages left no trace
