"""The thin Faust side: batches of messages in, the processor, records out, errors contained.

Faust acknowledges a message even when the agent raised (faust-streaming/faust#315), so nothing
may escape the loop: a bad message is dead-lettered by the processor, a transient Redis or Kafka
error is retried with backoff until it passes, and any other failure of a batch makes the batch
run again one message at a time so that only the guilty message is dead-lettered.

The one exception is a stop: once the worker stops (``stopping()``), a call that fails is not
retried any more; the batch is given up (:class:`BatchAbandonedError`) and left unacknowledged
(streamproc.worker.lifecycle says why and what follows), so that SIGTERM stops a worker whose
Redis is gone within a fraction of a second instead of never.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import redis.exceptions
from aiokafka.errors import KafkaError

from streamproc.errors import StreamprocError
from streamproc.events.codec import RawMessage, deadletter_key, deadletter_record
from streamproc.processor import BatchResult, Processor, StateConflictError

if TYPE_CHECKING:
    from streamproc.worker.lifecycle import Lifecycle
    from streamproc.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    # Redis Cluster, while a failover promotes a replica (a few seconds) or slots move: the
    # cluster client's own retries ran out, the next attempt finds the new primary.
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.AskError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.RedisClusterUnreachableError,
    KafkaError,
    StateConflictError,
    OSError,
)
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
# How often a backoff looks whether the worker stops meanwhile.
STOP_CHECK_S = 0.1
# A batch still running after this long is logged, with where it waits, and again every as long:
# the worker reads nothing more meanwhile (its fetch buffer stays full), so a batch that never
# ends would otherwise look like a worker that stopped fetching, with nothing in its log.
SLOW_BATCH_S = 30.0


class BatchAbandonedError(StreamprocError):
    """A batch was given up unfinished because the worker stops while it cannot be done."""


class Emitter(Protocol):
    """Publishes a batch's records and returns once the broker has them."""

    async def emit(self, result: BatchResult) -> None: ...


@dataclass
class BatchStats:
    batches: int = 0
    messages: int = 0
    decisions: int = 0
    deadletters: int = 0
    retries: int = 0
    # Batches that failed as a whole (then retried one message at a time), and when the last
    # batch was done (epoch seconds; 0: none yet): for the heartbeat and `streamproc status`.
    failures: int = 0
    last_batch_at: float = 0.0


async def retry_transient(
    what: str, call: Callable[[], Awaitable[None]], stats: BatchStats,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    metrics: WorkerMetrics | None = None,
    stopping: Callable[[], bool] | None = None,
) -> None:
    """Run ``call`` until it succeeds, backing off on transient errors; other errors propagate.
    Once ``stopping()`` holds, a transient error raises BatchAbandonedError instead (seen
    within STOP_CHECK_S of a backoff)."""
    delay = BACKOFF_FIRST_S
    while True:
        try:
            await call()
            return
        except TRANSIENT_ERRORS as exc:
            error = f"{what} failed ({type(exc).__name__}: {exc})"
            if stopping is not None and stopping():
                raise BatchAbandonedError(error) from exc
            stats.retries += 1
            if metrics is not None:
                metrics.retries.inc()
            log.warning("%s; retrying in %.1fs", error, delay)
            if stopping is None:
                await sleep(delay)
            else:
                until = time.monotonic() + delay
                while not stopping() and (left := until - time.monotonic()) > 0:
                    await sleep(min(STOP_CHECK_S, left))
                if stopping():
                    raise BatchAbandonedError(error) from exc
            delay = min(delay * 2, BACKOFF_MAX_S)


async def handle_batch(
    messages: Sequence[RawMessage], processor: Processor, emitter: Emitter, stats: BatchStats,
    metrics: WorkerMetrics | None = None, stopping: Callable[[], bool] | None = None,
) -> None:
    """Process and publish one batch; returns only when every message is accounted for, or
    raises BatchAbandonedError when the worker stops while the batch cannot be done."""
    started = time.perf_counter()

    async def run(chunk: Sequence[RawMessage]) -> None:
        result = await processor.process(chunk)
        if metrics is not None:
            metrics.on_applied(result)
        await emitter.emit(result)
        await processor.settle(result)  # published: the timers it fired are done
        stats.decisions += len(result.decisions)
        stats.deadletters += len(result.deadletters)
        if metrics is not None:
            metrics.on_published(chunk, result, time.perf_counter() - started)

    stats.batches += 1
    stats.messages += len(messages)
    try:
        await retry_transient("batch", lambda: run(messages), stats, metrics=metrics,
                              stopping=stopping)
        stats.last_batch_at = time.time()
        return
    except BatchAbandonedError:
        raise
    except Exception:
        stats.failures += 1
        log.exception("batch of %d failed; processing it one message at a time", len(messages))
    for msg in messages:
        started = time.perf_counter()
        try:
            await retry_transient("message", lambda m=msg: run([m]),  # type: ignore[misc]
                                  stats, metrics=metrics, stopping=stopping)
        except BatchAbandonedError:
            raise
        except Exception as exc:
            log.exception("message %s:%d dead-lettered", msg.source, msg.offset)
            record = deadletter_record(msg, "processing_error", f"{type(exc).__name__}: {exc}",
                                       time.time_ns() // 1_000_000)
            await retry_transient(
                "dead letter", lambda r=record, m=msg: emitter.emit(  # type: ignore[misc]
                    BatchResult(deadletters=[(deadletter_key(m), r)])), stats, metrics=metrics,
                stopping=stopping)
            stats.deadletters += 1
            if metrics is not None:
                metrics.count_deadletters([record])
                metrics.events.labels(msg.topic).inc()
    stats.last_batch_at = time.time()


async def consume(
    batches: AsyncIterator[Sequence[RawMessage]], processor: Processor, emitter: Emitter,
    stats: BatchStats, metrics: WorkerMetrics | None = None,
    lifecycle: Lifecycle | None = None,
) -> None:
    """Handle batch after batch. A worker that stops (SIGTERM cancels the agent) finishes the
    batch in hand first: Faust acknowledges a batch when its loop body ends, even by
    cancellation, so a batch cut between its state write and its publish would never be
    read again, and its decisions and observations would be lost.

    With a ``lifecycle``, a batch that cannot be finished once the worker stops is given up
    (``lifecycle.gave_up``): it and every batch after it are skipped, unapplied, and the batch
    source (streamproc.worker.batching) forgets them instead of acknowledging them. Applying a
    later batch would record offsets past the unapplied one, which would then be skipped as
    already applied when read again."""
    stopping = None if lifecycle is None else lifecycle.stopping
    skipped = 0
    async for messages in batches:
        if lifecycle is not None and lifecycle.gave_up is not None:
            skipped += len(messages)
            log.info("stopping: %d messages after the unfinished batch left unapplied", skipped)
            continue
        batch = asyncio.ensure_future(handle_batch(messages, processor, emitter, stats, metrics,
                                                   stopping))
        try:
            await _finished(batch, len(messages))
        except BatchAbandonedError as exc:
            _give_up(lifecycle, exc, len(messages))
        except asyncio.CancelledError:
            if not batch.done():
                log.info("stopping: finishing the batch of %d messages in hand", len(messages))
                try:
                    await batch
                except BatchAbandonedError as exc:
                    _give_up(lifecycle, exc, len(messages))
            raise


async def _finished(batch: asyncio.Future[None], size: int) -> None:
    """``batch``'s end, as ``asyncio.shield`` (cancelling the wait leaves the batch running),
    saying every SLOW_BATCH_S while it runs where it waits."""
    started = time.monotonic()
    while not (await asyncio.wait({batch}, timeout=SLOW_BATCH_S))[0]:
        log.warning("a batch of %d messages has been running for %.0f s; nothing more is read "
                    "meanwhile. It waits in %s", size, time.monotonic() - started,
                    " > ".join(awaiting(batch)))
    batch.result()


def awaiting(task: asyncio.Future[None]) -> list[str]:
    """Where a task waits: its coroutines from the outermost, as ``function:line``.

    >>> async def inner(e): await e.wait()
    >>> async def outer(e): await inner(e)
    >>> async def look():
    ...     e = asyncio.Event()
    ...     t = asyncio.ensure_future(outer(e))
    ...     await asyncio.sleep(0)
    ...     where = awaiting(t)
    ...     e.set()
    ...     await t
    ...     return where[:3]
    >>> [w.split(":")[0] for w in asyncio.run(look())]
    ['outer', 'inner', 'Event.wait']
    """
    found: list[str] = []
    current: object = task.get_coro() if isinstance(task, asyncio.Task) else None
    while current is not None and len(found) < 30:
        frame = getattr(current, "cr_frame", None) or getattr(current, "ag_frame", None)
        if frame is None:
            break
        found.append(f"{frame.f_code.co_qualname}:{frame.f_lineno}")
        current = getattr(current, "cr_await", None) or getattr(current, "ag_await", None)
    return found


def _give_up(lifecycle: Lifecycle | None, exc: BatchAbandonedError, size: int) -> None:
    if lifecycle is None:  # nobody set `stopping`: cannot happen
        raise exc
    log.warning("stopping: the batch of %d messages is left unfinished and unacknowledged: %s",
                size, exc)
    lifecycle.give_up(str(exc))
