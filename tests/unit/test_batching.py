"""take_batches on a stand-in for a Faust stream: the few members it uses, the stream's passive
drainer played by the test (each `feed` runs the batch processor as Faust's drainer would)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pytest

from streamproc.worker.batching import take_batches

NOW = 1_000_000.0


@dataclass
class Message:
    offset: int
    timestamp: float
    acked: bool = False


@dataclass
class Event:
    message: Message


class FakeStream:
    """What take_batches touches of a faust.Stream, with mode's waiting semantics."""

    def __init__(self) -> None:
        self.processors: list[Any] = []
        self.current_event: Event | None = None
        self.enable_acks = True
        self.should_stop = False
        self.acked: list[int] = []
        self.passive: Any = None
        self.channel = object()
        self.log = logging.getLogger("fake-stream")
        self.stopped = asyncio.Event()

    def add_processor(self, processor: Any) -> None:
        self.processors.append(processor)

    def _enable_passive(self, channel: Any) -> None:
        self.passive = channel

    async def wait_for_stopped(self, event: asyncio.Event, timeout: float | None = None) -> bool:
        waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.stopped.wait())]
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        return self.stopped.is_set()

    async def ack(self, event: Event) -> None:
        self.acked.append(event.message.offset)

    async def crash(self, exc: BaseException) -> None:
        raise AssertionError(f"stream crashed: {exc!r}")

    async def feed(self, offset: int, age_s: float) -> None:
        """Faust's drainer delivering one message: current_event set, processors run."""
        self.current_event = Event(Message(offset, NOW - age_s))
        for processor in self.processors:
            await processor(self.current_event)

    def stop(self) -> None:
        self.should_stop = True
        self.stopped.set()


def batches_of(stream: FakeStream, size: int, within: float = 0.005,
               within_behind: float = 5.0, backlog: Any = None, on_behind: Any = None,
               forget: Any = None) -> Any:
    """Behind: the newest event older than 0.2 s (and, with ``backlog``, 10 more waiting)."""
    return take_batches(stream, size, within, 0.2, within_behind, clock=lambda: NOW,
                        backlog=backlog, on_behind=on_behind, forget=forget).__aiter__()


async def started(it: Any) -> asyncio.Future[Any]:
    """The first batch, asked for: by then the batch processor is on the stream."""
    first = asyncio.ensure_future(it.__anext__())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    return first


async def test_acks_are_taken_over_and_fresh_events_wait_only_the_short_wait() -> None:
    stream = FakeStream()
    it = batches_of(stream, size=10)
    first = await started(it)
    assert stream.enable_acks is False and stream.passive is stream.channel
    await stream.feed(0, age_s=0.01)
    await stream.feed(1, age_s=0.01)
    batch = await asyncio.wait_for(first, 1)  # not full: after 5 ms, not the 5 s of behind
    assert [e.message.offset for e in batch] == [0, 1]
    assert stream.acked == []  # not before the batch was handled
    second = asyncio.ensure_future(it.__anext__())
    await asyncio.sleep(0)
    assert stream.acked == [0, 1]
    second.cancel()


async def test_a_worker_behind_fills_its_batch_up_to_size() -> None:
    stream = FakeStream()
    it = batches_of(stream, size=3)  # 5 s when behind: only a full batch ends the wait
    first = await started(it)
    await stream.feed(0, age_s=2.0)
    await asyncio.sleep(0.05)
    assert not first.done()  # old events: the batch waits to fill, past the 5 ms wait
    await stream.feed(1, age_s=2.0)
    await stream.feed(2, age_s=2.0)
    batch = await asyncio.wait_for(first, 1)
    assert [e.message.offset for e in batch] == [0, 1, 2]


async def test_a_batch_behind_goes_after_within_when_it_does_not_fill() -> None:
    stream = FakeStream()
    it = batches_of(stream, size=100, within_behind=0.02)
    first = await started(it)
    await stream.feed(0, age_s=2.0)
    batch = await asyncio.wait_for(first, 1)
    assert [e.message.offset for e in batch] == [0]


async def test_the_next_batch_fills_while_one_is_handled_and_stops_at_size() -> None:
    stream = FakeStream()
    it = batches_of(stream, size=2)
    first = await started(it)
    await stream.feed(0, age_s=0.0)
    assert [e.message.offset for e in await asyncio.wait_for(first, 1)] == [0]
    # While batch [0] is handled, the drainer goes on: two fit, the third waits for room.
    await stream.feed(1, age_s=0.0)
    await stream.feed(2, age_s=0.0)
    third = asyncio.ensure_future(stream.feed(3, age_s=0.0))
    await asyncio.sleep(0.01)
    assert not third.done()
    nxt = await asyncio.wait_for(it.__anext__(), 1)
    assert [e.message.offset for e in nxt] == [1, 2]
    await asyncio.wait_for(third, 1)  # room again: event 3 went into the buffer
    assert stream.acked == [0]
    last = await asyncio.wait_for(it.__anext__(), 1)
    assert [e.message.offset for e in last] == [3]
    assert stream.acked == [0, 1, 2]


async def test_stopping_leaves_buffered_events_unacknowledged() -> None:
    stream = FakeStream()
    it = batches_of(stream, size=1)
    first = await started(it)
    await stream.feed(0, age_s=0.0)
    assert [e.message.offset for e in await asyncio.wait_for(first, 1)] == [0]
    await stream.feed(1, age_s=0.0)  # fills the next batch
    blocked = asyncio.ensure_future(stream.feed(2, age_s=0.0))  # waits for room
    await asyncio.sleep(0)
    stream.stop()
    await asyncio.wait_for(blocked, 1)  # released by the stop, event 2 not buffered
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(it.__anext__(), 1)
    assert stream.acked == [0]  # 1 and 2 are read again after the restart


async def test_old_events_with_nothing_waiting_behind_them_wait_only_the_short_wait() -> None:
    # A producer whose clock lags: the events look 2 s old, but their partition holds nothing
    # more, so the worker keeps up and the batch goes after 5 ms, not the 5 s of behind.
    stream, behind = FakeStream(), []
    seen: list[int] = []

    def backlog(message: Message) -> int:
        seen.append(message.offset)
        return 9  # under BEHIND_BACKLOG

    it = batches_of(stream, size=10, backlog=backlog, on_behind=lambda: behind.append(1))
    first = await started(it)
    await stream.feed(0, age_s=2.0)
    await stream.feed(1, age_s=2.0)
    batch = await asyncio.wait_for(first, 1)
    assert [e.message.offset for e in batch] == [0, 1]
    assert seen and behind == []


async def test_old_events_with_a_backlog_behind_them_fill_the_batch_and_are_counted() -> None:
    stream, behind = FakeStream(), []
    it = batches_of(stream, size=3, backlog=lambda m: 5000, on_behind=lambda: behind.append(1))
    first = await started(it)
    await stream.feed(0, age_s=2.0)
    await asyncio.sleep(0.05)
    assert not first.done()  # behind: the batch waits to fill
    await stream.feed(1, age_s=2.0)
    await stream.feed(2, age_s=2.0)
    assert [e.message.offset for e in await asyncio.wait_for(first, 1)] == [0, 1, 2]
    assert behind == [1]


async def test_an_unknown_backlog_leaves_the_age_to_decide() -> None:
    stream = FakeStream()
    it = batches_of(stream, size=3, backlog=lambda m: None)
    first = await started(it)
    await stream.feed(0, age_s=2.0)
    await asyncio.sleep(0.05)
    assert not first.done()
    first.cancel()


def test_partition_backlog_is_the_high_watermark_past_the_message() -> None:
    from types import SimpleNamespace

    from streamproc.worker.app import partition_backlog

    ends: dict[str, int | None] = {"t0": 10, "t1": None}

    def highwater(tp: str) -> int | None:
        if tp not in ends:
            raise AssertionError("Partition is not assigned")  # aiokafka's, after a revoke
        return ends[tp]

    backlog = partition_backlog(SimpleNamespace(consumer=SimpleNamespace(highwater=highwater)))
    assert backlog(SimpleNamespace(tp="t0", offset=3)) == 6  # offsets 4 to 9 wait
    assert backlog(SimpleNamespace(tp="t0", offset=9)) == 0
    assert backlog(SimpleNamespace(tp="t1", offset=0)) is None  # no fetch yet
    assert backlog(SimpleNamespace(tp="t2", offset=0)) is None  # revoked


async def test_batches_given_up_are_forgotten_not_acknowledged() -> None:
    stream = FakeStream()
    gave_up = False
    it = batches_of(stream, size=10, forget=lambda: gave_up)
    first = await started(it)
    await stream.feed(0, age_s=0.01)
    batch = await asyncio.wait_for(first, 1)
    gave_up = True  # the handler could not finish it: the worker stops without Redis
    second = asyncio.ensure_future(it.__anext__())
    await asyncio.sleep(0)
    assert stream.acked == []  # never acknowledged: its offset is not committed
    assert batch[0].message.acked is True  # but done, for Faust's wait at the stop
    second.cancel()
