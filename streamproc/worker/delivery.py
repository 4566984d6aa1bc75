"""Faust's delivery, a fetch at a time: the worker's input messages skip the per-message path.

Faust hands every message of a fetch to its agents one at a time: per message, the fetcher
races the delivery against a rebalance (``Service.wait_first``: two tasks and an
``asyncio.wait``), the conductor takes a lock, waits for flow control and the producer, builds
an event and queues it, and the stream takes it off the queue, yields to the loop and runs its
processors. A sampling profile of the bare app (docs/benchmarks.md) put about half of the
event loop's busy time there, against a few microseconds for aiokafka's own work.

:class:`BatchConsumer` (a subclass of Faust's aiokafka consumer, installed through the
transport's ``Consumer`` class attribute by :func:`attach`) keeps Faust's fetcher, its
bookkeeping of read offsets and gaps, its commits and its rebalances, and changes one thing:
the messages of the topics that have a :class:`FetchBuffer` go into it as one list per fetch,
raced once against a rebalance, instead of through the conductor one by one. Messages of other
topics take Faust's usual path. The agent stays a Faust agent, started, stopped and subscribed
by Faust; it takes its batches from the buffer (streamproc.worker.batching), and what reaches its
stream all the same (Faust's ``test_context``) is fed into the same buffer.

Acknowledgements are Faust's: a message is tracked as unacknowledged when it enters the buffer
and acknowledged with ``Consumer.ack`` once its batch is handled, so Faust commits only offsets
whose batches were handled (after their state was written and their outputs published).

**Commits never pass an unacknowledged message.** Faust 0.15's ``Consumer._new_offset`` commits
past a single unacknowledged message at the head of a partition (its guard is ``min(acked) -
committed > 1``: faust-streaming/faust#606, PR #707), because its gap bookkeeping cannot tell an
offset that does not exist (log compaction, a transaction's control record, retention) from a
message still in flight, and it cannot record a gap at the committed offset itself.
:class:`BatchConsumer` records every offset the fetcher skipped, exactly (:meth:`note_read`:
the offsets between the committed or last read one and the one delivered, at the head of the
partition after an assignment or a seek as well as between messages), and withholds a commit
while the head of the partition is neither acknowledged nor one of those gaps
(:meth:`~BatchConsumer._new_offset`). So a transaction's markers and compacted offsets are
committed past, and a message in flight never is.

**A seek to the committed offsets moves every partition**, those with nothing committed
included (:func:`seek_to_committed`): Faust drops a fetch that comes back while its flow is
stopped and seeks, and aiokafka alone left a partition with no commit yet after the records
dropped, never read again.

**A fetch waits at most ``fetch_max_wait_ms`` at the broker** (STREAMPROC_FETCH_MAX_WAIT_MS,
100 ms) instead of Faust's 1,500. aiokafka sends one fetch at a time to a broker, for the
partitions whose earlier messages were all taken; a fetch of partitions read to the end (an
idle topic, such as purchases beside browsing) waits at the broker until one of them has a
message or the wait ends, and a partition of a busy topic read to the end meanwhile is not
fetched again before. Measured on the bare app catching up (docs/benchmarks.md): with
Faust's 1,500 ms, the fetches of the idle partitions took 1.5 s each and the app was idle a
fifth of the time with its buffer empty, waiting for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import faust
from aiokafka.consumer.fetcher import OffsetResetStrategy
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from intervaltree import IntervalTree


class FetchBuffer:
    """The messages fetched for one agent's topics, in fetch order, until its batch loop takes
    them. ``put`` waits while ``capacity`` messages are already waiting (back-pressure: the
    fetcher stops, as Faust's full stream buffer stops it)."""

    def __init__(self, topics: Iterable[str], capacity: int) -> None:
        self.topics = frozenset(topics)
        self.capacity = capacity
        self.messages: list[Any] = []
        self.arrived = asyncio.Event()  # set while messages wait
        self.room = asyncio.Event()  # set while fewer than `capacity` wait
        self.room.set()
        self.consumer: Any = None  # the consumer that acknowledges them
        self.closed = False  # nobody takes from it (the batch loop ended): nothing goes in

    async def put(self, messages: Sequence[Any], consumer: Any) -> None:
        """Add a fetch's messages, waiting for room: at most ``capacity`` wait here, tracked
        as pending acknowledgement (Faust's stop and rebalance wait for those). Cancelled (a
        rebalance starts) or closed, the rest is left out: never tracked, read again."""
        self.consumer = consumer
        unacked = consumer._unacked_messages
        start = 0
        while start < len(messages):
            while len(self.messages) >= self.capacity and not self.closed:
                self.room.clear()
                await self.room.wait()
            if self.closed or not consumer.flow_active:  # read again after the restart or
                return  # the rebalance (Faust stops the flow first)
            part = messages[start:start + self.capacity - len(self.messages)]
            start += len(part)
            for message in part:  # pending acknowledgement, as Faust's stream tracks them
                message.tracked = True
                unacked.add(message)
            self.messages.extend(part)
            self.arrived.set()

    def take(self, n: int, generation: int | None = None) -> list[Any]:
        """Up to ``n`` messages, oldest first. Messages fetched before the consumer group's
        latest rebalance (another ``generation``) are forgotten, as Faust's stream skips them:
        their partition may have moved, its new owner reads them."""
        batch = self.messages[:n]
        del self.messages[:n]
        if not self.messages:
            self.arrived.clear()
        if len(self.messages) < self.capacity:
            self.room.set()
        if generation is not None:
            stale = [m for m in batch if m.generation_id != generation]
            if stale:
                forget(stale, self.consumer)
                batch = [m for m in batch if m.generation_id == generation]
        return batch

    def ack(self, messages: Sequence[Any]) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        for message in messages:
            consumer.ack(message)

    def clear(self) -> None:
        """A rebalance starts: what waits is forgotten, as Faust clears its stream queues, so
        that the rebalance waits only for the batch in hand; it is read again from the
        committed offsets by whoever gets the partition."""
        forget(self.messages, self.consumer)
        self.messages.clear()
        self.arrived.clear()
        self.room.set()

    def open(self) -> None:
        self.closed = False

    def close(self) -> None:
        """The batch loop ended (the worker stops): what waits is not acknowledged (it is read
        again by whoever takes the partition) but no longer holds up Faust's stop."""
        self.closed = True
        self.clear()


def forget(messages: Sequence[Any], consumer: Any) -> None:
    """Mark messages done without acknowledging them: Faust's stop waits only for messages not
    marked ``acked``, while only ``Consumer.ack`` puts an offset among those to commit
    (faust.transport.consumer: ``ack``, ``_clean_unacked_messages``, ``_new_offset``); a later
    message's acknowledgement commits nothing past the gap this leaves."""
    unacked = None if consumer is None else consumer._unacked_messages
    for message in messages:
        message.acked = True
        if unacked is not None:
            unacked.discard(message)


def covered(gaps: IntervalTree, start: int, end: int) -> bool:
    """Whether the intervals of ``gaps`` cover every offset from ``start`` to ``end - 1``.

    >>> covered(IntervalTree.from_tuples([(3, 5), (5, 6)]), 3, 6), covered(IntervalTree(), 3, 3)
    (True, True)
    >>> covered(IntervalTree.from_tuples([(4, 6)]), 3, 6)
    False
    """
    for interval in sorted(gaps.overlap(start, end)):
        if interval.begin > start:
            return False
        start = max(start, interval.end)
    return start >= end


async def seek_to_committed(consumer: Any) -> dict[Any, int | None]:
    """aiokafka's ``AIOKafkaConsumer.seek_to_committed`` (the committed offset of every assigned
    partition, None where there is none), except that a partition with nothing committed is
    moved back too: to offset 0 when 0 is committed, else where the consumer's
    ``auto_offset_reset`` starts a partition (the earliest offset, for the worker).

    aiokafka seeks only the partitions whose committed offset is above 0 and leaves the others
    where its fetcher got to, while Faust's ``perform_seek`` takes them to be read again from the
    start (their read offset None). Faust seeks so after dropping a fetch that came back while
    the flow was stopped (``Consumer.getmany``: a fetch sent before a rebalance and answered
    with the new assignment's first records before the flow resumed): on a partition with
    nothing committed yet (a worker's first seconds), those records were never read again."""
    committed: dict[Any, int | None] = await consumer.seek_to_committed()
    assigned = consumer.assignment()
    fresh = []
    for tp, offset in committed.items():
        if tp not in assigned or (offset is not None and offset > 0):
            continue  # sought by aiokafka (or no longer ours)
        if offset == 0:
            consumer.seek(tp, 0)
        else:
            fresh.append(tp)
    fetcher = consumer._fetcher
    if fresh and fetcher._default_reset_strategy != OffsetResetStrategy.NONE:
        # Where a partition with nothing committed starts, as aiokafka's own assignment does;
        # the fetcher finds the offset (nothing waits for it: ``reset`` only lets us see errors).
        reset = fetcher.request_offset_reset(fresh, fetcher._default_reset_strategy)
        reset.add_done_callback(lambda f: f.cancelled() or f.exception())
    return committed


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's thread of the aiokafka consumer, whose consumer's fetches wait at the broker at
    most the transport's ``fetch_max_wait_ms`` (Faust passes a fixed 1,500 ms), and whose seek to
    the committed offsets moves every partition (:func:`seek_to_committed`)."""

    async def seek_to_committed(self) -> Mapping[TP, int]:
        return cast(Mapping[TP, int],
                    await self.call_thread(seek_to_committed, self._ensure_consumer()))

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        wait_ms = cast(BatchTransport, transport).fetch_max_wait_ms
        if wait_ms is not None:
            # aiokafka hands it to its fetcher when the consumer starts (AIOKafkaConsumer.start);
            # tests/integration/test_batches.py checks that the started fetcher has it.
            consumer._fetch_max_wait_ms = wait_ms
        return consumer


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer delivering each fetch's messages of buffered topics at once,
    and committing no offset past an unacknowledged message (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per partition: the offset after the last one delivered, and the first offset to be
        # acknowledged since the partition was assigned or sought (where nothing is committed).
        self._next_read: dict[TP, int] = {}
        self._read_from: dict[TP, int] = {}

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def note_read(self, tp: TP, offset: int) -> None:
        """A message at ``offset`` of ``tp`` is delivered: the offsets skipped before it (from
        the last one delivered, or, first after an assignment or a seek, from the committed
        offset) do not exist and become a gap, committed past with the messages around it."""
        expected = self._next_read.get(tp)
        committed = self._committed_offset[tp]
        if expected is None or offset < expected:  # assigned or sought: from the committed
            expected = self._read_from[tp] = offset if committed is None else committed
        if committed is not None:
            expected = max(expected, committed)
        if offset > expected:
            gaps = self._gap[tp]
            gaps.addi(expected, offset)
            gaps.merge_overlaps()
        self._next_read[tp] = offset + 1

    def _new_offset(self, tp: TP) -> int | None:
        # Faust's, except that a head of the partition neither acknowledged nor a known gap
        # (a message still in flight) holds the commit back (faust-streaming/faust#606).
        acked = self._acked[tp]
        if acked:
            head = self._committed_offset[tp]
            if head is None:
                head = self._read_from.get(tp)
            low = min(acked)
            if head is not None and low > head and not covered(self._gap[tp], head, low):
                return None
        new: int | None = super()._new_offset(tp)
        return new

    async def wait_empty(self) -> None:
        # Faust's rebalance and stop wait here, once the flow is stopped, for every tracked
        # message to be acknowledged: the batch in hand, not the messages waiting behind it.
        for buffer in set(getattr(self.transport, "buffers", {}).values()):
            buffer.clear()
        await super().wait_empty()

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - real Kafka
        # Faust's loop (faust.transport.consumer.Consumer._drain_messages) with one change:
        # messages of buffered topics are collected per fetch and delivered by one `deliver`.
        buffers: dict[str, FetchBuffer] = getattr(self.transport, "buffers", {})
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offsets = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                ait = self.getmany(timeout=1.0)
                await self.sleep(0)
                if self.should_stop:
                    continue
                fetched: dict[FetchBuffer, list[Any]] = {}
                async for tp, message in ait:
                    offset = message.offset
                    r_offset = read_offsets[tp]
                    if r_offset is not None and offset < r_offset:
                        continue  # read already (Faust drops it likewise)
                    if acks_enabled_for(message.topic):
                        self.note_read(tp, offset)  # instead of Faust's inexact _add_gap
                    buffer = buffers.get(message.topic)
                    if buffer is not None:
                        fetched.setdefault(buffer, []).append(message)
                    else:
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    read_offsets[tp] = offset
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
                for buffer, messages in fetched.items():
                    await self.wait_first(buffer.put(messages, self), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class BatchTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`BatchConsumer`; ``buffers`` by topic name, and
    the consumer's longest wait of a fetch at the broker (None: Faust's)."""

    Consumer = BatchConsumer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buffers: dict[str, FetchBuffer] = {}
        self.fetch_max_wait_ms: int | None = None


def attach(app: faust.App, topics: Iterable[str], capacity: int,
           fetch_max_wait_ms: int | None = None) -> FetchBuffer:
    """A buffer for ``topics`` on ``app``, whose consumer delivers their messages into it a
    fetch at a time, its fetches waiting at most ``fetch_max_wait_ms`` at the broker (None:
    Faust's 1,500). Call it right after making the app (before anything uses its transport)."""
    buffer = FetchBuffer(topics, capacity)
    if app._transport is None:
        app.transport = BatchTransport(app.conf.broker_consumer, app)
    transport = app.transport
    if isinstance(transport, BatchTransport):
        for topic in buffer.topics:
            transport.buffers[topic] = buffer
        transport.fetch_max_wait_ms = fetch_max_wait_ms
    return buffer


async def feed_from_stream(stream: faust.StreamT[Any], buffer: FetchBuffer) -> None:
    """Whatever reaches the agent's stream one message at a time (Faust's ``test_context``, or
    a transport without :class:`BatchConsumer`) goes into ``buffer`` too; the stream's own
    acknowledgements are off, the buffer's batch loop acknowledges."""
    stream.enable_acks = False
    async for _ in stream:
        event = stream.current_event
        if event is not None:
            await buffer.put([event.message], cast(Any, stream.app).consumer)
