"""Learning out of the box, on the real stack: a worker started as the README says, without
``STREAMPROC_MODEL_SECRET``, signs its snapshots with the local stack's secret file, so after a
restart it serves the learnt model at once instead of replaying the whole learning topic; and a
learner with no snapshot starts ``STREAMPROC_LEARNER_REPLAY_HOURS`` back, not at the start."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamproc.learning.learner import Learner, run_learner
from streamproc.learning.modelstore import RedisModelStore
from streamproc.learning.observations import pack_batch, score_record
from streamproc.learning.scorer import MIN_LABELS, snapshot_stats
from streamproc.settings import Settings
from streamproc.stack.secret import ensure_model_secret
from streamproc.state.store import RedisStore

from .conftest import Env
from .test_intent import (
    CHUNK,
    build_stream,
    erase,
    send,
    wait_observed,
    wait_ready,
    wait_restored,
)
from .test_web import free_port, get, sample

pytestmark = pytest.mark.integration

SCORED_WITHIN_S = 60.0


async def wait_learnt(env: Env, port: int, timeout: float = 300.0) -> float:
    """Until the workers committed every input message and the worker's served model (its
    /metrics) learnt from MIN_LABELS labels or more; returns that count."""
    topics = env.settings.topics
    inputs = [TopicPartition(getattr(topics, t), p) for t in ("browsing", "purchases")
              for p in range(env.settings.partitions)]
    admin = AIOKafkaAdminClient(bootstrap_servers=env.settings.kafka_bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=env.settings.kafka_bootstrap)
    await admin.start()
    await consumer.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            ends = await consumer.end_offsets(inputs)
            committed = await admin.list_consumer_group_offsets(env.settings.app_id)
            _, body = await asyncio.to_thread(get, port, "/metrics")
            learnt = sample(body.decode(), "streamproc_model_examples_learnt", model="intent")
            if (all(tp in committed and committed[tp].offset >= ends[tp] for tp in inputs)
                    and learnt is not None and learnt >= MIN_LABELS):
                return learnt
            assert time.monotonic() < deadline, (
                f"after {timeout:.0f} s: committed {committed} of {ends}; served model learnt "
                f"from {learnt} labels:\n{env.worker_log()}")
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()
        await admin.close()


def new_traffic(run: str, n: int) -> list[dict[str, Any]]:
    """A product view of ``n`` new customers, after the replayed stream in event time."""
    return [{"event_id": f"after-{run}-{i}", "type": "product_view",
             "customer_id": f"after{run}-{i}", "ts": f"2026-03-05T12:00:{i % 60:02d}.000Z",
             "product": {"product_id": "p-7", "category": "shoes", "price": 59.0},
             "context": {"session_id": f"s-after-{i}", "device": "mobile"}} for i in range(n)]


async def test_a_restarted_worker_without_a_configured_secret_scores_within_a_minute(
        stack_env: Env, test_redis: aioredis.Redis) -> None:
    began = time.monotonic()
    run = stack_env.customer("r").split("-")[1]
    # As `streamproc stack up` leaves it: a secret file in the stack's directory, and no
    # STREAMPROC_MODEL_SECRET (the fixture passes no STREAMPROC_* variable of the caller's).
    path, made = ensure_model_secret(Path(stack_env.env["STREAMPROC_STACK_DIR"]))
    assert made and "STREAMPROC_MODEL_SECRET" not in stack_env.env
    secret = path.read_text().strip().encode()
    stream = build_stream(run, 4 * CHUNK)  # as many chunks of it as it takes: see step 1
    after = new_traffic(run, 30)
    customers = {e["customer_id"] for _, e in stream} | {e["customer_id"] for e in after}
    models = RedisModelStore(test_redis, stack_env.settings.app_id)
    try:
        # 1. A worker learns from a long stream (the learning topic holds its observations)
        # and serves what it learnt; SIGTERM, as before a restart.
        stack_env.env["STREAMPROC_WEB_PORT"] = str(port := free_port())
        first = stack_env.start_worker()
        await wait_ready(stack_env, [0])
        # How many labels the stream yields before its event time stops (its last windows stay
        # open) varies from run to run: the customer ids, so their partitions, are the run's,
        # and the backlog's read order decides which windows close. Measured: 186 and 220
        # from two chunks, 301 from one. So a chunk at a time, until the learner has learnt
        # all it can from what was sent (its snapshot covers the learning topic's end) and
        # that makes a model trusted to score.
        for start in range(0, len(stream), CHUNK):
            await send(stack_env, stream[start:start + CHUNK])
            observed = await wait_observed(stack_env, test_redis, secret=secret.decode())
            if observed["n"] >= MIN_LABELS:
                break
        replayed_events = min(start + CHUNK, len(stream))
        assert observed["n"] >= MIN_LABELS, f"{observed['n']} labels from {replayed_events}"
        learnt = await wait_learnt(stack_env, port)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0, stack_env.worker_log()
        # Its last snapshot, signed with the stack's secret, holds at least that.
        blob = await models.get("serving")
        assert blob is not None, f"no model snapshot in Redis:\n{stack_env.worker_log()}"
        replayed = snapshot_stats(blob, secret)
        assert replayed["n"] >= learnt

        # 2. Restarted (every setting at its default, the web port aside), it serves the
        # learnt model at once: new customers' events are scored, stored on their profiles.
        stack_env.env["STREAMPROC_WEB_PORT"] = str(port := free_port())
        second = stack_env.start_worker()
        await wait_ready(stack_env, [1])
        sent = time.monotonic()
        await stack_env.produce_events(stack_env.settings.topics.browsing, after)
        store = RedisStore(test_redis)
        scores: dict[str, float] = {}
        while len(scores) < len(after):
            for event in after:
                found = await store.read_profile(event["customer_id"])
                score = found and found["profile"].get("scores", {}).get("intent")
                if score is not None:
                    scores[event["customer_id"]] = score
            if time.monotonic() - sent > SCORED_WITHIN_S:
                pytest.fail(f"{len(scores)} of {len(after)} new customers had an intent score "
                            f"{SCORED_WITHIN_S:.0f} s after the restart's traffic (the snapshot "
                            f"held {replayed['n']} labels):\n{stack_env.worker_log()}")
            await asyncio.sleep(0.5)
        took = time.monotonic() - sent
        # Its learner restored the snapshot too: when its own group (not the workers')
        # assigns it the learning topic, which may come after the scores.
        assert await wait_restored(stack_env, 1, second) == replayed["n"]
        assert all(0.0 <= s <= 1.0 for s in scores.values())

        # 3. Its metrics say how far its learner is behind the learning topic (caught up now),
        # and `streamproc models` reads the snapshot with the stack's secret.
        def caught_up(status: int, body: bytes) -> bool:
            return status == 200 and sample(body.decode(), "streamproc_learner_lag") == 0.0

        deadline = time.monotonic() + 30
        while not caught_up(*await asyncio.to_thread(get, port, "/metrics")):
            assert time.monotonic() < deadline, (
                f"{(await asyncio.to_thread(get, port, '/metrics'))[1].decode()[-3000:]}\n"
                f"{stack_env.worker_log()}")
            await asyncio.sleep(0.5)
        shown = stack_env.cli("models")
        assert shown.returncode == 0, shown.stderr
        figures = orjson.loads(shown.stdout)
        assert figures["intent"]["n"] >= replayed["n"] and figures["learner_lag"] >= 0
        print(f"\nrestart without a configured secret: {replayed_events} events replayed, "
              f"{replayed['n']} labels; {len(scores)} new customers scored {took:.1f} s after "
              f"the restart's traffic; models: learner_lag {figures['learner_lag']}; "
              f"{time.monotonic() - began:.1f}s")
    finally:
        await models.delete()
        await erase(test_redis, customers)


async def test_a_learner_without_a_snapshot_replays_only_the_window(stack_env: Env) -> None:
    """Records two days old, then recent ones: a learner with no snapshot reads the recent
    ones only (24 hours back by default), and its lag comes to 0."""
    topic = stack_env.settings.topics.learning
    now_ms = int(time.time() * 1000)
    trigger = {"topic": stack_env.settings.topics.browsing, "partition": 0, "offset": 0}

    def record(customer: str, i: int) -> bytes:
        return pack_batch([orjson.dumps(score_record(customer, f"{customer}-{i}-{j}",
                                                     now_ms + j, {}, 0.5, 0, trigger))
                           for j in range(10)])

    async with stack_env.producer() as sends:
        for i in range(300):  # 3,000 old observations
            await sends.producer.send_and_wait(topic, record("old", i),
                                               timestamp_ms=now_ms - 48 * 3_600_000)
        for i in range(20):  # 200 recent ones
            await sends.send(topic, record("new", i))
    settings: Settings = stack_env.settings
    assert settings.learner_replay_hours == 24
    learner = Learner(settings)  # no secret in this test's settings: no snapshot to restore
    stop = asyncio.Event()
    task = asyncio.create_task(run_learner(settings, learner, stop))
    try:
        deadline = time.monotonic() + 60
        while learner.lag != 0 or learner.state.observations < 200:
            assert not task.done(), task
            assert time.monotonic() < deadline, (learner.stats(), learner.lag)
            await asyncio.sleep(0.3)
        # The 300 old records were never read: the learner started at the first recent one.
        assert learner.state.observations == 200, learner.stats()
        assert learner.state.offset == 319 and learner.position == 320
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
