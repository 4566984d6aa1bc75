"""One bandit on the real stack: feedback handled by two workers teaches one learner's bandit,
and both workers serve it.

Two workers with ``STREAMPROC_MODEL_SECRET``; customers of the experiment's bandit arm on every
partition, so their decisions and feedback are handled by both workers. The decisions' lessons
(``expect``) and the feedback's (``reward``) travel on the learning topic to the one learner.
While the feedback streams in, the worker owning a feedback partition is frozen once a reward it
published has not had its offset committed yet, and killed: the worker that takes the partition
over reads that feedback again and publishes the reward again. The test then checks that:

* the served bandit learnt exactly one outcome per rewarded decision (the copy was dropped),
  with exactly the posteriors the feedback sent makes;
* both workers serving at the end decide with that bandit: their decisions name its version,
  and the posterior their reasons quote is the learner's.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamproc.decisions.catalogue import default_catalogue_path, load_catalogue
from streamproc.decisions.experiments import assign
from streamproc.events.partitioner import partition_for
from streamproc.learning.modelstore import RedisModelStore
from streamproc.learning.scorer import ServedModels, load_served
from streamproc.worker.heartbeat import read_beats
from tests.unit.helpers import event

from .conftest import Env
from .polling import serves_version
from .streams import committed_offsets, end_offsets, forget_run, snapshot
from .test_web import free_port

pytestmark = pytest.mark.integration

SECRET = "it-shared-bandit-secret"
RELOAD_S = 2
PER_PARTITION = 9
SHOES = {"product_id": "shoe-1", "category": "shoes", "price": 60.0}
BABY = {"product_id": "baby-1", "category": "baby", "price": 20.0}
# What the customers answer: the shoe offer gets a click (reward 1), the baby offer a dismissal
# (reward 0); three decisions get no feedback (they await theirs: the wait is a day).
OUTCOME = {"running_shoes_10pct": "click", "baby_essentials_15pct": "dismiss"}
UNANSWERED = 3


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def partition_of(cid: str, partitions: int) -> int:
    """The partition the producer's default partitioner (murmur2) gives a customer's events."""
    return partition_for(cid.encode(), partitions)


def bandit_customers(env: Env, tag: str, per_partition: int) -> list[str]:
    """Customers of the experiment's bandit arm, ``per_partition`` on every partition."""
    experiment = load_catalogue(default_catalogue_path()).experiments[0]
    by_partition: dict[int, list[str]] = {p: [] for p in range(env.settings.partitions)}
    while any(len(cs) < per_partition for cs in by_partition.values()):
        cid = env.customer(tag)
        chosen = by_partition[partition_of(cid, env.settings.partitions)]
        if assign(cid, experiment) == "bandit" and len(chosen) < per_partition:
            chosen.append(cid)
    return [cid for cs in by_partition.values() for cid in cs]


def browse_and_ask(cids: list[str], at: float) -> tuple[list[dict[str, Any]], set[str]]:
    """Shoe and baby product views (both offers become eligible), then a homepage_hero request,
    per customer; and the requests' event ids."""
    events, requests = [], set()
    for cid in cids:
        events += [event("product_view", customer=cid, ts=iso(at + i), product=SHOES)
                   for i in range(4)]
        events += [event("product_view", customer=cid, ts=iso(at + 4 + i), product=BABY)
                   for i in range(3)]
        request = event("slot_request", customer=cid, ts=iso(at + 8), slot="homepage_hero",
                        page={"page_type": "home"})
        events.append(request)
        requests.add(request["event_id"])
    return events, requests


async def decisions_for(env: Env, requests: set[str]) -> list[tuple[int, dict[str, Any]]]:
    """The decisions answering ``requests``, with their partition, once all are there."""
    def answered(records: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
        return [(r["partition"], r["value"]) for r in records
                if r["value"] and r["value"]["trigger"]["event_id"] in requests]

    records = await env.consume_until(env.settings.topics.decisions, lambda rs: {
        d["trigger"]["event_id"] for _, d in answered(rs)} == requests, timeout=120)
    return answered(records)


async def feedback_owners(env: Env, redis: aioredis.Redis, workers: int,
                          timeout: float = 90.0) -> dict[int, int]:
    """feedback partition -> the pid of the worker that owns it, once ``workers`` workers
    share them (from their heartbeats)."""
    deadline = time.monotonic() + timeout
    topic = env.settings.topics.feedback
    while True:
        now = time.time()
        beats = [b for b in await read_beats(redis, env.settings.app_id) if b.alive(now)]
        owners = {p: b.pid for b in beats for p in b.partitions.get(topic, [])}
        if (len(owners) == env.settings.partitions and len(beats) == workers
                and len(set(owners.values())) == workers):
            return owners
        for proc in env.workers:
            assert proc.poll() in (None, -signal.SIGKILL), env.worker_log()
        if time.monotonic() > deadline:
            pytest.fail(f"the feedback partitions are not shared by {workers} workers: "
                        f"{[(b.pid, b.partitions) for b in beats]}\n{env.worker_log()}")
        await asyncio.sleep(0.5)


async def learning_records(env: Env) -> list[dict[str, Any]]:
    """Every observation on the learning topic (as JSON), from its beginning to its end now."""
    tp = TopicPartition(env.settings.topics.learning, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=env.settings.kafka_bootstrap,
                                enable_auto_commit=False)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        async with asyncio.timeout(30):
            while await consumer.position(tp) < end:
                for messages in (await consumer.getmany(tp, timeout_ms=500)).values():
                    found += [o for m in messages if m.offset < end
                              for o in orjson.loads(m.value)]
    finally:
        await consumer.stop()
    return found


def lessons(found: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in found if o["kind"] == kind]


async def served(env: Env, redis: aioredis.Redis) -> tuple[int, ServedModels] | None:
    blob = await RedisModelStore(redis, env.settings.app_id).get("serving")
    return None if blob is None else load_served(blob, SECRET.encode())


async def stream_feedback(env: Env, events: list[dict[str, Any]], every_s: float) -> None:
    """The feedback, one event every ``every_s`` (live traffic, so that offset commits happen
    in the middle of it), in order."""
    producer = AIOKafkaProducer(bootstrap_servers=env.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(env.settings.topics.feedback, orjson.dumps(e),
                                         key=e["customer_id"].encode())
            await asyncio.sleep(every_s)  # pacing the traffic, not waiting on a result
    finally:
        await producer.stop()


async def kill_after_a_republishable_reward(
        env: Env, redis: aioredis.Redis, customers: list[str], owners: dict[int, int],
        timeout: float = 60.0) -> tuple[subprocess.Popen[bytes], int]:
    """Freeze the owner of a feedback partition once its group has not committed the offset of
    a feedback event whose reward it published; kill it then (SIGKILL), so that the worker
    taking the partition over reads the event again. Returns the worker killed and how many
    published rewards will be read again."""
    topic = env.settings.topics.feedback
    deadline = time.monotonic() + timeout
    by_pid = {proc.pid: proc for proc in env.workers}
    while True:
        assert time.monotonic() < deadline, (
            f"no applied-but-uncommitted feedback seen within {timeout}s:\n{env.worker_log()}")
        await asyncio.sleep(0.2)
        committed = await committed_offsets(env)
        applied = (await snapshot(redis, customers)).last_offsets
        behind = [p for p in owners
                  if applied.get(f"{topic}:{p}", -1) >= committed.get(f"{topic}:{p}", 0)]
        if not behind:
            continue
        proc = by_pid[owners[behind[0]]]
        proc.send_signal(signal.SIGSTOP)  # nothing it owns moves now: no commit, no publish
        try:
            await asyncio.sleep(0.3)  # what it sent before the stop lands (no condition shows it)
            committed = await committed_offsets(env)
            mine = {p for p, pid in owners.items() if pid == proc.pid}
            again = [o for o in lessons(await learning_records(env), "reward")
                     if o["trigger"]["topic"] == topic and o["trigger"]["partition"] in mine
                     and o["trigger"]["offset"] >= committed.get(
                         f"{topic}:{o['trigger']['partition']}", 0)]
            if again:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                return proc, len(again)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)


async def wait_learnt(env: Env, redis: aioredis.Redis, timeout: float = 120.0
                      ) -> tuple[int, ServedModels]:
    """Until the workers committed every input message and the learner's latest snapshot
    covers every observation they published."""
    learning = TopicPartition(env.settings.topics.learning, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=env.settings.kafka_bootstrap,
                                enable_auto_commit=False)
    await consumer.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            ends = await end_offsets(env)
            committed = await committed_offsets(env)
            last = (await consumer.end_offsets([learning]))[learning] - 1
            found = await served(env, redis)
            if (found is not None and found[1].learner.get("offset", -1) >= last
                    and all(committed.get(s, 0) > e for s, e in ends.items())):
                return found
            for proc in env.workers:
                assert proc.poll() in (None, -signal.SIGKILL), env.worker_log()
            assert time.monotonic() < deadline, (
                f"after {timeout:.0f} s the workers committed {committed} of {ends}; the "
                f"learner is at {found and found[1].learner}:\n{env.worker_log()}")
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


REASON = re.compile(r"bandit \(thompson-v1\) in context (\S+): (\S+) has a posterior success "
                    r"rate of [\d.]+ over (\d+) outcomes")


async def test_feedback_handled_by_two_workers_teaches_one_bandit_that_both_serve(
        stack_env: Env, test_redis: aioredis.Redis) -> None:
    began = time.monotonic()
    env, topics = stack_env, stack_env.settings.topics
    env.env.update({"STREAMPROC_MODEL_SECRET": SECRET,
                    "STREAMPROC_MODEL_SNAPSHOT_SECONDS": "1",
                    "STREAMPROC_MODEL_RELOAD_SECONDS": str(RELOAD_S),
                    # A SIGKILLed member would hold its partitions for the 30 s default.
                    "STREAMPROC_SESSION_TIMEOUT_S": "10",
                    # Step 4 dates its events 10 minutes after the clock on purpose (past the
                    # feedback's event times): more than the default bound on future times.
                    "STREAMPROC_MAX_FUTURE_SKEW_S": "900"})
    customers = bandit_customers(env, "sb", PER_PARTITION)
    later = bandit_customers(env, "sb2", 2)
    ports: dict[int, int] = {}  # worker pid -> its web port, where /metrics says what it serves

    def start_worker() -> None:
        proc = env.start_worker(settings={"STREAMPROC_WEB_PORT": str(port := free_port())})
        ports[proc.pid] = port

    try:
        start_worker()
        start_worker()
        owners = await feedback_owners(env, test_redis, workers=2)

        # 1. Decisions for customers on every partition: the bandit picks (one lesson each).
        now = time.time()
        events, requests = browse_and_ask(customers, now)
        await env.produce_events(topics.browsing, events)
        decided = [d for _, d in await decisions_for(env, requests)]
        assert {d["policy"] for d in decided} == {"thompson-v1"}, decided
        assert {len(d["candidates"]) for d in decided} == {2}

        # 2. Feedback on them, streamed while two workers share the feedback partitions; the
        # owner of one is killed once it applied (and published) feedback it has not committed.
        answered = decided[UNANSWERED:]
        feedback = [event("feedback", customer=d["customer_id"], ts=iso(now + 30 + i),
                          decision_id=d["decision_id"], action_id=d["action"]["id"],
                          outcome=OUTCOME[d["action"]["id"]]) for i, d in enumerate(answered)]
        sender = asyncio.create_task(stream_feedback(env, feedback, every_s=0.25))
        killed, republished = await kill_after_a_republishable_reward(env, test_redis,
                                                                      customers, owners)
        start_worker()  # two workers again once the group has settled
        await sender

        # 3. The one bandit learnt every reward once: the copies the redelivery published
        # were dropped. Its posteriors are exactly what the feedback sent makes.
        version, models = await wait_learnt(env, test_redis)
        bandit, figures = models.bandit, models.learner
        assert bandit is not None
        found = await learning_records(env)
        rewards = lessons(found, "reward")
        copies = len(rewards) - len({o["decision_id"] for o in rewards})
        assert copies >= republished >= 1  # the redelivery did publish rewards again
        assert bandit.updates == figures["bandit_rewards"] == len(answered), figures
        assert figures["bandit_pending"] == UNANSWERED and figures["bandit_early"] == 0
        expects = lessons(found, "expect")
        assert figures["bandit_duplicates"] == copies + len(expects) - len(
            {o["decision_id"] for o in expects})
        expected: dict[str, dict[str, list[float]]] = {}
        for d in answered:
            ab = expected.setdefault(d["context"], {}).setdefault(d["action"]["id"], [1.0, 1.0])
            ab[0 if OUTCOME[d["action"]["id"]] == "click" else 1] += 1.0
        assert bandit.posteriors == expected

        # 4. Both workers serving now decide with that bandit: new customers on every partition
        # get decisions naming its version (or a later one: their own expects are lessons too),
        # and the posterior the reasons quote is the learner's.
        serving = [proc for proc in env.workers if proc.poll() is None]
        assert len(serving) == 2, env.worker_log()
        for proc in serving:  # each reloads the snapshot within RELOAD_S
            await serves_version(ports[proc.pid], version, log=env.worker_log)
        owners = await feedback_owners(env, test_redis, workers=2)
        events, requests = browse_and_ask(later, now + 600)
        await env.produce_events(topics.browsing, events)
        final = await decisions_for(env, requests)
        assert {p for p, _ in final} == set(range(env.settings.partitions))
        quoted = 0
        for _, d in final:
            assert int(d["model_versions"]["bandit"].removeprefix("v")) >= version, d
            for reason in d["reasons"]:
                if (m := REASON.search(reason)) is not None:
                    context, action, outcomes = m[1], m[2], int(m[3])
                    alpha, beta = bandit.posterior(context, action)
                    assert outcomes == round(alpha + beta - 2), (reason, bandit.posteriors)
                    quoted += outcomes
        assert quoted > 0  # the new customers' context is one the bandit learnt in
        print(f"\nshared bandit: {len(decided)} decisions by 2 workers, {len(answered)} "
              f"rewarded; worker {killed.pid} killed with {republished} rewards to be read "
              f"again; {copies} copies dropped; served v{version}: {bandit.updates} outcomes, "
              f"{figures}; {time.monotonic() - began:.1f}s")
    finally:
        await RedisModelStore(test_redis, env.settings.app_id).delete()
        await forget_run(test_redis, [*customers, *later], "sp:{sb*")
