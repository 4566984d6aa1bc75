"""The contextual policy on the real stack: a worker (with the learner) and the catalogue's
``policy: contextual`` slot.

Customers on mobile like the shoe offer and dismiss the baby offer; customers on a desktop the
opposite. While the contextual policy is cold (fewer than ``STREAMPROC_CONTEXTUAL_MIN_OUTCOMES``
outcomes per action), the bucketed bandit picks and the decisions say so, logging the features;
their feedback teaches the one learner's contextual policy (the features travel in the
``expect`` lessons), which the learner serves in its signed snapshot. New customers then get
decisions picked by the contextual policy, by device, whose reasons name the features that
drove them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
import yaml

from streamproc.decisions.catalogue import default_catalogue_path
from streamproc.decisions.contextual import ContextualChooser
from streamproc.learning.modelstore import RedisModelStore
from tests.unit.helpers import event

from .conftest import Env
from .polling import serves_version
from .streams import forget_run
from .test_shared_bandit import BABY, SECRET, SHOES, decisions_for, iso, wait_learnt
from .test_web import free_port

pytestmark = pytest.mark.integration

LIKES = {"mobile": "running_shoes_10pct", "desktop": "baby_essentials_15pct"}


def contextual_catalogue(env: Env) -> str:
    data = yaml.safe_load(default_catalogue_path().read_text())
    for slot in data["slots"]:
        if slot["id"] == "homepage_hero":
            slot["policy"] = "contextual"
    data["experiments"] = []
    path = env.tmp / "catalogue.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def browse_and_ask(cids: list[tuple[str, str]], at: float) -> tuple[list[dict[str, Any]],
                                                                     set[str]]:
    """Shoe and baby views (both offers eligible), then a homepage_hero request, on the
    customer's device."""
    events, requests = [], set()
    for cid, device in cids:
        context = {"device": device}
        events += [event("product_view", customer=cid, ts=iso(at + i), product=SHOES,
                         context=context) for i in range(4)]
        events += [event("product_view", customer=cid, ts=iso(at + 4 + i), product=BABY,
                         context=context) for i in range(3)]
        request = event("slot_request", customer=cid, ts=iso(at + 8), slot="homepage_hero",
                        page={"page_type": "home"}, context=context)
        events.append(request)
        requests.add(request["event_id"])
    return events, requests


async def test_the_contextual_policy_learns_from_feedback_and_says_which_features_drove_it(
        stack_env: Env, test_redis: aioredis.Redis) -> None:
    env, topics = stack_env, stack_env.settings.topics
    env.env.update({"STREAMPROC_MODEL_SECRET": SECRET,
                    "STREAMPROC_MODEL_SNAPSHOT_SECONDS": "1",
                    "STREAMPROC_MODEL_RELOAD_SECONDS": "1",
                    "STREAMPROC_CONTEXTUAL_MIN_OUTCOMES": "3",
                    "STREAMPROC_MAX_FUTURE_SKEW_S": "900",
                    "STREAMPROC_CATALOGUE": contextual_catalogue(env),
                    "STREAMPROC_WEB_PORT": str(port := free_port())})
    devices = ["mobile", "desktop"]
    first = [(env.customer("cx"), devices[i % 2]) for i in range(24)]
    later = [(env.customer("cx2"), devices[i % 2]) for i in range(12)]
    try:
        env.start_worker()
        now = time.time()

        # 1. Cold: the bucketed bandit picks, the decisions say so and log the features.
        events, requests = browse_and_ask(first, now)
        await env.produce_events(topics.browsing, events)
        # A batch published again (a rebalance at the start) repeats its decisions: once each.
        decided = list({d["decision_id"]: d
                        for _, d in await decisions_for(env, requests)}.values())
        assert {d["policy"] for d in decided} == {"thompson-v1"}, decided
        assert all(any("contextual policy still learning" in r for r in d["reasons"])
                   for d in decided)
        device_of = dict(first)
        for d in decided:
            assert d["features"][f"device_{device_of[d['customer_id']]}"] == 1.0, d

        # 2. Feedback by device: a click on the offer the device likes, a dismissal otherwise.
        feedback = [event("feedback", customer=d["customer_id"], ts=iso(now + 30 + i),
                          decision_id=d["decision_id"], action_id=d["action"]["id"],
                          outcome="click" if LIKES[device_of[d["customer_id"]]]
                          == d["action"]["id"] else "dismiss")
                    for i, d in enumerate(decided)]
        await env.produce_events(topics.feedback, feedback)
        deadline = time.monotonic() + 60
        while True:  # the learner's snapshot that learnt every reward
            version, models = await wait_learnt(env, test_redis)
            assert models.contextual is not None
            served = ContextualChooser.from_state(models.contextual)
            if served.updates >= len(decided):
                break
            assert time.monotonic() < deadline, (served.updates, len(decided), models.learner)
            await asyncio.sleep(0.5)
        assert served.updates == len(decided) == models.learner["contextual_outcomes"]
        assert models.learner["contextual_pending"] == 0
        picked = {d["action"]["id"] for d in decided}
        assert picked == set(LIKES.values()), "both offers must have been tried"

        # 3. Warm: new customers get the contextual policy's pick for their device, with the
        # features that drove it in the reasons.
        # The worker's /metrics: it decides with the snapshot that learnt every reward.
        await serves_version(port, version, log=env.worker_log)
        events, requests = browse_and_ask(later, now + 600)
        await env.produce_events(topics.browsing, events)
        final = list({d["decision_id"]: d for _, d in await decisions_for(env, requests)}.values())
        later_device = dict(later)
        contextual = [d for d in final if d["policy"] == "linucb-v1"]
        assert len(contextual) == len(final), [d["reasons"] for d in final]
        best = [d for d in contextual if d["propensity"] > 0.5]
        assert best, "with 10% exploration most picks are the best action"
        for d in best:
            device = later_device[d["customer_id"]]
            assert d["action"]["id"] == LIKES[device], d
            why = next(r for r in d["reasons"] if "features that drove it" in r)
            assert f"device_{device}=1.00" in why, why
        # 4. streamproc evaluate, on the topics: the contextual policy learnt from the logged
        # features would have done better than the policies that ran.
        done = env.cli("evaluate", "--candidate", "contextual", "--reward", "click", "--json")
        assert done.returncode == 0, done.stderr
        [result] = orjson.loads(done.stdout)
        assert result["decisions"] == len(decided) + len(final), result
        assert result["gain_over_logged"]["value"] > 0, result
        print(f"\nevaluate: logged {result['logged_policy']['value']:.3f}, contextual DR "
              f"{result['dr']['value']:.3f}, verdict {result['verdict']}")
        print(f"contextual: {len(decided)} cold decisions taught v{version}; "
              f"{len(best)} of {len(final)} later picks were the best for the device")
    finally:
        await RedisModelStore(test_redis, env.settings.app_id).delete()
        await forget_run(test_redis, [c for c, _ in [*first, *later]], "sp:{cx*")
