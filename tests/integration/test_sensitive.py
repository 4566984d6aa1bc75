"""No creepy personalisation on the real stack: a worker refuses a catalogue that personalises
on sensitive data without allowing it, and the limit on decisions that reveal tracking holds
across batches, the count kept in the customer's profile in Redis."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamproc.decisions.catalogue import default_catalogue_path
from tests.unit.helpers import event

from .conftest import Env
from .test_decisions import decisions_for, iso, wait_for_profile

pytestmark = pytest.mark.integration

SOCKS = {"product_id": "sock-1", "category": "socks", "price": 9.0}


def catalogue_file(tmp: Path, edit: Any) -> str:
    data = yaml.safe_load(default_catalogue_path().read_text())
    data["experiments"] = []  # no control group: every customer gets a personalised choice
    edit(data)
    path = tmp / "catalogue.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_a_worker_refuses_a_catalogue_using_sensitive_data_without_a_reason(
        stack_env: Env, tmp_path: Path) -> None:
    def religious_offer(data: dict[str, Any]) -> None:
        data["actions"][4]["when"] = {"field": "attributes.extra.religion", "op": "==",
                                      "value": "x"}

    env = {**stack_env.env, "STREAMPROC_CATALOGUE": catalogue_file(tmp_path, religious_offer)}
    done = subprocess.run([sys.executable, "-m", "streamproc.cli", "worker"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode != 0
    assert ("actions[4] (id: cart_reminder).when.field: attributes.extra.religion is sensitive "
            "data (religion, GDPR art. 9): remove it, or allow it with a reason under "
            "allow_sensitive") in done.stderr + done.stdout


async def test_a_reveal_over_the_limit_is_not_made_and_the_decision_says_why(
        stack_env: Env, tmp_path: Path) -> None:
    def you_looked_at(data: dict[str, Any]) -> None:
        data["actions"].append({
            "id": "you_looked_at", "kind": "content", "title": "Still thinking about it?",
            "slots": ["homepage_hero"], "freshness_hours": 0.01,
            "when": {"field": "session.product_views", "op": ">=", "value": 1},
            "params_from": {"product": "session.products.0"}})

    topics = stack_env.settings.topics
    cid = stack_env.customer("reveal")
    stack_env.start_worker(settings={
        "STREAMPROC_CATALOGUE": catalogue_file(tmp_path, you_looked_at)})
    now = time.time()
    first = event("slot_request", customer=cid, ts=iso(now + 1), slot="homepage_hero")
    await stack_env.produce_events(topics.browsing, [
        event("product_view", customer=cid, ts=iso(now), product=SOCKS), first])
    await stack_env.consume_until(topics.decisions, lambda rs: any(
        d["trigger"]["event_id"] == first["event_id"] for d in decisions_for(rs, cid)))
    # The reveal is in the stored profile before the next batch reads it.
    await wait_for_profile(stack_env, cid, lambda p: len(
        (p.get("decisions") or {}).get("reveals") or ()) == 1)
    second = event("slot_request", customer=cid, ts=iso(now + 120), slot="homepage_hero")
    await stack_env.produce_events(topics.browsing, [
        event("product_view", customer=cid, ts=iso(now + 119), product=SOCKS), second])
    records = await stack_env.consume_until(topics.decisions, lambda rs: any(
        d["trigger"]["event_id"] == second["event_id"] for d in decisions_for(rs, cid)))
    made = {d["trigger"]["event_id"]: d for d in decisions_for(records, cid)}
    assert made[first["event_id"]]["action"]["id"] == "you_looked_at"
    assert made[first["event_id"]]["action"]["params"] == {"product": "sock-1"}
    blocked = made[second["event_id"]]
    assert blocked["action"]["id"] == "bestsellers_hero" and blocked["personalised"] is False
    assert ("you_looked_at: reveals tracking: 1 such decision in the last 7 days, at most 1 "
            "(reveal_limit)") in blocked["reasons"]
