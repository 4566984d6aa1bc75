"""Build the Faust app from Settings: topics, the processing agent and its emitter.

Nothing happens at import time; ``create_app`` wires an app for the given settings (tests build
several) and returns it with its parts, as a :class:`WorkerApp`. Values travel as raw bytes:
decoding is ours, so a bad message reaches the processor (and the dead-letter topic) instead of
failing inside Faust's deserializer.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust

from streamproc.decisions.bandit import ThompsonChooser
from streamproc.decisions.contextual import ContextualChooser
from streamproc.events.codec import RawMessage
from streamproc.events.partitioner import PartitionCheck
from streamproc.kafka_options import faust_credentials
from streamproc.learning.learner import Learner, run_learner
from streamproc.learning.modelstore import RedisModelStore
from streamproc.learning.scorer import IntentScorer, ServedModels
from streamproc.processor import Processor, default_engine
from streamproc.redis_options import redis_client
from streamproc.segments.segmenter import Segmenter
from streamproc.settings import Settings
from streamproc.state.store import RedisStore, Store
from streamproc.worker import heartbeat, web
from streamproc.worker.agents import BatchStats, Emitter, consume
from streamproc.worker.batching import take_batches
from streamproc.worker.delivery import FetchBuffer, attach, feed_from_stream
from streamproc.worker.emitter import KafkaEmitter
from streamproc.worker.lifecycle import Lifecycle, OutageClock
from streamproc.worker.metrics import LearnerMetrics, MeteredStore, WorkerMetrics
from streamproc.worker.preflight import redacted

log = logging.getLogger(__name__)


def group_timeouts(session_timeout_s: int) -> dict[str, float]:
    """Faust's consumer-group timeouts for a session timeout: heartbeats at least three per
    session, and requests allowed to last longer than a session (Kafka's rule).

    >>> sorted(group_timeouts(30).items())  # doctest: +NORMALIZE_WHITESPACE
    [('broker_heartbeat_interval', 3.0), ('broker_request_timeout', 90.0),
     ('broker_session_timeout', 30.0)]
    """
    session = float(session_timeout_s)
    return {
        "broker_session_timeout": session,
        "broker_heartbeat_interval": min(3.0, session / 3),
        "broker_request_timeout": max(90.0, session + 30),
    }


def _raw(m: Any) -> RawMessage:
    ts = int(m.timestamp * 1000) if m.timestamp else None
    return RawMessage(m.topic, m.partition, m.offset, m.key, m.value, ts)


def app_options(settings: Settings) -> dict[str, Any]:
    """The Faust options of a worker (the benchmark's bare Faust app uses the same)."""
    return {
        "broker": settings.kafka_url,
        "store": "memory://",
        "autodiscover": False,
        "web_enabled": settings.web_port > 0,
        "web_port": settings.web_port or 6066,
        "web_bind": settings.web_host,
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        "topic_partitions": settings.partitions,
        "consumer_auto_offset_reset": "earliest",
        # Faust's default (None): a fetch's whole answer at once (streamproc.worker.delivery).
        "broker_max_poll_records": settings.fetch_max_records or None,
        "producer_acks": -1,
        "datadir": str(settings.stack_dir / "worker-data"),
        "key_serializer": "raw",
        "value_serializer": "raw",
        **group_timeouts(settings.session_timeout_s),
        **faust_credentials(settings),  # TLS and SASL, as every other client (kafka_options)
    }


@dataclass
class WorkerApp:
    """A worker as :func:`create_app` wires it: the Faust app and the parts of it that the
    command, the operations endpoints and the tests read."""

    app: faust.App
    stats: BatchStats  # the batches so far (the heartbeat publishes them)
    metrics: WorkerMetrics  # what /metrics serves
    worker_id: str  # in the heartbeat, the status and the JSON logs
    scorer: IntentScorer | None = None  # the agent's, serving the models, once it started


def create_app(
    settings: Settings,
    store_factory: Callable[[], Store] | None = None,
    emitter: Emitter | None = None,
    lifecycle: Lifecycle | None = None,
    **faust_options: Any,
) -> WorkerApp:
    """The worker's Faust app. ``lifecycle`` (give the same to :func:`run_worker`) is how the
    worker stops on its own and says why (streamproc.worker.lifecycle)."""
    options = app_options(settings)
    options.update(faust_options)
    Path(options["datadir"]).mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.app_id, **options)
    buffer = attach(app, settings.topics.inputs, settings.batch_size,
                    settings.fetch_max_wait_ms)
    lifecycle = lifecycle or Lifecycle()
    lifecycle.stopping = lambda: bool(app.should_stop)
    topics = settings.topics
    inputs = app.topic(*topics.inputs, key_type=bytes, value_type=bytes)
    # Outputs go through a plain aiokafka producer (streamproc.worker.emitter says why not Faust's).
    out = emitter or KafkaEmitter(settings)
    make_store = store_factory or (lambda: RedisStore.from_settings(settings))
    stats = BatchStats()
    learners: list[Learner] = []  # this worker's learner, once its task made it
    metrics = WorkerMetrics(scorer=lambda: worker.scorer,
                            learner_lag=lambda: learners[0].lag if learners else None)
    worker_id = heartbeat.new_worker_id()
    worker = WorkerApp(app, stats, metrics, worker_id)

    segmenter = Segmenter(settings)  # loads the rules file now: a bad one stops the start
    engine = default_engine(settings)  # the catalogue likewise

    # The model store and the scorer are made in the agent (the Redis client belongs to the
    # worker's event loop); the learner hands its models (the bandit too) to this process's
    # scorer only when there is no secret (no snapshots to reload from).
    def adopt_locally(served: ServedModels, version: int, created_ms: int) -> None:
        scorer = worker.scorer
        if scorer is not None:
            scorer.adopt(served, version, created_ms)

    async def process_events(stream: faust.StreamT[Any]) -> None:
        store = make_store()
        # Model snapshots live in the state's Redis (none with another store: unit tests).
        client = store.client if isinstance(store, RedisStore) else None
        models = None if client is None else RedisModelStore(client, settings.app_id)
        # The learning bandit picks among eligible actions: the learner's, served with the
        # models (a fresh one until the first snapshot is served).
        engine.chooser = bandit = ThompsonChooser.from_settings(settings)
        engine.contextual = ContextualChooser.from_settings(settings)
        scorer = worker.scorer = IntentScorer(settings, models, bandit=bandit,
                                              recommender=engine.recommender,
                                              contextual=engine.contextual)
        processor = Processor(settings, MeteredStore(store, metrics), segmenter=segmenter,
                              scorer=scorer, engine=engine,
                              partition_check=PartitionCheck(settings.partition_check,
                                                             topic_partitions(app)))
        batches = raw_batches(stream, buffer, settings, metrics,
                              forget=lambda: lifecycle.gave_up is not None)
        # Aggregate updates logged by a process that stopped before folding them (a crash):
        # folded beside the batches (folding is idempotent), not before them: a sweep of every
        # slot takes a second or more.
        repair = (asyncio.create_task(fold_leftovers(store))
                  if isinstance(store, RedisStore) else None)
        try:
            await consume(batches, processor, out, stats, metrics, lifecycle)
        finally:
            if repair is not None:
                repair.cancel()
            await processor.store.close()
            if isinstance(out, KafkaEmitter):
                await out.close()

    app.agent(inputs, name="streamproc.process_events")(process_events)

    if store_factory is None and learns_in_worker(settings):  # the real Kafka and Redis
        async def learn() -> None:
            await serve_learner(settings, adopt_locally, on_start=learners.append)

        app.task(learn)

    # Reload a newer model even when no batch comes (the served version stays within
    # STREAMPROC_MODEL_RELOAD_SECONDS of the learner's).
    async def reload_models() -> None:
        scorer = worker.scorer
        if scorer is not None:
            try:
                await scorer.refresh()
            except Exception as exc:  # the next batch or tick retries
                log.warning("could not check for a newer model (%s: %s)", type(exc).__name__,
                            exc)

    app.timer(float(settings.model_reload_seconds), name="streamproc.reload_models")(
        reload_models)

    if store_factory is None:  # a real Redis: heartbeats and the readiness probe use it
        _add_operations(app, settings, stats, metrics, options["web_enabled"],
                        worker_id, lifecycle)
    return worker


async def fold_leftovers(store: RedisStore) -> None:
    """:meth:`RedisStore.fold` of every slot, once; a failure is only logged (the next start,
    or the next write of each slot on a cluster, folds what is left)."""
    try:
        applied = await store.fold()
    except Exception as exc:
        log.warning("could not fold the aggregate logs left by an earlier process (%s: %s); "
                    "the next start tries again", type(exc).__name__, exc)
        return
    if applied:
        log.info("folded %d aggregate updates left by an earlier process", applied)


def learns_in_worker(settings: Settings) -> bool:
    """Whether a worker also takes part in the learner group (``STREAMPROC_LEARNER``).

    ``off`` leaves the learning to ``streamproc learner`` processes, which hand their models to
    the workers through signed snapshots only: without a model secret (``STREAMPROC_MODEL_SECRET``
    or the local stack's file) there are none, so the worker learns itself after all (and says
    so) rather than never score.
    """
    if settings.learner == "worker":
        return True
    if not settings.model_secret:
        log.warning("STREAMPROC_LEARNER=off needs a model secret (a learner in another process "
                    "hands its models over as signed snapshots), and STREAMPROC_MODEL_SECRET is "
                    "not set: %s. Meanwhile this worker runs the learner itself",
                    settings.model_secret_hint)
        return True
    return False


async def serve_learner(
    settings: Settings, on_publish: Callable[[ServedModels, int, int], None] | None = None,
    stop: asyncio.Event | None = None, on_start: Callable[[Learner], None] | None = None,
) -> None:
    """Take part in the learner group until cancelled (a worker's task) or ``stop`` is set
    (``streamproc learner``); the learner's last snapshot is written on the way out.
    ``on_start`` receives the learner (the worker's metrics read its lag)."""
    store = RedisStore.from_settings(settings)
    learner = Learner(settings, RedisModelStore(store.client, settings.app_id),
                      on_publish=on_publish)
    if on_start is not None:
        on_start(learner)
    try:
        await run_learner(settings, learner, stop)
    finally:
        await store.close()


async def serve_learner_process(settings: Settings, stop: asyncio.Event) -> None:
    """``streamproc learner``: :func:`serve_learner` until ``stop``, with ``/metrics`` and
    ``/livez`` on ``STREAMPROC_LEARNER_WEB_PORT`` when it is set (0: no web server)."""
    learners: list[Learner] = []
    runner = None
    if settings.learner_web_port > 0:
        metrics = LearnerMetrics(lambda: learners[0] if learners else None)
        runner = await web.start_learner_web(settings, metrics)
    try:
        await serve_learner(settings, stop=stop, on_start=learners.append)
    finally:
        if runner is not None:
            await runner.cleanup()


def _add_operations(app: faust.App, settings: Settings, stats: BatchStats,
                    metrics: WorkerMetrics, web_enabled: bool, worker_id: str,
                    lifecycle: Lifecycle) -> None:
    """Heartbeats to Redis every few seconds and, with the web server on, the HTTP endpoints.
    The heartbeats also time a Redis outage: after STREAMPROC_REDIS_OUTAGE_LEAVE_S of failed
    ones the worker stops, which leaves the group, so that a worker that can reach Redis takes
    its partitions."""
    # A client of its own, with short timeouts: a probe must answer while Redis hangs.
    client = redis_client(settings, socket_timeout=web.PROBE_TIMEOUT_S,
                          socket_connect_timeout=web.PROBE_TIMEOUT_S)
    beat = heartbeat.Heartbeat(settings.app_id, worker_id, stats)
    kafka = web.KafkaProbe(settings, settings.topics.browsing)
    if web_enabled:
        web.add_routes(app, metrics, client, worker_id, kafka)

    outage = OutageClock(settings.redis_outage_leave_s)

    async def send_heartbeat() -> None:
        try:
            await beat.publish(client, web.assigned_partitions(app),
                               "rebalancing" if app.rebalancing else "running")
            outage.succeeded()
        except Exception as exc:  # only a long outage stops the worker, not one heartbeat
            lasted = outage.failed(time.monotonic())
            log.warning("could not send the heartbeat to Redis (%s: %s); unreachable for %.0f s",
                        type(exc).__name__, exc, lasted)
            if outage.too_long(time.monotonic()) and not app.should_stop:
                lifecycle.stop(
                    f"Redis at {redacted(settings.redis_url)} has been unreachable for "
                    f"{lasted:.0f} s (STREAMPROC_REDIS_OUTAGE_LEAVE_S="
                    f"{settings.redis_outage_leave_s:g}): leaving the group so that another "
                    "worker takes the partitions; restart this one once Redis answers")

    app.timer(heartbeat.INTERVAL_S, name="streamproc.worker.heartbeat")(send_heartbeat)

    @app.on_before_shutdown.connect
    async def leave(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # After the consumer's last commit: the worker leaves the status at once.
        try:
            await beat.withdraw(client)
        except Exception as exc:
            log.warning("could not withdraw the heartbeat (%s: %s)", type(exc).__name__, exc)
        finally:
            await client.aclose()
            await kafka.close()


def topic_partitions(app: faust.types.AppT) -> Callable[[str], int | None]:
    """A topic's partition count as the worker's consumer knows it from the broker's metadata
    (None before the consumer has it). Not STREAMPROC_PARTITIONS: producers hash keys over the
    topic's real count, which differs from the setting when the topics were made elsewhere (a
    worker started by `streamproc worker` refuses to start on such a mismatch, but not every
    app is), or when partitions were added since."""

    def count(topic: str) -> int | None:
        try:
            n = app.consumer.topic_partitions(topic)
        except Exception:  # the consumer is not started yet, or stopping
            return None
        return n if isinstance(n, int) and n > 0 else None

    return count


def partition_backlog(app: faust.types.AppT) -> Callable[[Any], int | None]:
    """How many messages a Faust message's partition holds after it, by the high watermark of
    the consumer's last fetch (None before the first fetch, or once the partition is revoked)."""

    def backlog(message: Any) -> int | None:
        try:
            end: int | None = app.consumer.highwater(message.tp)
        except Exception:  # revoked by a rebalance meanwhile, or the consumer is stopping
            return None
        return None if end is None else max(0, end - message.offset - 1)

    return backlog


async def raw_batches(
    stream: faust.StreamT[Any], buffer: FetchBuffer, settings: Settings,
    metrics: WorkerMetrics | None = None, forget: Callable[[], bool] | None = None,
) -> AsyncIterator[Sequence[RawMessage]]:
    """The worker's batches (streamproc.worker.batching) from the agent's ``buffer``
    (streamproc.worker.delivery; what reaches the agent's ``stream`` is fed into it too): up to
    STREAMPROC_BATCH_SIZE events, filled for STREAMPROC_BATCH_WAIT_MS, or
    STREAMPROC_BATCH_BEHIND_WAIT_MS while the worker is behind (its newest event older than
    STREAMPROC_BATCH_BEHIND_MS, and more waiting in its partition)."""
    app = stream.app
    on_behind = None if metrics is None else metrics.batches_behind.inc
    feeder = asyncio.ensure_future(feed_from_stream(stream, buffer))
    try:
        async for messages in take_batches(buffer, settings.batch_size,
                                           settings.batch_wait_ms / 1000,
                                           settings.batch_behind_ms / 1000,
                                           settings.batch_behind_wait_ms / 1000,
                                           backlog=partition_backlog(app),
                                           on_behind=on_behind, forget=forget,
                                           generation=lambda: app.consumer_generation_id,
                                           stopping=lambda: bool(app.should_stop)):
            yield [_raw(m) for m in messages]
    finally:
        feeder.cancel()


# The worker's garbage-collector thresholds: a first generation of 50,000 allocations instead of
# 700. A batch allocates hundreds of thousands of short-lived objects (decoded events, profiles,
# records) and the default thresholds ran a full collection, walking every River model and
# module, every few batches: tens of milliseconds at random points of the event-to-decision
# path (`streamproc bench`: p99 latency at 1,000 events/s 84-91 ms before, 47-68 ms after).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Move what exists at start (modules, the loaded models) out of the collector's sight and
    collect less often: fewer, shorter pauses, the same memory in steady state."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_worker(app: faust.App, settings: Settings, lifecycle: Lifecycle | None = None,
               **worker_options: Any) -> None:
    """Run a Faust app as a worker process until it is stopped (SIGTERM, Ctrl-C, or on its own
    through ``lifecycle``, the one given to :func:`create_app`); exits through SystemExit, with
    the lifecycle's code and reason when the worker did not stop cleanly."""
    from faust.worker import Worker

    tune_gc()
    worker = Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False,
                    **worker_options)
    if lifecycle is not None:
        # The stop a signal starts (mode's Worker; `stop()` alone would not wait for it).
        lifecycle.request = lambda: worker._schedule_shutdown(signal.SIGTERM)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code or lifecycle is None or not lifecycle.exit_code:
            raise
        print(f"streamproc: {lifecycle.exit_message()}", file=sys.stderr)
        raise SystemExit(lifecycle.exit_code) from None
