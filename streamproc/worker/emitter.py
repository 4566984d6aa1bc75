"""Publishes a batch's records with a plain aiokafka producer, and returns once the broker has them.

Faust's ``topic.send`` wraps every record in its own futures, callbacks and buffer; for the
worker's outputs (decisions, segment moves, dead letters, the learner's observations,
tombstones: most batches publish several hundred records) that machinery cost more than the
processing itself, and added tens of milliseconds to the event-to-decision latency
(``streamproc bench`` measures both). This producer builds one record batch per partition
(aiokafka's ``create_batch``/``send_batch``) and then waits for all the acknowledgements at once,
so a batch costs one produce request per partition leader and no Python call per record beyond
appending it: about 3 µs of CPU per record against 13 with a ``send`` per record
(docs/benchmarks.md).

Keys are the customer ids, partitioned as aiokafka's default partitioner does (murmur2, as Java's
and Faust's: ``partition_for``), so a customer's records land on the same partition as its events.
A record larger than the broker takes fails with ``MessageSizeTooLargeError`` as before, now
from the broker's answer rather than from a size check before sending.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer

from streamproc.events.partitioner import partition_for
from streamproc.kafka_options import producer_options
from streamproc.learning.observations import pack_batch
from streamproc.processor import BatchResult
from streamproc.settings import Settings

Record = tuple[str, bytes | None, bytes | None]
# About 200 KB per learning-topic record, well under Kafka's 1 MB default message size.
OBSERVATIONS_PER_RECORD = 500


def batch_records(result: BatchResult, settings: Settings) -> list[Record]:
    """The (topic, key, value) records a batch publishes, in order; the learner's observations
    packed in the order their events were read; erasures become tombstones (null values) on the
    decisions, segments and dead-letter topics (compacted: streamproc.stack.topics).

    >>> from streamproc.settings import Settings
    >>> r = BatchResult(decisions=[(b"c1", b"{}")], erased=[b"c2"])
    >>> [(t.rsplit(".", 1)[-1], k, v) for t, k, v in batch_records(r, Settings())]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('decisions', b'c1', b'{}'), ('decisions', b'c2', None), ('segments', b'c2', None),
     ('deadletter', b'c2', None)]
    """
    topics = settings.topics
    inputs = {"browsing": topics.browsing, "purchases": topics.purchases,
              "profiles": topics.profiles, "feedback": topics.feedback}
    records: list[Record] = [
        *((topics.decisions, k, v) for k, v in result.decisions),
        *((topics.segments, k, v) for k, v in result.segments),
        *((topics.deadletter, k, v) for k, v in result.deadletters),
        *((inputs[to], k, v) for to, k, v in result.forwards),
    ]
    # The learner's observations: one record per slice of the batch, not one per event (the
    # learning topic has a single partition and a single reader; keys do not matter there).
    values = [v for _, v in result.learning]
    for start in range(0, len(values), OBSERVATIONS_PER_RECORD):
        records.append((topics.learning, None,
                        pack_batch(values[start:start + OBSERVATIONS_PER_RECORD])))
    for key in result.erased:
        records.extend((topic, key, None) for topic in
                       (topics.decisions, topics.segments, topics.deadletter))
    return records


class KafkaEmitter:
    """The worker's publisher: started lazily on the first batch, closed by the agent's exit."""

    def __init__(self, settings: Settings, linger_ms: int = 0) -> None:
        self.settings = settings
        self.linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                **producer_options(self.settings),
                linger_ms=self.linger_ms, client_id=f"{self.settings.app_id}-emitter",
            )
            await producer.start()
            self._producer = producer
        return self._producer

    async def emit(self, result: BatchResult) -> None:
        await self.send(batch_records(result, self.settings))

    async def send(self, records: Iterable[Record]) -> None:
        """Append every record, then wait for every acknowledgement (raises the first error).

        The records are grouped into one record batch per partition (more when a partition's
        records outgrow the producer's ``max_batch_size``), in order, and each batch is handed
        to the producer whole: one future per partition instead of a ``send`` coroutine, a
        partition lookup and a future per record.
        """
        producer = await self._started()
        partitions: dict[str, list[int]] = {}
        builders: dict[tuple[str, int], list[Any]] = {}
        for topic, key, value in records:
            known = partitions.get(topic)
            if known is None:
                known = partitions[topic] = sorted(await producer.partitions_for(topic))
            # aiokafka's default partitioner: murmur2 of the key, a random partition without one
            partition = (known[partition_for(key, len(known))] if key is not None
                         else random.choice(known))
            queue = builders.setdefault((topic, partition), [])
            if not queue or queue[-1].append(key=key, value=value, timestamp=None) is None:
                builder = producer.create_batch()  # a new batch takes its first record always
                builder.append(key=key, value=value, timestamp=None)
                queue.append(builder)
        futures = [await producer.send_batch(builder, topic, partition=partition)
                   for (topic, partition), queue in builders.items() for builder in queue]
        if futures:
            await asyncio.gather(*futures)

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()
