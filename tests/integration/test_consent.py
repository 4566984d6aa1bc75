"""Consent that stops profiling, on the real stack with a worker: under the shipped default
(personalisation denied until granted) a customer is profiled only between a grant and a
withdrawal. After the withdrawal, while their events keep coming: no score observation, no
other learning observation, no bandit lesson, no segment move and no decision; their profile in
Redis keeps only the consent record and the bookkeeping. After a new grant, all of it again."""

from __future__ import annotations

import time
from typing import Any

import pytest

from streamproc.decisions.catalogue import default_catalogue_path, load_catalogue
from streamproc.decisions.experiments import assign
from streamproc.processor import event_token
from streamproc.state.keys import latest_decisions_key
from tests.unit.helpers import event

from .conftest import Env
from .polling import until
from .test_api import profile_of
from .test_decisions import SHOES, iso, shoe_views

pytestmark = [pytest.mark.integration, pytest.mark.core]


def observations(records: list[dict[str, Any]], cid: str) -> list[dict[str, Any]]:
    """The customer's learning-topic observations (a record holds one, or a worker's array)."""
    out = []
    for r in records:
        value = r["value"]
        for obs in value if isinstance(value, list) else [value]:
            if isinstance(obs, dict) and obs.get("customer_id") == cid:
                out.append(obs)
    return out


def outputs_of(records: dict[str, list[dict[str, Any]]], cid: str,
               event_ids: set[str]) -> dict[str, list[Any]]:
    """What ``event_ids`` caused for the customer, by kind: decisions, segment moves, and the
    learning topic's observations by their kind (score, purchase, expect, reward, erase)."""
    key = cid.encode()
    found: dict[str, list[Any]] = {
        "decisions": [r["value"] for r in records["decisions"] if r["key"] == key
                      and r["value"] and r["value"]["trigger"]["event_id"] in event_ids],
        "segments": [r["value"] for r in records["segments"] if r["key"] == key
                     and r["value"] and r["value"]["trigger"]["event_id"] in event_ids]}
    for obs in observations(records["learning"], cid):
        if obs.get("event_id") in event_ids:
            found.setdefault(obs["kind"], []).append(obs)
    return found


async def applied(env: Env, cid: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The customer's profile once the worker has applied ``events`` (each one's id is in the
    profile's window of recent event ids)."""
    tokens = {event_token(e["event_id"]) for e in events}

    async def check() -> dict[str, Any] | None:
        p = await profile_of(env, cid)
        return p if p is not None and tokens <= set(p.get("recent_event_ids") or ()) else None

    found: dict[str, Any] = await until(f"the worker applies {len(events)} events of {cid}",
                                        check)
    return found


async def send(env: Env, events: list[dict[str, Any]]) -> dict[str, Any]:
    topics = env.settings.topics
    by_topic = {"consent_update": topics.profiles, "purchase": topics.purchases,
                "feedback": topics.feedback}
    for e in events:
        await env.produce_events(by_topic.get(e["type"], topics.browsing), [e])
    return await applied(env, events[0]["customer_id"], events)


def activity(cid: str, start: float) -> list[dict[str, Any]]:
    """Events that, profiled, score (browsing), move segments, decide and teach the bandit."""
    return [
        *shoe_views(cid, start),
        event("slot_request", customer=cid, ts=iso(start + 5), slot="homepage_hero"),
        event("cart_add", customer=cid, ts=iso(start + 6), product=SHOES, quantity=1),
        event("purchase", customer=cid, ts=iso(start + 7), order_id=f"o-{start}", amount=60.0,
              lines=[{"product_id": "shoe-1", "category": "shoes", "quantity": 1,
                      "unit_price": 60.0}]),
    ]


def personalisation(cid: str, granted: bool, at: float) -> dict[str, Any]:
    return event("consent_update", customer=cid, ts=iso(at), purpose="personalisation",
                 granted=granted, source="web_form")


async def test_after_a_withdrawal_nothing_is_profiled_until_a_new_grant(
        stack_env: Env, test_redis: Any) -> None:
    topics = stack_env.settings.topics
    # In the hero experiment's bandit arm: a slot request there is a learning pick (a lesson).
    experiment = load_catalogue(default_catalogue_path()).experiments[0]
    cid = next(c for c in iter(lambda: stack_env.customer("consent"), None)
               if assign(c, experiment) == "bandit")
    stack_env.start_worker(settings={"STREAMPROC_CONSENT_DEFAULTS": "personalisation=denied"})
    now = time.time()

    # 1. Granted: profiled. Feedback on the hero decision rewards the bandit. Each consent
    # change is applied before the events after it are sent: topics are not read in step.
    granted = [personalisation(cid, True, now), *activity(cid, now + 1)]
    await send(stack_env, granted[:1])
    await send(stack_env, granted[1:])
    read = await stack_env.consume_until(topics.decisions, lambda rs: any(
        r["key"] == cid.encode() and r["value"]["slot"] == "homepage_hero" for r in rs))
    [hero] = [r["value"] for r in read if r["key"] == cid.encode()
              and r["value"]["slot"] == "homepage_hero"]
    click = event("feedback", customer=cid, ts=iso(now + 9), decision_id=hero["decision_id"],
                  outcome="click")
    await send(stack_env, [click])
    granted.append(click)
    profile = await profile_of(stack_env, cid)
    assert profile is not None and profile["segments"] and profile["counts"]["product_view"] == 4

    # 2. Withdrawn.
    withdrawal = personalisation(cid, False, now + 20)
    withheld = await send(stack_env, [withdrawal])
    assert withheld["consent"]["personalisation"]["granted"] is False
    assert withheld["counts"] == {} and withheld["segments"] == {} and not withheld.get("scores")
    assert withheld["purchases"]["orders"] == 0 and withheld["cart"]["items"] == {}
    assert "decisions" not in withheld and "timers" not in withheld
    assert withheld["applied"]  # the bookkeeping that applies each event once stays
    assert not await test_redis.exists(latest_decisions_key(cid))

    # 3. Events keep coming: applied (the profile's bookkeeping moves on), nothing else.
    quiet = [*activity(cid, now + 30),
             event("feedback", customer=cid, ts=iso(now + 40), decision_id=hero["decision_id"],
                   outcome="conversion")]
    after = await send(stack_env, quiet)
    assert after["applied"] != withheld["applied"] and after["counts"] == {}

    # 4. Granted again: profiled again.
    again = [personalisation(cid, True, now + 50), *activity(cid, now + 51)]
    await send(stack_env, again[:1])
    await send(stack_env, again[1:])

    def all_there(kind: str, ids: set[str]) -> Any:
        return lambda rs: bool(outputs_of({"decisions": [], "segments": [], "learning": [],
                                           kind: rs}, cid, ids)[kind])

    ids = {phase: {e["event_id"] for e in events} for phase, events in
           (("granted", granted), ("quiet", quiet), ("again", again))}
    # Each topic read until the outputs of the new grant are on it: the customer's records go
    # to one partition of each, in order, so what phase 3 caused would be there before them.
    records = {
        "decisions": await stack_env.consume_until(
            topics.decisions, all_there("decisions", ids["again"])),
        "segments": await stack_env.consume_until(
            topics.segments, all_there("segments", ids["again"])),
        "learning": await stack_env.consume_until(
            topics.learning, lambda rs: {"score", "expect"} <= {
                o["kind"] for o in observations(rs, cid) if o.get("event_id") in ids["again"]}),
    }
    before, during, resumed = (outputs_of(records, cid, ids[phase])
                               for phase in ("granted", "quiet", "again"))
    # What each assertion below counts exists while the customer is profiled ...
    for name in ("decisions", "segments", "score", "purchase", "expect", "reward"):
        assert before.get(name), f"no {name} before the withdrawal: the test proves nothing"
    for name in ("decisions", "segments", "score", "expect"):
        assert resumed.get(name), f"no {name} after the new grant"
    # ... and none of it while they are not.
    assert during == {"decisions": [], "segments": []}, during
    # The withdrawal itself: an exit from every segment, and the learner told to forget them.
    at_withdrawal = outputs_of(records, cid, {withdrawal["event_id"]})
    assert at_withdrawal["segments"] and all(
        (m["to"], m["reason"]) == (None, "consent_withdrawn") for m in at_withdrawal["segments"])
    assert {m["segmentation"] for m in at_withdrawal["segments"]} == set(profile["segments"])
    assert [o["kind"] for o in observations(records["learning"], cid)
            if o.get("event_id") == withdrawal["event_id"]] == ["erase"]
    assert at_withdrawal["decisions"] == []
