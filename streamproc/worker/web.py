"""The worker's HTTP endpoints, on Faust's web server (``STREAMPROC_WEB_HOST:WEB_PORT``).

* ``/metrics``: Prometheus text format (:mod:`streamproc.worker.metrics`); the consumer lag of every
  assigned partition is measured at each scrape.
* ``/livez``: 200 while the event loop answers (a wedged loop answers nothing: the probe times
  out). Restart the worker when it fails.
* ``/readyz``: 200 when the worker owns partitions, is not in the middle of a rebalance, Redis
  answers a PING and a Kafka broker answers a metadata request; 503 otherwise, with the reasons
  as JSON. Do not send work to (or alert on) a worker that is not ready; a worker beyond the
  partition count is never ready.

``streamproc learner`` serves ``/metrics`` (:class:`~streamproc.worker.metrics.LearnerMetrics`)
and ``/livez`` on ``STREAMPROC_WEB_HOST:LEARNER_WEB_PORT`` (:func:`start_learner_web`): it has
no Faust app, and no ``/readyz`` (it takes no traffic; the learner group decides who learns).

Nothing else: Faust's own pages (``/``, ``/router/``, ``/table/``, ``/graph/``, ...) show the
app's configuration, its tables and its topology to anyone who reaches the port, and are not
mounted (they answer 404).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust
import redis.asyncio as aioredis
from aiohttp import web as aioweb
from aiokafka.client import AIOKafkaClient
from faust.web.base import BlueprintManager

from streamproc.kafka_options import kafka_options
from streamproc.settings import Settings
from streamproc.worker.metrics import CONTENT_TYPE, LearnerMetrics, WorkerMetrics

PROBE_TIMEOUT_S = 2.0


def assigned_partitions(app: faust.App) -> set[tuple[str, int]]:
    """The (topic, partition) pairs the worker owns now; empty before it joined the group."""
    try:
        return {(tp.topic, tp.partition) for tp in app.consumer.assignment()}
    except Exception:  # ConsumerNotStarted, or the consumer is being torn down
        return set()


async def partition_lag(app: faust.App) -> dict[tuple[str, int], int]:
    """End offset minus the consumer's position, for every assigned partition that has both."""
    consumer = app.consumer
    lags: dict[tuple[str, int], int] = {}
    for tp in list(consumer.assignment()):
        end = consumer.highwater(tp)
        if end is None:
            continue
        try:
            position = await asyncio.wait_for(consumer.position(tp), PROBE_TIMEOUT_S)
        except Exception:  # revoked meanwhile, or no position yet
            continue
        if position is not None:
            lags[(tp.topic, tp.partition)] = max(0, end - position)
    return lags


async def redis_problem(client: aioredis.Redis) -> str | None:
    """None when Redis answers a PING in time, else what went wrong."""
    try:
        await asyncio.wait_for(client.ping(), PROBE_TIMEOUT_S)
    except TimeoutError:
        return f"no answer to PING within {PROBE_TIMEOUT_S:.0f}s"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


class KafkaProbe:
    """Whether a Kafka broker answers, for ``/readyz``: a metadata request for one ``topic``
    (not the whole cluster's) on a client of its own (the consumer's runs in Faust's thread),
    made when the probe is asked."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self._client: AIOKafkaClient | None = None

    async def problem(self) -> str | None:
        """None when a broker answered within PROBE_TIMEOUT_S, else what went wrong."""
        try:
            if self._client is None:
                client = AIOKafkaClient(**kafka_options(self.settings),
                                        request_timeout_ms=int(PROBE_TIMEOUT_S * 1000))
                try:
                    await asyncio.wait_for(client.bootstrap(), PROBE_TIMEOUT_S)
                except BaseException:
                    await client.close()
                    raise
                client.add_topic(self.topic)  # the only topic its metadata requests ask for
                self._client = client
            if not await asyncio.wait_for(self._client.force_metadata_update(), PROBE_TIMEOUT_S):
                return "no broker answered a metadata request"
        except TimeoutError:
            return f"no answer within {PROBE_TIMEOUT_S:.0f}s"
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def readiness(partitions: int, rebalancing: bool, redis_error: str | None,
              kafka_error: str | None = None) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body of ``/readyz``.

    >>> readiness(4, False, None)
    (200, {'ready': True, 'partitions': 4, 'reasons': []})
    >>> readiness(0, True, "ConnectionError: refused")[0]
    503
    >>> readiness(4, False, None, "KafkaConnectionError: no broker")[1]["reasons"]
    ['Kafka does not answer: KafkaConnectionError: no broker']
    """
    reasons = []
    if rebalancing:
        reasons.append("rebalancing: the group is reassigning partitions")
    elif not partitions:
        reasons.append("no partitions assigned: not in the group yet, or more workers than "
                       "partitions (STREAMPROC_PARTITIONS)")
    if redis_error:
        reasons.append(f"Redis does not answer: {redis_error}")
    if kafka_error:
        reasons.append(f"Kafka does not answer: {kafka_error}")
    return (503 if reasons else 200), {"ready": not reasons, "partitions": partitions,
                                       "reasons": reasons}


def add_routes(app: faust.App, metrics: WorkerMetrics, redis_client: aioredis.Redis,
               worker_id: str, kafka: KafkaProbe) -> None:
    started = time.monotonic()
    # Before the server starts: Faust mounts its blueprints (its own pages) from this manager.
    app.web.blueprints = BlueprintManager()

    @app.page("/metrics", name="streamproc_metrics")
    async def prometheus(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        try:
            metrics.set_lag(await partition_lag(app))
        except Exception:  # the consumer is not started yet: the other figures still count
            metrics.set_lag({})
        return view.bytes(metrics.render(), content_type=CONTENT_TYPE)

    @app.page("/livez", name="streamproc_livez")
    async def livez(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return view.json({"alive": True, "worker_id": worker_id,
                          "uptime_s": round(time.monotonic() - started, 1)})

    @app.page("/readyz", name="streamproc_readyz")
    async def readyz(view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        redis_error, kafka_error = await asyncio.gather(
            redis_problem(redis_client), kafka.problem())
        status, body = readiness(len(assigned_partitions(app)), bool(app.rebalancing),
                                 redis_error, kafka_error)
        return view.json({**body, "worker_id": worker_id}, status=status)


async def start_learner_web(settings: Settings, metrics: LearnerMetrics) -> aioweb.AppRunner:
    """Serve the learner's ``/metrics`` and ``/livez`` on
    ``STREAMPROC_WEB_HOST:LEARNER_WEB_PORT`` until the returned runner is cleaned up."""
    started = time.monotonic()

    async def prometheus(request: aioweb.Request) -> aioweb.Response:
        return aioweb.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def livez(request: aioweb.Request) -> aioweb.Response:
        return aioweb.json_response({"alive": True, "role": "learner",
                                     "uptime_s": round(time.monotonic() - started, 1)})

    app = aioweb.Application()
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/livez", livez)
    runner = aioweb.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await aioweb.TCPSite(runner, settings.web_host, settings.learner_web_port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
