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
- Faust's consumer keeps filling the next batch, a fetch at a time (streamproc.worker.delivery),
  while one is handled (during its awaits on Redis and Kafka), up to ``size`` messages; then
  it waits for that batch to be taken.

An event's age is the worker's clock minus the message's Kafka timestamp (the producer's create
time, unless the topic keeps log-append time). Age alone would trust the producers' clocks: one
lagging by more than ``behind`` would make a worker that keeps up look behind, and every batch
would wait ``within_behind``. So an old newest event counts as behind only when its partition
also holds at least :data:`BEHIND_BACKLOG` more messages (the consumer's high watermark past
it, when the caller passes ``backlog``): a worker that keeps up has next to nothing waiting. A
producer whose clock runs ahead makes a backlog look fresh: batches fill as with
``take_events``.

Acknowledgements are as in ``take_events``: the messages of a batch are acknowledged (Faust's
``Consumer.ack``) when the ``async for`` body that handled it has ended, so Faust commits only
offsets whose batches were handled; messages still in the buffer when the worker stops are not
acknowledged, and are read again by whoever takes the partition. While ``forget()`` holds (the
worker gave up a batch it could not finish, streamproc.worker.lifecycle), a batch's messages
are forgotten instead: marked done, so that Faust's stop stops waiting for them, but never
acknowledged, so that no offset from them on is committed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from streamproc.worker.delivery import FetchBuffer
from streamproc.worker.delivery import forget as forget_messages

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
    buffer: FetchBuffer, size: int, within: float, behind: float, within_behind: float,
    clock: Callable[[], float] = time.time,
    backlog: Callable[[Any], int | None] | None = None,
    on_behind: Callable[[], None] | None = None,
    forget: Callable[[], bool] | None = None,
    generation: Callable[[], int | None] = lambda: None,
    stopping: Callable[[], bool] = lambda: False,
) -> AsyncIterator[list[Any]]:
    """Yield lists of at most ``size`` Kafka messages (Faust's) of ``buffer``, which Faust's
    consumer fills a fetch at a time (streamproc.worker.delivery), as the module docstring
    says; times in seconds. ``backlog(message)`` is how many messages its partition holds after
    it (None: unknown); ``on_behind()`` is called for every batch that waits ``within_behind``;
    ``generation()`` is the consumer group's current generation (messages of an earlier one are
    dropped); the loop ends once ``stopping()`` holds."""
    loop = asyncio.get_running_loop()
    buffer.open()
    try:
        while not stopping():
            began = loop.time()
            if not buffer.messages:
                # The timeout only makes the loop look at `stopping` now and then.
                await _wait(buffer.arrived, max(within, within_behind, 0.1))
                if not buffer.messages:
                    continue
            if len(buffer.messages) < size:
                # Fill for `within` since the loop was free (as take_events), or `within_behind`
                # when the newest message says the worker is behind.
                late = is_behind(buffer.messages[-1], clock(), behind, backlog)
                if late and on_behind is not None:
                    on_behind()
                deadline = began + (within_behind if late else within)
                while len(buffer.messages) < size and (wait := deadline - loop.time()) > 0:
                    buffer.arrived.clear()  # set again by the next fetch put in
                    await _wait(buffer.arrived, wait)
            batch = buffer.take(size, generation())
            if not batch:
                continue
            try:
                yield batch
            finally:
                if forget is not None and forget():
                    forget_messages(batch, buffer.consumer)
                else:
                    buffer.ack(batch)
    finally:
        buffer.close()


async def _wait(event: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        pass
