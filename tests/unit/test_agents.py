from __future__ import annotations

import asyncio

import orjson
import pytest
import redis.exceptions

from streamproc.processor import BatchResult, Processor
from streamproc.settings import Settings, Topics
from streamproc.state.memory import MemoryStore
from streamproc.worker import agents
from streamproc.worker.agents import (
    STOP_CHECK_S,
    BatchAbandonedError,
    BatchStats,
    consume,
    handle_batch,
    retry_transient,
)
from streamproc.worker.app import create_app
from streamproc.worker.lifecycle import EXIT_UNFINISHED, Lifecycle

from .helpers import SETTINGS, Partition, event


class ListEmitter:
    def __init__(self) -> None:
        self.results: list[BatchResult] = []
        self.arrived = asyncio.Event()

    async def emit(self, result: BatchResult) -> None:
        self.results.append(result)
        self.arrived.set()

    def decisions(self) -> list[dict]:
        return [orjson.loads(v) for r in self.results for _, v in r.decisions]

    def deadletters(self) -> list[dict]:
        return [orjson.loads(v) for r in self.results for _, v in r.deadletters]


async def test_agent_through_faust_test_context():
    # Faust's test channel names every message's topic "<internal>": call that the browsing
    # topic so the decoder accepts browsing events from it.
    settings = Settings(topics=Topics.with_prefix("streamproc.", {"browsing": "<internal>"}),
                        consent_defaults="personalisation=granted")
    store, emitter = MemoryStore(), ListEmitter()
    worker = create_app(settings, store_factory=lambda: store, emitter=emitter)
    app = worker.app
    app.finalize()
    app.flow_control.resume()
    agent = app.agents["streamproc.process_events"]
    async with agent.test_context() as a:
        await a.put(orjson.dumps(event("cart_add", customer="c7")), key=b"c7")
        await a.put(b"definitely not json", key=b"c7")
        await a.put(orjson.dumps(event("search", customer="c7")), key=b"c7")
        async with asyncio.timeout(10):
            while len(emitter.deadletters()) < 1 or len(emitter.decisions()) < 1 or \
                    worker.stats.messages < 3:
                emitter.arrived.clear()
                await emitter.arrived.wait()
    [decision] = emitter.decisions()
    assert decision["customer_id"] == "c7" and decision["action"]["id"] == "cart_reminder"
    [dead] = emitter.deadletters()
    assert dead["reason"] == "invalid_json"
    found = await store.read_profile("c7")
    assert found is not None and found["profile"]["counts"]["search"] == 1
    # The worker's parts, as create_app returns them: the agent's scorer serves the metrics.
    assert worker.scorer is not None and worker.worker_id
    assert worker.metrics.value("streamproc_events_total", topic="<internal>") == 3


class FlakyProcessor(Processor):
    """Fails with a transient Redis error `transient` times, and always on message `poison`."""

    def __init__(self, transient: int, poison: int | None = None) -> None:
        super().__init__(SETTINGS, MemoryStore())
        self.transient = transient
        self.poison = poison

    async def process(self, messages):
        if self.transient:
            self.transient -= 1
            raise redis.exceptions.ConnectionError("Redis went away")
        if any(m.offset == self.poison for m in messages):
            raise ValueError("unexpected bug")
        return await super().process(messages)


async def test_transient_errors_are_retried_until_they_pass():
    proc, emitter, stats = FlakyProcessor(transient=3), ListEmitter(), BatchStats()
    part = Partition()
    await handle_batch([part.message(event("cart_add"))], proc, emitter, stats)
    assert stats.retries == 3 and len(emitter.decisions()) == 1


async def test_unexpected_batch_failure_dead_letters_only_the_guilty_message():
    proc, emitter, stats = FlakyProcessor(transient=0, poison=1), ListEmitter(), BatchStats()
    part = Partition()
    msgs = [part.message(event("cart_add", minute=i)) for i in range(3)]
    await handle_batch(msgs, proc, emitter, stats)
    assert [d["trigger"]["offset"] for d in emitter.decisions()] == [0, 2]
    [dead] = emitter.deadletters()
    assert dead["reason"] == "processing_error" and dead["source"]["offset"] == 1
    assert "unexpected bug" in dead["error"]


async def test_backoff_grows_and_is_capped():
    delays: list[float] = []
    failures = iter(range(10))

    async def call() -> None:
        if next(failures, None) is not None:
            raise redis.exceptions.TimeoutError("slow")

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    await retry_transient("x", call, BatchStats(), sleep=fake_sleep)
    assert delays[:3] == [0.1, 0.2, 0.4] and max(delays) == 5.0 and len(delays) == 10


async def test_a_stopping_worker_publishes_the_batch_in_hand_before_it_is_acknowledged():
    class SlowEmitter(ListEmitter):
        def __init__(self) -> None:
            super().__init__()
            self.started = asyncio.Event()
            self.release = asyncio.Event()

        async def emit(self, result: BatchResult) -> None:
            self.started.set()
            await self.release.wait()
            await super().emit(result)

    acked: list[int] = []
    part = Partition()

    async def batches():
        for minute in range(3):
            try:
                yield [part.message(event("cart_add", minute=minute))]
            finally:
                acked.append(minute)  # what Faust's take_events does, even on cancellation

    emitter = SlowEmitter()
    proc = Processor(SETTINGS, MemoryStore())
    source = batches()
    task = asyncio.ensure_future(consume(source, proc, emitter, BatchStats()))
    await emitter.started.wait()
    task.cancel()  # SIGTERM while the first batch is being published
    await asyncio.sleep(0)
    assert not task.done() and acked == []  # still publishing, not acknowledged yet
    emitter.release.set()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert task.cancelled() and len(emitter.decisions()) == 1  # published before it stopped
    await source.aclose()  # the stream closes the batch generator: now it acknowledges
    assert acked == [0]


async def test_a_stopping_worker_gives_up_a_call_it_cannot_finish_within_a_backoff():
    stopping = False
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        nonlocal stopping
        slept.append(seconds)
        stopping = len(slept) >= 3  # the stop comes during a backoff

    async def call() -> None:
        raise redis.exceptions.ConnectionError("Redis went away")

    stats = BatchStats()
    with pytest.raises(BatchAbandonedError, match="batch failed .*Redis went away"):
        await retry_transient("batch", call, stats, sleep=sleep, stopping=lambda: stopping)
    assert len(slept) == 3 and all(s <= STOP_CHECK_S for s in slept)  # looked in slices
    assert stats.retries == 1


async def test_a_batch_given_up_is_neither_split_nor_dead_lettered():
    proc, emitter, stats = FlakyProcessor(transient=1000), ListEmitter(), BatchStats()
    with pytest.raises(BatchAbandonedError):
        await handle_batch([Partition().message(event("cart_add"))], proc, emitter, stats,
                           stopping=lambda: True)
    assert stats.retries == 0 and stats.failures == 0 and not emitter.results


async def test_consume_leaves_the_unfinished_batch_and_every_later_one_unapplied():
    lifecycle = Lifecycle(stopping=lambda: True)  # the worker stops while Redis is away
    part = Partition()
    done: list[int] = []

    async def batches():
        for minute in range(3):
            yield [part.message(event("page_view", customer="g1", minute=minute))]
            done.append(minute)

    proc = FlakyProcessor(transient=1)  # the first batch fails once; a retry would pass
    emitter = ListEmitter()
    await consume(batches(), proc, emitter, BatchStats(), lifecycle=lifecycle)
    assert lifecycle.gave_up and "Redis went away" in lifecycle.gave_up
    assert done == [0, 1, 2] and not emitter.results  # later batches skipped, not applied
    assert await proc.store.read_profile("g1") is None
    assert lifecycle.exit_code == EXIT_UNFINISHED
    assert "not committed" in (lifecycle.exit_message() or "")


def test_a_worker_asked_to_stop_stops_and_says_why():
    asked: list[bool] = []
    lifecycle = Lifecycle(request=lambda: asked.append(True))
    assert lifecycle.exit_code == 0 and lifecycle.exit_message() is None
    lifecycle.stop("Redis unreachable for 60 s")
    assert asked == [True] and lifecycle.exit_code == EXIT_UNFINISHED
    assert lifecycle.exit_message() == "worker stopped: Redis unreachable for 60 s"


async def test_a_batch_that_does_not_end_says_where_it_waits(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # A worker whose batch never ends reads nothing more: without this warning its log would
    # look like a worker that stopped fetching.
    monkeypatch.setattr(agents, "SLOW_BATCH_S", 0.05)

    class StuckEmitter(ListEmitter):
        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()

        async def emit(self, result: BatchResult) -> None:
            await self.release.wait()
            await super().emit(result)

    async def batches():
        yield [Partition().message(event("cart_add"))]

    emitter = StuckEmitter()
    task = asyncio.ensure_future(consume(batches(), Processor(SETTINGS, MemoryStore()), emitter,
                                         BatchStats()))
    async with asyncio.timeout(5):
        while "has been running" not in caplog.text:
            await asyncio.sleep(0.02)
    assert not task.done()
    assert "StuckEmitter.emit" in caplog.text and "handle_batch" in caplog.text
    emitter.release.set()
    await task  # the batch ends as before, published
    assert len(emitter.decisions()) == 1
