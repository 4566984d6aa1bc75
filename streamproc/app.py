"""Build the Faust app from Settings: topics, the processing agent and its emitter.

Nothing happens at import time; ``create_app`` wires an app for the given settings (tests build
several). Values travel as raw bytes: decoding is ours, so a bad message reaches the processor
(and the dead-letter topic) instead of failing inside Faust's deserializer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import faust

from streamproc.agents import BatchStats, Emitter, consume
from streamproc.events.codec import RawMessage
from streamproc.intent import IntentScorer, ServedModels
from streamproc.learner import Learner, run_learner
from streamproc.modelstore import RedisModelStore
from streamproc.processor import BatchResult, Processor
from streamproc.segmentation import Segmenter
from streamproc.settings import Settings
from streamproc.state.store import RedisStore, Store

log = logging.getLogger(__name__)


class FaustEmitter:
    def __init__(self, decisions: faust.TopicT, segments: faust.TopicT,
                 deadletter: faust.TopicT, learning: faust.TopicT | None = None) -> None:
        self.decisions = decisions
        self.segments = segments
        self.deadletter = deadletter
        self.learning = learning

    async def emit(self, result: BatchResult) -> None:
        sends: list[tuple[faust.TopicT, bytes | None, bytes | None]] = [
            *((self.decisions, k, v) for k, v in result.decisions),
            *((self.segments, k, v) for k, v in result.segments),
            *((self.deadletter, k, v) for k, v in result.deadletters),
            *((self.learning, k, v) for k, v in result.learning if self.learning is not None),
            *((topic, k, None) for k in result.erased for topic in (self.decisions,
                                                                    self.segments)),
        ]
        futures = [await topic.send(key=k, value=v, force=True) for topic, k, v in sends]
        if futures:
            await asyncio.gather(*futures)


def _raw(event: Any) -> RawMessage:
    m = event.message
    ts = int(m.timestamp * 1000) if m.timestamp else None
    return RawMessage(m.topic, m.partition, m.offset, m.key, m.value, ts)


def create_app(
    settings: Settings,
    store_factory: Callable[[], Store] | None = None,
    emitter: Emitter | None = None,
    **faust_options: Any,
) -> faust.App:
    options: dict[str, Any] = {
        "broker": settings.kafka_url,
        "store": "memory://",
        "autodiscover": False,
        "web_enabled": settings.web_port > 0,
        "web_port": settings.web_port or 6066,
        "web_bind": "127.0.0.1",
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        "topic_partitions": settings.partitions,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "datadir": str(settings.stack_dir / "worker-data"),
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    options.update(faust_options)
    Path(options["datadir"]).mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.app_id, **options)
    topics = settings.topics
    inputs = app.topic(*topics.inputs, key_type=bytes, value_type=bytes)
    out = emitter or FaustEmitter(app.topic(topics.decisions), app.topic(topics.segments),
                                  app.topic(topics.deadletter), app.topic(topics.learning))
    make_store = store_factory or (lambda: RedisStore.from_url(settings.redis_url))
    stats = BatchStats()
    app.streamproc_stats = stats

    segmenter = Segmenter(settings)  # loads the rules file now: a bad one stops the start

    # The model store and the scorer are made in the agent (the Redis client belongs to the
    # worker's event loop); the learner hands its models to this process's scorer only when
    # there is no secret (no snapshots to reload from).
    def adopt_locally(served: ServedModels, version: int, created_ms: int) -> None:
        scorer: IntentScorer | None = getattr(app, "streamproc_scorer", None)
        if scorer is not None:
            scorer.adopt(served, version, created_ms)

    async def process_events(stream: faust.StreamT) -> None:
        store = make_store()
        # Model snapshots live in the state's Redis (none with another store: unit tests).
        models = (RedisModelStore(store.client, settings.app_id)
                  if isinstance(store, RedisStore) else None)
        scorer = IntentScorer(settings, models)
        app.streamproc_scorer = scorer
        processor = Processor(settings, store, segmenter=segmenter, scorer=scorer)
        batches = _raw_batches(stream, settings.batch_size, settings.batch_wait_ms / 1000)
        try:
            await consume(batches, processor, out, stats)
        finally:
            await processor.store.close()

    app.agent(inputs, name="streamproc.process_events")(process_events)

    if store_factory is None:  # the learner needs the real Kafka and Redis
        async def learn() -> None:
            store = RedisStore.from_url(settings.redis_url)
            learner = Learner(settings, RedisModelStore(store.client, settings.app_id),
                              on_publish=adopt_locally)
            app.streamproc_learner = learner
            try:
                await run_learner(settings, learner)
            finally:
                await store.close()

        app.task(learn)

    # Reload a newer model even when no batch comes (the served version stays within
    # STREAMPROC_MODEL_RELOAD_SECONDS of the learner's).
    async def reload_models() -> None:
        scorer: IntentScorer | None = getattr(app, "streamproc_scorer", None)
        if scorer is not None:
            try:
                await scorer.refresh()
            except Exception as exc:  # the next batch or tick retries
                log.warning("could not check for a newer model (%s: %s)", type(exc).__name__,
                            exc)

    app.timer(float(settings.model_reload_seconds), name="streamproc.reload_models")(
        reload_models)
    return app


async def _raw_batches(
    stream: faust.StreamT, size: int, within: float
) -> AsyncIterator[Sequence[RawMessage]]:
    async for events in stream.take_events(size, within=within):
        yield [_raw(e) for e in events]
