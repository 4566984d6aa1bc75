"""Data you can trust, on the real stack: a worker keeps each attribute's source, and an offer
that needs what the customer declared falls back to the neutral action, with the reason, on the
decisions topic while the CRM's word is all there is."""

from __future__ import annotations

import time
from typing import Any

import pytest

from streamproc.decisions.catalogue import default_catalogue_path, load_catalogue
from streamproc.decisions.experiments import CONTROL, assign
from tests.unit.helpers import event

from .conftest import Env
from .test_decisions import decisions_for, iso, wait_for_profile

pytestmark = pytest.mark.integration


async def test_an_offer_needing_declared_data_waits_for_the_customer_s_own_word(
        stack_env: Env) -> None:
    topics = stack_env.settings.topics
    experiment = load_catalogue(default_catalogue_path()).experiments[0]
    # Not in the control group of the hero experiment (it always gets the neutral action).
    cid = next(c for c in iter(lambda: stack_env.customer("trust"), None)
               if assign(c, experiment) != CONTROL)
    stack_env.start_worker()
    now = time.time()

    async def size_from(source: str, at: float) -> None:
        update = event("profile_update", customer=cid, ts=iso(at), source=source,
                       attributes={"city": "Leeds", "extra": {"shoe_size": 42}})
        await stack_env.produce_events(topics.profiles, [update])
        # The profiles and browsing topics are read independently: wait until it is applied.
        await wait_for_profile(stack_env, cid, lambda p: (p.get("provenance") or {}).get(
            "extra", [None])[0] == source[0])

    async def hero(at: float) -> dict[str, Any]:
        request = event("slot_request", customer=cid, ts=iso(at), slot="homepage_hero",
                        page={"url": "https://shop.example/", "page_type": "home"})
        await stack_env.produce_events(topics.browsing, [request])
        records = await stack_env.consume_until(topics.decisions, lambda rs: any(
            d["trigger"]["event_id"] == request["event_id"] for d in decisions_for(rs, cid)))
        [decision] = [d for d in decisions_for(records, cid)
                      if d["trigger"]["event_id"] == request["event_id"]]
        return decision

    await size_from("crm", now)
    weak = await hero(now + 2)
    assert weak["action"]["id"] == "bestsellers_hero" and weak["personalised"] is False
    assert any(r.startswith("picked_in_your_size: data too weak: attributes.extra.shoe_size "
                            "from crm (trust 2, ") and r.endswith("needs declared (3) or better")
               for r in weak["reasons"]), weak["reasons"]
    # One named attribute of seven (city), fresh, from the CRM: (1/7 + 1 + 2/3) / 3.
    assert weak["data_quality"] == pytest.approx((1 / 7 + 1 + 2 / 3) / 3, abs=0.001)

    await size_from("declared", now + 3)
    trusted = await hero(now + 5)
    assert trusted["action"]["id"] == "picked_in_your_size", trusted["reasons"]
    assert trusted["action"]["params"]["shoe_size"] == 42
    assert trusted["data_quality"] == pytest.approx((1 / 7 + 1 + 1) / 3, abs=0.001)
    assert any(r.startswith("data: attributes.extra.shoe_size from declared (trust 3, ")
               for r in trusted["reasons"]), trusted["reasons"]
