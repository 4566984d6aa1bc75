"""Build the Faust app from Settings: topics, the processing agent and its emitter.

Nothing happens at import time; ``create_app`` wires an app for the given settings (tests build
several). Values travel as raw bytes: decoding is ours, so a bad message reaches the processor
(and the dead-letter topic) instead of failing inside Faust's deserializer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import faust

from streamproc.agents import BatchStats, Emitter, consume
from streamproc.events.codec import RawMessage
from streamproc.intent import IntentScorer, RedisBlobs
from streamproc.processor import BatchResult, Processor
from streamproc.segmentation import Segmenter
from streamproc.settings import Settings
from streamproc.state.store import RedisStore, Store


class FaustEmitter:
    def __init__(self, decisions: faust.TopicT, segments: faust.TopicT,
                 deadletter: faust.TopicT) -> None:
        self.decisions = decisions
        self.segments = segments
        self.deadletter = deadletter

    async def emit(self, result: BatchResult) -> None:
        sends: list[tuple[faust.TopicT, bytes | None, bytes | None]] = [
            *((self.decisions, k, v) for k, v in result.decisions),
            *((self.segments, k, v) for k, v in result.segments),
            *((self.deadletter, k, v) for k, v in result.deadletters),
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


def app_options(settings: Settings) -> dict[str, Any]:
    """The Faust options of a worker (the benchmark's bare Faust app uses the same)."""
    return {
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


def create_app(
    settings: Settings,
    store_factory: Callable[[], Store] | None = None,
    emitter: Emitter | None = None,
    **faust_options: Any,
) -> faust.App:
    options = app_options(settings)
    options.update(faust_options)
    Path(options["datadir"]).mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.app_id, **options)
    topics = settings.topics
    inputs = app.topic(*topics.inputs, key_type=bytes, value_type=bytes)
    out = emitter or FaustEmitter(app.topic(topics.decisions), app.topic(topics.segments),
                                  app.topic(topics.deadletter))
    make_store = store_factory or (lambda: RedisStore.from_url(settings.redis_url))
    stats = BatchStats()
    app.streamproc_stats = stats

    segmenter = Segmenter(settings)  # loads the rules file now: a bad one stops the start

    async def process_events(stream: faust.StreamT) -> None:
        store = make_store()
        # The model snapshot lives in the state's Redis (none with another store: unit tests).
        blobs = RedisBlobs(store.client) if isinstance(store, RedisStore) else None
        scorer = IntentScorer(settings, blobs)
        app.streamproc_scorer = scorer
        processor = Processor(settings, store, segmenter=segmenter, scorer=scorer)
        batches = raw_batches(stream, settings.batch_size, settings.batch_wait_ms / 1000)
        try:
            await consume(batches, processor, out, stats)
        finally:
            try:
                await scorer.checkpoint(force=True)  # what was learnt since the last one
            finally:
                await processor.store.close()

    app.agent(inputs, name="streamproc.process_events")(process_events)

    if settings.model_secret:
        # The batch loop writes the model's snapshot when one is due; this timer writes what
        # was learnt before the traffic paused (no batch, no snapshot otherwise).
        async def snapshot_models() -> None:
            scorer: IntentScorer | None = getattr(app, "streamproc_scorer", None)
            if scorer is not None:
                await scorer.checkpoint()

        app.timer(float(settings.model_snapshot_seconds),
                  name="streamproc.snapshot_models")(snapshot_models)
    return app


async def raw_batches(
    stream: faust.StreamT, size: int, within: float
) -> AsyncIterator[Sequence[RawMessage]]:
    async for events in stream.take_events(size, within=within):
        yield [_raw(e) for e in events]
