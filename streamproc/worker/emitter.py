"""Publishes a batch's records with a plain aiokafka producer, and returns once the broker has them.

Faust's ``topic.send`` wraps every record in its own futures, callbacks and buffer; for the
worker's outputs (decisions, segment moves, dead letters, the learner's observations,
tombstones: most batches publish several hundred records) that machinery cost more than the
processing itself, and added tens of milliseconds to the event-to-decision latency
(``streamproc bench`` measures both). This producer appends every record of the batch to
aiokafka's accumulator first and then waits for all the acknowledgements at once, so a batch
costs one produce request per partition leader.

Keys are the customer ids, partitioned by aiokafka's default partitioner (murmur2, as Java's and
Faust's), so a customer's records land on the same partition as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer

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
        """Append every record, then wait for every acknowledgement (raises the first error)."""
        producer = await self._started()
        futures = [await producer.send(topic, value, key=key) for topic, key, value in records]
        if futures:
            await asyncio.gather(*futures)

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()
