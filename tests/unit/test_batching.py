"""take_batches on a real FetchBuffer, filled by the test as Faust's consumer would (a fetch's
messages at a time), acknowledged through a stand-in for Faust's consumer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from streamproc.worker.batching import take_batches
from streamproc.worker.delivery import FetchBuffer

NOW = 1_000_000.0


@dataclass(eq=False)
class Message:
    offset: int
    timestamp: float
    generation_id: int = 0
    acked: bool = False
    tracked: bool = False


@dataclass
class FakeConsumer:
    """What the buffer touches of Faust's consumer: the unacknowledged set and ``ack``."""

    _unacked_messages: set[Any] = field(default_factory=set)
    acked: list[int] = field(default_factory=list)
    flow_active: bool = True

    def ack(self, message: Message) -> None:
        message.acked = True
        self._unacked_messages.discard(message)
        self.acked.append(message.offset)


class Source:
    """A buffer, the consumer that fills it, and the stop flag the batch loop reads."""

    def __init__(self, size: int) -> None:
        self.buffer = FetchBuffer(["t"], size)
        self.consumer = FakeConsumer()
        self.stopped = False
        self.generation = 0

    async def fetch(self, *offsets: int, age_s: float = 0.0, generation: int = 0) -> None:
        await self.buffer.put([Message(o, NOW - age_s, generation) for o in offsets],
                              self.consumer)

    @property
    def acked(self) -> list[int]:
        return self.consumer.acked


def batches_of(source: Source, within: float = 0.005, within_behind: float = 5.0,
               backlog: Any = None, on_behind: Any = None, forget: Any = None) -> Any:
    """Behind: the newest event older than 0.2 s (and, with ``backlog``, 10 more waiting)."""
    return take_batches(source.buffer, source.buffer.capacity, within, 0.2, within_behind,
                        clock=lambda: NOW, backlog=backlog, on_behind=on_behind, forget=forget,
                        generation=lambda: source.generation,
                        stopping=lambda: source.stopped).__aiter__()


async def started(it: Any) -> asyncio.Future[Any]:
    """The first batch, asked for."""
    first = asyncio.ensure_future(it.__anext__())
    await asyncio.sleep(0)
    return first


def offsets(batch: list[Message]) -> list[int]:
    return [m.offset for m in batch]


async def test_a_batch_is_acknowledged_after_it_was_handled_and_fresh_ones_wait_short() -> None:
    source = Source(10)
    it = batches_of(source)
    first = await started(it)
    await source.fetch(0, 1, age_s=0.01)
    assert source.consumer._unacked_messages  # tracked, pending acknowledgement
    batch = await asyncio.wait_for(first, 1)  # not full: after 5 ms, not the 5 s of behind
    assert offsets(batch) == [0, 1]
    assert source.acked == []  # not before the batch was handled
    second = asyncio.ensure_future(it.__anext__())
    await asyncio.sleep(0)
    assert source.acked == [0, 1] and not source.consumer._unacked_messages
    second.cancel()


async def test_a_worker_behind_fills_its_batch_up_to_size() -> None:
    source = Source(3)
    it = batches_of(source)  # 5 s when behind: only a full batch ends the wait
    first = await started(it)
    await source.fetch(0, age_s=2.0)
    await asyncio.sleep(0.05)
    assert not first.done()  # old events: the batch waits to fill, past the 5 ms wait
    await source.fetch(1, 2, 3, age_s=2.0)
    assert offsets(await asyncio.wait_for(first, 1)) == [0, 1, 2]
    assert offsets(source.buffer.messages) == [3]  # fetched beyond the batch: the next one's


async def test_a_batch_behind_goes_after_within_when_it_does_not_fill() -> None:
    source = Source(100)
    it = batches_of(source, within_behind=0.02)
    first = await started(it)
    await source.fetch(0, age_s=2.0)
    assert offsets(await asyncio.wait_for(first, 1)) == [0]


async def test_the_next_batch_fills_while_one_is_handled_and_the_fetcher_waits_for_room() -> None:
    source = Source(2)
    it = batches_of(source)
    first = await started(it)
    await source.fetch(0)
    assert offsets(await asyncio.wait_for(first, 1)) == [0]
    # While batch [0] is handled, the fetcher goes on until the buffer holds a batch.
    await source.fetch(1, 2)
    third = asyncio.ensure_future(source.fetch(3))
    await asyncio.sleep(0.01)
    assert not third.done()
    assert offsets(await asyncio.wait_for(it.__anext__(), 1)) == [1, 2]
    await asyncio.wait_for(third, 1)  # room again: message 3 went into the buffer
    assert source.acked == [0]
    assert offsets(await asyncio.wait_for(it.__anext__(), 1)) == [3]
    assert source.acked == [0, 1, 2]


async def test_stopping_leaves_buffered_messages_unacknowledged_and_done() -> None:
    source = Source(1)
    it = batches_of(source)
    first = await started(it)
    await source.fetch(0)
    assert offsets(await asyncio.wait_for(first, 1)) == [0]
    await source.fetch(1)  # fills the next batch
    blocked = asyncio.ensure_future(source.fetch(2))  # waits for room
    await asyncio.sleep(0)
    source.stopped = True
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(it.__anext__(), 1)
    await asyncio.wait_for(blocked, 1)  # released by the stop, message 2 not buffered
    assert source.acked == [0]  # 1 and 2 are read again after the restart
    assert not source.consumer._unacked_messages  # Faust's stop does not wait for them
    assert source.buffer.messages == []


async def test_messages_of_an_earlier_generation_are_forgotten() -> None:
    # Fetched before a rebalance: their partition may have another owner now.
    source = Source(10)
    it = batches_of(source)
    first = await started(it)
    await source.fetch(0, 1, generation=1)
    source.generation = 2
    await source.fetch(2, generation=2)
    assert offsets(await asyncio.wait_for(first, 1)) == [2]
    nxt = asyncio.ensure_future(it.__anext__())
    await asyncio.sleep(0)
    assert source.acked == [2] and not source.consumer._unacked_messages
    nxt.cancel()


async def test_a_fetch_larger_than_the_room_waits_and_a_rebalance_forgets_what_waits() -> None:
    source = Source(2)
    put = asyncio.ensure_future(source.fetch(0, 1, 2, 3, 4))
    await asyncio.sleep(0.01)
    assert offsets(source.buffer.messages) == [0, 1] and not put.done()
    assert len(source.consumer._unacked_messages) == 2  # tracked: only what is in the buffer
    # A rebalance: Faust stops the flow (the rest of the fetch stays out), then waits for the
    # tracked messages, of which only the batch in hand is left.
    source.consumer.flow_active = False
    source.buffer.clear()
    await asyncio.wait_for(put, 1)
    assert not source.consumer._unacked_messages
    assert source.acked == []  # nothing acknowledged: read again from the committed offsets


async def test_old_events_with_nothing_waiting_behind_them_wait_only_the_short_wait() -> None:
    # A producer whose clock lags: the events look 2 s old, but their partition holds nothing
    # more, so the worker keeps up and the batch goes after 5 ms, not the 5 s of behind.
    source, behind = Source(10), []
    seen: list[int] = []

    def backlog(message: Message) -> int:
        seen.append(message.offset)
        return 9  # under BEHIND_BACKLOG

    it = batches_of(source, backlog=backlog, on_behind=lambda: behind.append(1))
    first = await started(it)
    await source.fetch(0, 1, age_s=2.0)
    assert offsets(await asyncio.wait_for(first, 1)) == [0, 1]
    assert seen and behind == []


async def test_old_events_with_a_backlog_behind_them_fill_the_batch_and_are_counted() -> None:
    source, behind = Source(3), []
    it = batches_of(source, backlog=lambda m: 5000, on_behind=lambda: behind.append(1))
    first = await started(it)
    await source.fetch(0, age_s=2.0)
    await asyncio.sleep(0.05)
    assert not first.done()  # behind: the batch waits to fill
    await source.fetch(1, 2, age_s=2.0)
    assert offsets(await asyncio.wait_for(first, 1)) == [0, 1, 2]
    assert behind == [1]


async def test_an_unknown_backlog_leaves_the_age_to_decide() -> None:
    source = Source(3)
    it = batches_of(source, backlog=lambda m: None)
    first = await started(it)
    await source.fetch(0, age_s=2.0)
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
    source = Source(10)
    gave_up = False
    it = batches_of(source, forget=lambda: gave_up)
    first = await started(it)
    await source.fetch(0, age_s=0.01)
    batch = await asyncio.wait_for(first, 1)
    gave_up = True  # the handler could not finish it: the worker stops without Redis
    second = asyncio.ensure_future(it.__anext__())
    await asyncio.sleep(0)
    assert source.acked == []  # never acknowledged: its offset is not committed
    assert batch[0].acked is True  # but done, for Faust's wait at the stop
    assert not source.consumer._unacked_messages
    second.cancel()
