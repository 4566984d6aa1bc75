"""BatchConsumer's commits (streamproc.worker.delivery): Faust's own ``_new_offset`` and
``_filter_committable_offsets`` run on constructed state, without a broker. A message still in
flight at the head of a partition is never committed past (faust-streaming/faust#606), while
offsets that do not exist (compaction, a transaction's control records) are."""

from __future__ import annotations

import asyncio
import gc
import random
from collections.abc import Iterator
from typing import Any

import faust
import pytest
from aiokafka.consumer.fetcher import OffsetResetStrategy
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streamproc.worker.delivery import BatchConsumer, attach, seek_to_committed

TOPIC = "streamproc.browsing"
P0 = TP(TOPIC, 0)


def new_consumer() -> BatchConsumer:
    """The consumer of a Faust app with a buffered topic, as the worker makes it (never
    started: no broker)."""
    app = faust.App("test-delivery", broker="kafka://127.0.0.1:1", store="memory://",
                    web_enabled=False)
    attach(app, [TOPIC], 100)
    found = app.consumer
    assert isinstance(found, BatchConsumer)
    return found


@pytest.fixture(autouse=True)
def _collect_consumers() -> Iterator[None]:
    """The consumers made here are collected before the test ends: a Faust consumer's
    finalizer running later, while Python 3.11.7 compiles (an import, ``ast.parse``), fails
    that with "AST constructor recursion depth mismatch" (a CPython bug)."""
    yield
    gc.collect()


@pytest.fixture
def consumer() -> Iterator[BatchConsumer]:
    yield new_consumer()


def ack(consumer: BatchConsumer, *offsets: int) -> None:
    """What ``Consumer.ack`` records for an acknowledged message of an acking topic."""
    for offset in offsets:
        consumer._acked[P0].append(offset)
        consumer._acked_index[P0].add(offset)


def commit(consumer: BatchConsumer) -> int | None:
    """One commit round as Faust makes it: the committable offset, recorded as committed."""
    offsets = consumer._filter_committable_offsets([P0])
    if P0 in offsets:
        consumer._committed_offset[P0] = offsets[P0]
    return consumer._committed_offset[P0]


def test_a_single_unacknowledged_message_at_the_head_is_not_committed_past(
        consumer: BatchConsumer) -> None:
    consumer._committed_offset[P0] = 2585
    for offset in range(2585, 2590):
        consumer.note_read(P0, offset)
    ack(consumer, 2586, 2587, 2588, 2589)  # 2585 is still being handled
    stock = faust_aiokafka.Consumer._new_offset(consumer, P0)
    assert stock == 2590  # Faust's own method commits past it: the bug
    ack(consumer, 2586, 2587, 2588, 2589)  # the stock method consumed them: again
    assert consumer._filter_committable_offsets([P0]) == {}
    assert commit(consumer) == 2585
    ack(consumer, 2585)
    assert commit(consumer) == 2590


def test_nothing_committed_yet_the_first_message_read_is_the_head(
        consumer: BatchConsumer) -> None:
    for offset in range(4):
        consumer.note_read(P0, offset)
    ack(consumer, 1, 2, 3)
    assert commit(consumer) is None
    ack(consumer, 0)
    assert commit(consumer) == 4


def test_offsets_compacted_away_at_the_head_are_committed_past(consumer: BatchConsumer) -> None:
    consumer._committed_offset[P0] = 31
    consumer.note_read(P0, 34)  # 31 to 33 compacted away: the first message read is 34
    consumer.note_read(P0, 35)
    ack(consumer, 34, 35)
    assert commit(consumer) == 36


def test_transaction_markers_are_committed_past_but_not_a_message_in_flight(
        consumer: BatchConsumer) -> None:
    consumer._committed_offset[P0] = 10
    # Two transactions: 10, 11 and their marker 12; 13, 14 and their marker 15; then 16.
    for offset in (10, 11, 13, 14, 16):
        consumer.note_read(P0, offset)
    ack(consumer, 10, 11, 14, 16)  # 13 is in flight
    assert commit(consumer) == 13  # past the marker 12, not past 13
    ack(consumer, 13)
    assert commit(consumer) == 17  # past the marker 15


def test_a_marker_at_the_committed_offset_after_a_restart_is_committed_past(
        consumer: BatchConsumer) -> None:
    # The last commit was the offset of a transaction's marker (the last record of the log):
    # after a restart the first message read is the one after it.
    consumer._committed_offset[P0] = 20
    consumer.note_read(P0, 21)
    ack(consumer, 21)
    assert commit(consumer) == 22


def test_a_gap_right_after_offset_0_is_known(consumer: BatchConsumer) -> None:
    # Faust's fetcher records no gap after offset 0 (its read offset 0 is falsy).
    consumer.note_read(P0, 0)
    consumer.note_read(P0, 2)  # 1 is a marker
    ack(consumer, 0, 2)
    assert commit(consumer) == 3


def test_messages_read_again_after_a_seek_leave_no_gap(consumer: BatchConsumer) -> None:
    consumer._committed_offset[P0] = 10
    for offset in (10, 11, 12):
        consumer.note_read(P0, offset)
    for offset in (10, 11, 12, 13):  # sought back to the committed offset: read again
        consumer.note_read(P0, offset)
    assert not consumer._gap[P0]
    ack(consumer, 11, 12, 13)
    assert commit(consumer) == 10
    ack(consumer, 10)
    assert commit(consumer) == 14


def test_commits_never_pass_an_unacknowledged_message() -> None:
    """Any log with gaps (compaction, markers) read from any committed offset, acknowledged in
    any order: no commit passes a message not yet acknowledged, and once every message is, the
    commit reaches the end. (Seeded cases rather than Hypothesis, which imports modules while
    it runs: see _collect_consumers.)"""
    for seed in range(300):
        rng = random.Random(seed)
        consumer = new_consumer()
        start = rng.choice([None, rng.randint(1, 50)])
        if start is not None:
            consumer._committed_offset[P0] = start
        offsets, offset = [], (start or 0) - 1
        for _ in range(rng.randint(1, 30)):  # a step above 1 skips offsets that do not exist
            offset += rng.choice([1, 1, 1, 2, 4])
            offsets.append(offset)
            consumer.note_read(P0, offset)
        pending = list(offsets)
        rng.shuffle(pending)
        while pending:
            ack(consumer, pending.pop())
            committed = commit(consumer)
            if committed is not None and pending:
                assert committed <= min(pending), (seed, offsets, pending, committed)
        assert commit(consumer) == offsets[-1] + 1, (seed, offsets)


@pytest.mark.parametrize(("wait_ms", "expected"), [(40, 40), (None, 1500)])
async def test_the_consumers_fetches_wait_at_the_broker_as_long_as_attach_says(
        wait_ms: int | None, expected: int) -> None:
    # The aiokafka consumer that Faust's consumer thread makes for a worker (never started: no
    # broker); its fetcher takes the wait when it starts. None keeps Faust's own 1,500 ms.
    app = faust.App("test-delivery", broker="kafka://127.0.0.1:1", store="memory://",
                    web_enabled=False)
    attach(app, [TOPIC], 100, fetch_max_wait_ms=wait_ms)
    consumer = app.consumer
    assert isinstance(consumer, BatchConsumer)
    thread = consumer._new_consumer_thread()
    kafka = thread._create_worker_consumer(app.transport)
    try:
        assert kafka._fetch_max_wait_ms == expected
    finally:
        await kafka.stop()


class SeekingConsumer:
    """What :func:`seek_to_committed` uses of an aiokafka consumer, recording the seeks. Its
    own ``seek_to_committed`` moves only the partitions committed above 0, as aiokafka's."""

    def __init__(self, committed: dict[str, int | None], assigned: set[str],
                 strategy: int = OffsetResetStrategy.EARLIEST) -> None:
        self.committed, self.assigned = committed, assigned
        self.position: dict[str, Any] = {tp: "after the dropped fetch" for tp in committed}
        self._fetcher = self
        self._default_reset_strategy = strategy

    async def seek_to_committed(self) -> dict[str, int | None]:
        for tp, offset in self.committed.items():
            if offset and offset > 0:
                self.position[tp] = offset
        return dict(self.committed)

    def assignment(self) -> set[str]:
        return self.assigned

    def seek(self, tp: str, offset: int) -> None:
        self.position[tp] = offset

    def request_offset_reset(self, tps: list[str], strategy: int) -> asyncio.Future[None]:
        for tp in tps:
            self.position[tp] = ("reset", strategy)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_a_seek_moves_the_partitions_with_nothing_committed_too() -> None:
    kafka = SeekingConsumer({"a": 120, "b": 0, "c": None, "gone": None}, {"a", "b", "c"})
    assert await seek_to_committed(kafka) == {"a": 120, "b": 0, "c": None, "gone": None}
    assert kafka.position == {"a": 120, "b": 0, "c": ("reset", OffsetResetStrategy.EARLIEST),
                              "gone": "after the dropped fetch"}  # revoked meanwhile: not ours


async def test_without_a_reset_policy_a_partition_with_nothing_committed_is_left_alone() -> None:
    kafka = SeekingConsumer({"c": None}, {"c"}, strategy=OffsetResetStrategy.NONE)
    await seek_to_committed(kafka)
    assert kafka.position == {"c": "after the dropped fetch"}
