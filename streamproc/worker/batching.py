"""The worker's batches: fuller while it is behind, no slower than before while it keeps up.

Faust's ``Stream.take_events(n, within)`` hands over a batch when it holds ``n`` events or
``within`` seconds after it started waiting, and takes nothing in while the batch is being
handled. Faust delivers a worker's messages one by one, 7,000 to 12,000 a second on the machines
measured (docs/benchmarks.md), so with a short ``within`` every batch held a few dozen events
even when thousands were waiting: the per-batch costs (Redis round trips, produce requests,
one compressed write per customer) were paid again and again exactly when the worker was behind.
A long ``within`` fills batches but makes every event wait for it when the worker is not behind.

:func:`take_batches` differs in two ways:

- The wait depends on whether the worker is behind. A batch waits ``within`` (counted from when
  the worker was free for it, as in ``take_events``) to fill, unless its newest event was
  produced more than ``behind`` ago with more messages waiting behind it: then the worker is
  working off a backlog, latency is already lost, and the batch waits up to ``within_behind``
  (or until it holds ``size`` events).
  That gave a worker catching up 30-60 % more throughput (``streamproc bench``, in
  docs/benchmarks.md), with the same latency when it keeps up.
- The stream keeps filling the next batch while one is handled (during its awaits on Redis and
  Kafka), up to ``size`` events; then it waits for that batch to be taken.

An event's age is the worker's clock minus the message's Kafka timestamp (the producer's create
time, unless the topic keeps log-append time). Age alone would trust the producers' clocks: one
lagging by more than ``behind`` would make a worker that keeps up look behind, and every batch
would wait ``within_behind``. So an old newest event counts as behind only when its partition
also holds at least :data:`BEHIND_BACKLOG` more messages (the consumer's high watermark past
it, when the caller passes ``backlog``): a worker that keeps up has next to nothing waiting. A
producer whose clock runs ahead makes a backlog look fresh: batches fill as with
``take_events``.

Acknowledgements are as in ``take_events``: the stream's own acks are off, and the events of a
batch are acknowledged when the ``async for`` body that handled it has ended, so Faust commits
only offsets whose batches were handled; events still in the buffer when the worker stops are
not acknowledged, and are read again by whoever takes the partition. While ``forget()`` holds
(the worker gave up a batch it could not finish, streamproc.worker.lifecycle), a batch's events
are forgotten instead: marked done, so that Faust's stop stops waiting for them, but never
acknowledged, so that no offset from them on is committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

# Messages that must wait in the newest event's partition, beyond it, for an old event to mean
# that the worker is behind (a worker that keeps up has the few of one fetch at most).
BEHIND_BACKLOG = 10


def is_fresh(timestamp_s: float | None, now_s: float, fresh_s: float) -> bool:
    """Whether an event with this Kafka timestamp (seconds; None or 0: unknown) was produced
    less than ``fresh_s`` ago. An event of unknown age counts as fresh: no reason to wait.

    >>> is_fresh(100.0, 100.05, 0.2), is_fresh(100.0, 100.5, 0.2), is_fresh(None, 5.0, 0.2)
    (True, False, True)
    """
    return not timestamp_s or now_s - timestamp_s < fresh_s


def is_behind(message: Any, now_s: float, behind_s: float,
              backlog: Callable[[Any], int | None] | None) -> bool:
    """Whether the worker is behind, judged by the newest event's Kafka ``message``: produced
    ``behind_s`` ago or more, and (when ``backlog`` can tell, see the module docstring) at least
    :data:`BEHIND_BACKLOG` more messages waiting in its partition.

    >>> from types import SimpleNamespace as M
    >>> old = M(timestamp=100.0)
    >>> is_behind(old, 101.0, 0.2, None), is_behind(old, 101.0, 0.2, lambda m: 5000)
    (True, True)
    >>> is_behind(old, 101.0, 0.2, lambda m: 0), is_behind(old, 100.1, 0.2, lambda m: 5000)
    (False, False)
    >>> is_behind(old, 101.0, 0.2, lambda m: None)  # unknown backlog: the age decides
    True
    """
    if is_fresh(message.timestamp, now_s, behind_s):
        return False
    waiting = backlog(message) if backlog is not None else None
    return waiting is None or waiting >= BEHIND_BACKLOG


async def take_batches(
    stream: Any, size: int, within: float, behind: float, within_behind: float,
    clock: Callable[[], float] = time.time,
    backlog: Callable[[Any], int | None] | None = None,
    on_behind: Callable[[], None] | None = None,
    forget: Callable[[], bool] | None = None,
) -> AsyncIterator[list[Any]]:
    """Yield lists of at most ``size`` Faust events (``event.message`` is the Kafka message) of
    the Faust ``stream``, as the module docstring says; times in seconds. ``backlog(message)``
    is how many messages its partition holds after it (None: unknown); ``on_behind()`` is
    called for every batch that waits ``within_behind``."""
    events: list[Any] = []
    arrived = asyncio.Event()  # the buffer holds an event
    full = asyncio.Event()  # the buffer holds `size` events
    room = asyncio.Event()  # the buffer has room again
    room.set()
    loop = asyncio.get_running_loop()

    async def add_to_buffer(value: Any) -> Any:
        try:
            event = stream.current_event
            if event is None:
                raise RuntimeError("the batch buffer found no current event")
            while len(events) >= size:  # the next batch is full: wait until it is taken
                room.clear()
                if await stream.wait_for_stopped(room):
                    return value  # stopping: the event is not acknowledged, so read again
            events.append(event)
            arrived.set()
            if len(events) >= size:
                full.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stream.log.exception("Error adding to the batch buffer: %r", exc)
            await stream.crash(exc)
        return value

    # As in Faust's take_events: the stream is drained in the background (the processor above
    # fills the buffer), and acknowledging is left to this loop.
    stream.enable_acks = False
    stream.add_processor(add_to_buffer)
    stream._enable_passive(stream.channel)
    while not stream.should_stop:
        began = loop.time()
        if not events:
            arrived.clear()
            # The timeout only makes the loop look at should_stop now and then.
            await stream.wait_for_stopped(arrived, timeout=max(within, within_behind, 0.1))
            if not events:
                continue
        if len(events) < size:
            # Fill for `within` since the loop was free (as take_events), or `within_behind`
            # when the newest event says the worker is behind.
            late = is_behind(events[-1].message, clock(), behind, backlog)
            if late and on_behind is not None:
                on_behind()
            wait = began + (within_behind if late else within) - loop.time()
            if wait > 0:  # `full` is clear: it is set only with `size` events in the buffer
                await stream.wait_for_stopped(full, timeout=wait)
        batch = events[:size]
        del events[:size]
        full.clear()
        room.set()
        try:
            yield batch
        finally:
            if forget is not None and forget():
                for event in batch:
                    forget_event(event)
            else:
                for event in batch:
                    await stream.ack(event)


def forget_event(event: Any) -> None:
    """Mark a Faust event's message done without acknowledging it: Faust's consumer drops a
    message marked ``acked`` from the messages a stop waits for, while only a real
    acknowledgement puts its offset among those to commit (faust.transport.consumer: ``ack``,
    ``_clean_unacked_messages``, ``_new_offset``); a later message's acknowledgement commits
    nothing past the gap this leaves."""
    event.message.acked = True
