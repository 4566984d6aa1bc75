"""A real worker's HTTP endpoints: /livez, /readyz (200 when ready, 503 with reasons), /metrics."""

from __future__ import annotations

import asyncio
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import orjson
import pytest

from .conftest import Env

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""  # not listening yet


async def poll(env: Env, port: int, path: str, ok: Callable[[int, bytes], bool],
               timeout: float = 60.0) -> tuple[int, bytes]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await asyncio.to_thread(get, port, path)
        if ok(status, body):
            return status, body
        assert time.monotonic() < deadline, f"{path}: {status} {body[:2000]!r}\n{env.worker_log()}"
        await asyncio.sleep(0.5)


def sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and all(f'{k}="{v}"' in (match[1] or "") for k, v in labels.items()):
            return float(match[2])
    return None


async def test_health_and_metrics_of_a_running_worker(stack_env: Env) -> None:
    port = free_port()
    stack_env.env["STREAMPROC_WEB_PORT"] = str(port)
    stack_env.start_worker()
    _, body = await poll(stack_env, port, "/readyz", lambda s, b: s == 200)
    ready = orjson.loads(body)
    assert ready["ready"] and ready["partitions"] == 4 * 3 and ready["reasons"] == []
    _, body = await poll(stack_env, port, "/livez", lambda s, b: s == 200)
    assert orjson.loads(body)["alive"] is True

    topics = stack_env.settings.topics
    cid = stack_env.customer()
    cart_add = {"event_id": f"w-{cid}", "type": "cart_add", "customer_id": cid,
                "ts": "2026-03-01T10:00:00Z", "quantity": 1,
                "product": {"product_id": "p1", "category": "shoes", "price": 80.0}}
    await stack_env.produce(topics.browsing, [(cid.encode(), orjson.dumps(cart_add)),
                                              (cid.encode(), b"{oops")])

    def counted(s: int, b: bytes) -> bool:
        return s == 200 and sample(b.decode(), "streamproc_decisions_total") is not None \
            and sample(b.decode(), "streamproc_deadletters_total") is not None

    _, body = await poll(stack_env, port, "/metrics", counted)
    text = body.decode()
    assert sample(text, "streamproc_events_total", topic=topics.browsing) == 2
    assert sample(text, "streamproc_deadletters_total", reason="invalid_json") == 1
    # A cart of 80 (over the free-delivery threshold): the cart reminder is the one eligible action.
    assert sample(text, "streamproc_decisions_total", action="cart_reminder", arm="none") == 1
    assert (sample(text, "streamproc_event_to_decision_seconds_count") or 0) >= 1
    assert (sample(text, "streamproc_batch_size_sum") or 0) == 2
    assert (sample(text, "streamproc_redis_round_trips_total", operation="save") or 0) >= 1
    lags = [line for line in text.splitlines() if line.startswith("streamproc_consumer_lag{")]
    assert len(lags) == 4 * 3 and all(line.endswith(" 0.0") for line in lags), lags
    assert sample(text, "streamproc_model_examples_learnt", model="intent") is not None


async def test_the_worker_serves_its_own_endpoints_only(stack_env: Env) -> None:
    """Faust's own pages (its index, router, tables, graph, stats) show the app's inner workings
    to whoever reaches the port: the worker does not mount them."""
    port = free_port()
    stack_env.env["STREAMPROC_WEB_PORT"] = str(port)
    stack_env.start_worker()
    await poll(stack_env, port, "/readyz", lambda s, b: s == 200)
    for path in ("/metrics", "/livez", "/readyz"):
        assert (await asyncio.to_thread(get, port, path))[0] == 200, path
    for path in ("/", "/router/", "/table/", "/graph/", "/stats/", "/performance/",
                 "/router/" + stack_env.settings.topics.browsing + "/"):
        status, body = await asyncio.to_thread(get, port, path)
        assert status == 404, (path, status, body[:200])


async def test_a_learner_process_serves_its_metrics_and_the_workers_its_model_version(
        stack_env: Env) -> None:
    """`streamproc learner` with STREAMPROC_LEARNER_WEB_PORT: /livez, and /metrics saying it
    learns and how far it is; a worker (STREAMPROC_LEARNER=off) then serves its snapshot and
    says which version (the monitoring dashboard and alerts read these)."""
    learning = {"STREAMPROC_MODEL_SECRET": "web-test-secret",
                "STREAMPROC_MODEL_SNAPSHOT_SECONDS": "1", "STREAMPROC_MODEL_RELOAD_SECONDS": "1"}
    learner_port, worker_port = free_port(), free_port()
    stack_env.start_worker("learner", {**learning, "STREAMPROC_LEARNER_WEB_PORT":
                                       str(learner_port)})
    _, body = await poll(stack_env, learner_port, "/livez", lambda s, b: s == 200)
    assert orjson.loads(body)["role"] == "learner"
    stack_env.start_worker(settings={**learning, "STREAMPROC_LEARNER": "off",
                                     "STREAMPROC_WEB_PORT": str(worker_port)})
    await poll(stack_env, worker_port, "/readyz", lambda s, b: s == 200)
    cid = stack_env.customer()
    views = [{"event_id": f"lv-{cid}-{i}", "type": "product_view", "customer_id": cid,
              "ts": f"2026-03-01T10:00:{i:02d}Z",
              "product": {"product_id": "p1", "category": "shoes", "price": 80.0}}
             for i in range(5)]
    await stack_env.produce_events(stack_env.settings.topics.browsing, views)

    def learnt(s: int, b: bytes) -> bool:
        text = b.decode()
        return s == 200 and sample(text, "streamproc_learner_active") == 1.0 \
            and sample(text, "streamproc_learner_lag") == 0.0 \
            and (sample(text, "streamproc_learner_model_version") or 0) >= 1

    _, body = await poll(stack_env, learner_port, "/metrics", learnt)
    text = body.decode()
    assert (sample(text, "streamproc_learner_position") or 0) >= 1, text

    def served(s: int, b: bytes) -> bool:
        return s == 200 and (sample(b.decode(), "streamproc_model_version") or 0) >= 1

    _, body = await poll(stack_env, worker_port, "/metrics", served)
    text = body.decode()
    version = sample(text, "streamproc_model_version")
    _, latest = await asyncio.to_thread(get, learner_port, "/metrics")
    published = sample(latest.decode(), "streamproc_learner_model_version")
    assert version is not None and published is not None and version <= published
    created = sample(text, "streamproc_model_snapshot_timestamp_seconds")
    assert created is not None and abs(created - time.time()) < 300, text
    # The worker that does not learn has no learner lag of its own.
    assert sample(text, "streamproc_learner_lag") is None
