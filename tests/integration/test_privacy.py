"""Right of access and right to erasure, on the real stack."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson
import pytest

from streamproc.state.document import unpack_doc
from tests.unit.helpers import event

from .conftest import Env

pytestmark = [pytest.mark.integration, pytest.mark.core]


async def _keys_mentioning(redis_client, customer_id: str) -> list[bytes]:
    found = [k async for k in redis_client.scan_iter(match=f"*{customer_id}*")]
    # Values too: nothing else may hold the id (histograms hold counts only).
    for key in [k async for k in redis_client.scan_iter()]:
        kind = (await redis_client.type(key)).decode()
        if kind == "hash":
            fields = await redis_client.hgetall(key)
            if b"doc" in fields:  # the profile, compressed: look inside
                fields[b"doc"] = orjson.dumps(unpack_doc(fields[b"doc"]))
            blob = orjson.dumps({k.decode(): v.decode(errors="replace")
                                 for k, v in fields.items()})
        elif kind == "string":
            blob = await redis_client.get(key) or b""
        elif kind == "zset":  # the timer indexes: members name the customer
            blob = b"\n".join(await redis_client.zrange(key, 0, -1))
        else:
            continue
        if customer_id.encode() in blob:
            found.append(key)
    return found


def _tells_the_learner_to_forget(records: list[dict], customer_id: str) -> bool:
    """Whether a learning-topic record (one observation, or a worker's array of them) holds
    the customer's erase observation."""
    for r in records:
        value = r["value"]
        for obs in value if isinstance(value, list) else [value]:
            if (isinstance(obs, dict) and obs.get("kind") == "erase"
                    and obs.get("customer_id") == customer_id):
                return True
    return False


async def _wait_for_profile(env: Env, cid: str) -> dict:
    async with asyncio.timeout(60):
        while True:
            shown = env.cli("profile", cid)
            if shown.returncode == 0:
                return orjson.loads(shown.stdout)
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("how", ["forget_command", "erase_event"])
async def test_erasure_leaves_nothing_in_redis_and_tombstones_on_topics(
    stack_env: Env, test_redis, how: str
) -> None:
    topics = stack_env.settings.topics
    cid, other = stack_env.customer("erase-me"), stack_env.customer("keep-me")
    stack_env.start_worker()
    # A slot request at the current time leaves an unexpired latest decision in Redis: a
    # second key of the customer, which erasure must delete too.
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    await stack_env.produce_events(topics.browsing, [
        event("cart_add", customer=cid), event("cart_add", customer=other),
        event("slot_request", customer=cid, ts=now, slot="homepage_hero")])
    await stack_env.produce_events(topics.purchases, [event("purchase", customer=cid)])
    await stack_env.produce_events(topics.profiles, [
        event("profile_update", customer=cid, attributes={"city": "Lyon", "postcode": "69001"})])
    everything = await _wait_for_profile(stack_env, cid)
    assert everything["customer_id"] == cid
    # Wait for all three inputs to be applied, and for the slot request's decision: the worker
    # keeps it in Redis after the batch's state is written, so it may come a moment later.
    async with asyncio.timeout(60):
        while (everything["profile"]["counts"].get("profile_update") is None
               or everything["profile"]["counts"].get("purchase") is None
               or everything["profile"]["counts"].get("slot_request") is None
               or "homepage_hero" not in everything["latest_decisions"]):
            await asyncio.sleep(0.2)
            everything = await _wait_for_profile(stack_env, cid)
    # The abandoned cart's email was decided too (the request moved the partition's event time
    # on past the cart timer; no email consent: "none").
    mentioning = set(await _keys_mentioning(test_redis, cid))
    assert {f"sp:{{{cid}}}:state".encode(), f"sp:{{{cid}}}:decisions".encode()} <= mentioning
    # Besides them, only the timer indexes (its lifecycle timer at least).
    others = {k.decode() for k in mentioning} - {f"sp:{{{cid}}}:state", f"sp:{{{cid}}}:decisions"}
    assert others and all(k.startswith("sp:timers:{") for k in others), others

    if how == "forget_command":
        done = stack_env.cli("forget", cid)
        assert done.returncode == 0, done.stderr
        assert "2 Redis key(s) deleted" in done.stdout
    else:
        await stack_env.produce_events(topics.profiles, [event("erase", customer=cid)])

    for topic in (topics.decisions, topics.segments, topics.deadletter):
        records = await stack_env.consume_until(
            topic, lambda rs: any(r["key"] == cid.encode() and r["value"] is None for r in rs))
        assert any(r["key"] == cid.encode() and r["value"] is None for r in records)
    # Either way the learner is told to forget the customer (their pending moments, purchases).
    learning = await stack_env.consume_until(
        topics.learning, lambda rs: _tells_the_learner_to_forget(rs, cid))
    assert _tells_the_learner_to_forget(learning, cid)
    assert not _tells_the_learner_to_forget(learning, other)
    async with asyncio.timeout(30):
        while await _keys_mentioning(test_redis, cid):
            await asyncio.sleep(0.2)
    assert stack_env.cli("profile", cid).returncode == 1
    assert stack_env.cli("profile", other).returncode == 0  # only the one customer is gone
