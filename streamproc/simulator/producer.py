"""Send simulated traffic to Kafka at a steady rate: ``streamproc simulate``.

The generator (:mod:`streamproc.simulator.sessions`) decides *what* happens; this module decides
*when it is sent*. Pacing is a token bucket on the event loop's monotonic clock: event ``k`` is
due at ``start + k / rate``, so rounding never accumulates into drift, and sends go out in small
batches (one ``send`` per event, many per loop iteration) rather than one sleep per event. If the
broker stalls, at most one second of backlog is made up afterwards; a longer stall lowers the
achieved rate instead of producing a burst.

Every message is keyed by the customer id (the schemas require the key to equal
``customer_id``), so one customer's events stay in order on one partition.

**Two clocks.** By default every event is stamped with the wall-clock time it is sent at: the
generator decides what happens and in which order, the pace decides when, and a live stack sees
event time follow its own clock (cart timers fire an hour after the cart, decisions are made
when they are asked for). Pages ask for their slots (``slot_request``) and, with ``respond``,
the simulated customers answer the decisions (:mod:`streamproc.simulator.responder`), so the
learning bandit has outcomes within a minute. ``accelerated`` keeps the generator's own clock
(a simulated day per minute or so, for load tests), which would push a live stack's event time
hours ahead: so it writes to topics of its own (:data:`ACCELERATED_PREFIX`), never the stack's.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streamproc.errors import ConfigError, StackError, StreamprocError
from streamproc.kafka_options import producer_options
from streamproc.settings import Settings, Topics
from streamproc.simulator.population import Population
from streamproc.simulator.responder import (
    LIVE_CLICK_DELAY_MS,
    LIVE_CONVERSION_DELAY_MS,
    ResponderStats,
    respond_to_decisions,
)
from streamproc.simulator.sessions import (
    SIMULATED_TOPICS,
    SimEvent,
    format_ts,
    generate_events,
    product_feed,
)

CONNECT_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 30.0
TTY_INTERVAL_S = 0.5
PLAIN_INTERVAL_S = 5.0
MIN_TICK_S = 0.005  # shortest sleep between batches: batches of >= rate * 5 ms events
BURST_S = 1.0  # most backlog (in seconds of traffic) made up after a stall
# Topic prefix of accelerated runs: their event time runs ahead of the clock, so never the
# stack's own topics (a worker there would fire timers and close bandit waits hours early).
ACCELERATED_PREFIX = "streamproc-accelerated."


class SimulationError(StreamprocError):
    """The simulation could not deliver its events."""


class KafkaUnavailableError(StackError):
    """Kafka cannot be reached, or lacks the topics the simulator writes to."""


@dataclass
class SimulationStats:
    """What a run sent. ``by_topic`` is keyed by logical topic (browsing, purchases, profiles)."""

    customers: int
    events: int = 0
    delivered: int = 0
    seconds: float = 0.0
    by_topic: dict[str, int] = field(default_factory=dict)
    by_type: dict[str, int] = field(default_factory=dict)
    active_customers: int = 0  # customers with at least one event sent
    first_ts: str | None = None  # event-time span of what was sent
    last_ts: str | None = None
    interrupted: bool = False
    feedback: str = ""  # the responder's summary, when it ran
    products: int = 0  # product-feed records sent at the start (not counted as events)
    out_of_stock: int = 0  # of which say the product is out of stock
    _seen: set[str] = field(default_factory=set, repr=False, compare=False)

    @property
    def rate(self) -> float:
        """Events sent per wall-clock second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def count(self, event: SimEvent) -> None:
        self.events += 1
        self.by_topic[event.topic] = self.by_topic.get(event.topic, 0) + 1
        type_ = event.event["type"]
        self.by_type[type_] = self.by_type.get(type_, 0) + 1
        if event.key not in self._seen:
            self._seen.add(event.key)
            self.active_customers = len(self._seen)
        if self.first_ts is None:
            self.first_ts = event.event["ts"]
        self.last_ts = event.event["ts"]

    def topics_line(self) -> str:
        return " ".join(f"{t}={self.by_topic.get(t, 0):,}" for t in SIMULATED_TOPICS)

    def summary(self) -> str:
        head = "simulation interrupted" if self.interrupted else "simulation done"
        span = f"; event time {self.first_ts} .. {self.last_ts}" if self.first_ts else ""
        return (
            f"{head}: {self.events:,} events ({self.delivered:,} confirmed) from "
            f"{self.active_customers:,} of {self.customers:,} customers in {self.seconds:.1f}s "
            f"({self.rate:,.1f}/s); {self.topics_line()}{span}"
            + (f"; product feed: {self.products:,} products ({self.out_of_stock:,} out of stock)"
               if self.products else "")
            + (f"\nfeedback: {self.feedback}" if self.feedback else "")
        )


class Pacer:
    """Token bucket without drift: token ``k`` becomes available at ``start + k / rate``.

    The first token is available at once. ``capacity`` caps the backlog: after a stall longer
    than ``capacity / rate`` seconds the schedule restarts instead of bursting to catch up.
    """

    def __init__(self, rate: float, now: float, burst_seconds: float = BURST_S) -> None:
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"rate must be a positive number, got {rate}")
        self.rate = rate
        self.start = now
        self.taken = 0
        self.capacity = max(1, int(rate * burst_seconds))

    def available(self, now: float) -> int:
        """Tokens that may be taken at ``now``."""
        # (the epsilon: waking exactly at delay() must find the token despite float rounding)
        allowed = int((now - self.start) * self.rate + 1e-6) + 1 - self.taken
        if allowed > self.capacity:
            # stalled: restart the schedule so that exactly `capacity` tokens are available now
            self.start = now - (self.taken + self.capacity - 1) / self.rate
            allowed = self.capacity
        return max(0, allowed)

    def take(self, n: int) -> None:
        self.taken += n

    def delay(self, now: float) -> float:
        """Seconds until the next token."""
        return max(0.0, self.start + self.taken / self.rate - now)


class _Progress:
    """A progress line: rewritten in place (``\\r``) on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO | None, stats: SimulationStats, start: float) -> None:
        self.stream = stream
        self.stats = stats
        self.start = start
        isatty = getattr(stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.interval = TTY_INTERVAL_S if self.tty else PLAIN_INTERVAL_S
        self.next_at = start + self.interval
        self.dirty = False  # an unterminated \r line is on the terminal

    def line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        s = self.stats
        return (f"simulate {elapsed:7.1f}s  {s.events:>10,} events  "
                f"{s.events / elapsed:>9,.1f}/s  {s.topics_line()}")

    def maybe(self, now: float) -> None:
        if self.stream is None or now < self.next_at:
            return
        self.next_at = now + self.interval
        if self.tty:
            self.stream.write("\r" + self.line(now) + "\x1b[K")
            self.dirty = True
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def finish(self, summary: str) -> None:
        if self.stream is None:
            return
        if self.dirty:
            self.stream.write("\r\x1b[K")
        self.stream.write(summary + "\n")
        self.stream.flush()


def stamp_now(event: SimEvent, now_ms: int) -> SimEvent:
    """``event`` with its ``ts`` set to ``now_ms`` (wall-clock mode); the rest unchanged.

    >>> e = SimEvent("browsing", "c1", {"event_id": "e1", "ts": "2030-01-01T00:00:00.000Z"})
    >>> stamp_now(e, 0).event["ts"], e.event["ts"]
    ('1970-01-01T00:00:00.000Z', '2030-01-01T00:00:00.000Z')
    """
    return event._replace(event={**event.event, "ts": format_ts(now_ms)})


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class _Sender:
    """Hands events to the producer and keeps the delivery futures until they resolve.

    With ``stamp`` (a wall clock in epoch ms), every event is stamped with it when sent."""

    def __init__(self, producer: Any, topics: Topics, stats: SimulationStats,
                 stamp: Callable[[], int] | None = None) -> None:
        self.producer = producer
        self.topics = topics
        self.stats = stats
        self.stamp = stamp
        self.pending: list[asyncio.Future[Any]] = []

    async def send(self, event: SimEvent) -> None:
        if self.stamp is not None:
            event = stamp_now(event, self.stamp())
        future = await self.producer.send(
            getattr(self.topics, event.topic),
            orjson.dumps(event.event),
            key=event.key.encode(),
        )
        self.pending.append(future)
        self.stats.count(event)

    async def send_feed(self, feed: list[SimEvent]) -> None:
        """The product feed (:func:`~streamproc.simulator.sessions.product_feed`), before the
        customers' events: counted apart from them, stamped with the clock likewise, and
        acknowledged before the first of them is sent."""
        futures = []
        for item in feed:
            if self.stamp is not None:
                item = stamp_now(item, self.stamp())
            futures.append(await self.producer.send(
                getattr(self.topics, item.topic), orjson.dumps(item.event),
                key=item.key.encode()))
        await self.producer.flush()
        try:
            await asyncio.gather(*futures)
        except Exception as exc:  # as prune(): whatever the delivery future failed with
            raise SimulationError(f"Kafka rejected the product feed: {exc!r}") from exc
        self.stats.products = len(feed)
        self.stats.out_of_stock = sum(not item.event["in_stock"] for item in feed)

    def prune(self) -> None:
        """Forget delivered messages; raise on the first failed one."""
        still = []
        for future in self.pending:
            if not future.done():
                still.append(future)
            elif future.cancelled():
                continue
            elif (exc := future.exception()) is not None:
                raise SimulationError(f"Kafka rejected a simulated event: {exc!r}") from exc
            else:
                self.stats.delivered += 1
        self.pending = still

    async def drain(self) -> None:
        """Wait until every message sent so far is acknowledged (or has failed)."""
        await self.producer.flush()
        if self.pending:
            await asyncio.wait(self.pending)
        self.prune()


async def _pump(
    sender: _Sender,
    events: Iterator[SimEvent],
    rate: float,
    duration: float | None,
    max_events: int | None,
    progress: _Progress,
    clock: Callable[[], float],
) -> None:
    """Send ``events`` at ``rate`` until ``duration`` seconds have passed or ``max_events``."""
    start = clock()
    pacer = Pacer(rate, start)
    deadline = start + duration if duration is not None else math.inf
    stats = sender.stats
    batch_cap = max(1, int(rate * 0.05))  # return to the loop at least every ~50 ms of traffic
    while True:
        now = clock()
        progress.maybe(now)
        if now >= deadline or (max_events is not None and stats.events >= max_events):
            return
        n = min(pacer.available(now), batch_cap)
        if max_events is not None:
            n = min(n, max_events - stats.events)
        if n <= 0:
            wake = min(pacer.delay(now), deadline - now, progress.next_at - now)
            await asyncio.sleep(max(wake, MIN_TICK_S))
            continue
        for _ in range(n):
            await sender.send(next(events))
        pacer.take(n)
        sender.prune()


def _make_producer(settings: Settings) -> Any:
    """The Kafka producer (a seam for tests)."""
    return AIOKafkaProducer(
        **producer_options(settings),
        client_id="streamproc-simulator",
        linger_ms=5,
    )


async def _connect(producer: Any, settings: Settings) -> None:
    """Start ``producer`` and check the topics exist (auto-creation is usually disabled)."""
    hint = "start the local stack with `streamproc stack up` (or set STREAMPROC_KAFKA_BOOTSTRAP)"
    try:
        await asyncio.wait_for(producer.start(), CONNECT_TIMEOUT_S)
        metadata = await producer.client.fetch_all_metadata()
    except (TimeoutError, KafkaError, OSError) as exc:
        raise KafkaUnavailableError(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc or type(exc).__name__}); "
            f"{hint}"
        ) from None
    needed = [getattr(settings.topics, t) for t in (*SIMULATED_TOPICS, "products")]
    missing = [name for name in needed if name not in metadata.topics()]
    if missing:
        raise KafkaUnavailableError(
            f"Kafka at {settings.kafka_bootstrap} has no topic {', '.join(missing)}; "
            "`streamproc stack up` creates the topics (check STREAMPROC_TOPIC_PREFIX)"
        )


def _check_args(customers: int, rate: float, duration: float | None,
                max_events: int | None) -> None:
    if customers < 1:
        raise ConfigError(f"--customers must be at least 1, got {customers}")
    if not rate > 0 or math.isinf(rate):
        raise ConfigError(f"--rate must be a positive number of events per second, got {rate}")
    if duration is not None and not duration > 0:
        raise ConfigError(f"--duration must be a positive number of seconds, got {duration}")
    if max_events is not None and max_events < 1:
        raise ConfigError(f"max_events must be at least 1, got {max_events}")


def accelerated_settings(settings: Settings, prefix: str = ACCELERATED_PREFIX) -> Settings:
    """The settings of an accelerated run: topics named ``prefix`` + name, which must not be
    any of ``settings``' topics (a ConfigError says so)."""
    topics = Topics.with_prefix(prefix)
    shared = sorted(set(topics.all()) & set(settings.topics.all()))
    if shared:
        raise ConfigError(
            f"--accelerated would write to {', '.join(shared)}, a topic of the configured "
            "stack, and push its event time hours ahead of the clock: give another "
            f"--topic-prefix (default {ACCELERATED_PREFIX})")
    return replace(settings, topics=topics)


def accelerated_hint(settings: Settings, prefix: str) -> str:
    return (f"accelerated: event time runs ahead of the clock, so the events go to "
            f"{prefix}* topics, not the stack's. To process them, run a worker with "
            f"STREAMPROC_TOPIC_PREFIX={prefix} STREAMPROC_APP_ID={prefix.rstrip('.')} and a Redis "
            "database of its own (STREAMPROC_REDIS_URL=redis://host:port/N), and "
            "STREAMPROC_MAX_FUTURE_SKEW_S=0 (its events are dated ahead of their records)")


async def run_simulation(
    settings: Settings,
    customers: int,
    rate: float,
    duration: float | None,
    seed: int = 7,
    max_events: int | None = None,
    progress: TextIO | None = sys.stderr,
    *,
    accelerated: bool = False,
    topic_prefix: str = ACCELERATED_PREFIX,
    slot_requests: bool = True,
    respond: bool = False,
) -> SimulationStats:
    """Produce simulated traffic of ``customers`` customers at ``rate`` events per second.

    Stops after ``duration`` seconds or ``max_events`` events, whichever comes first (neither:
    until cancelled), then waits until Kafka has acknowledged every event. Events are stamped
    with the wall clock when sent; ``accelerated`` keeps the generator's faster clock instead
    (from now on) and writes to ``topic_prefix`` topics, created when missing (see the module
    docstring). The shop's product feed (every product, a few out of stock) goes to the
    products topic first, so recommendations skip what is out of stock. ``slot_requests``:
    pages ask for their slots. ``respond``: answer the
    decisions about the simulated customers with their feedback while the simulation runs
    (:func:`streamproc.simulator.responder.respond_to_decisions`). On cancellation (Ctrl-C) it
    flushes what was sent, prints the summary and re-raises. Raises
    :class:`KafkaUnavailableError` if Kafka or its topics are missing, :class:`SimulationError`
    if Kafka rejects events.
    """
    _check_args(customers, rate, duration, max_events)
    if accelerated:
        settings = accelerated_settings(settings, topic_prefix)
        from streamproc.stack.topics import ensure_topics

        await ensure_topics(settings)
        if progress is not None:
            print(accelerated_hint(settings, topic_prefix), file=progress, flush=True)
    population = Population.generate(customers, seed)
    events = generate_events(population, datetime.now(UTC), seed, slot_requests=slot_requests)
    stats = SimulationStats(customers=customers)
    loop = asyncio.get_running_loop()
    producer = _make_producer(settings)
    started = time.monotonic()
    report = _Progress(progress, stats, loop.time())
    sender = _Sender(producer, settings.topics, stats, None if accelerated else wall_clock_ms)
    responder: tuple[asyncio.Task[Any], ResponderStats] | None = None
    try:
        await _connect(producer, settings)
        if respond:
            responder = await _start_responder(settings, customers, seed, accelerated)
        await sender.send_feed(product_feed(population, datetime.now(UTC), seed))
        started = time.monotonic()
        report = _Progress(progress, stats, loop.time())
        await _pump(sender, events, rate, duration, max_events, report, loop.time)
        await sender.drain()
    except (asyncio.CancelledError, KeyboardInterrupt):
        stats.interrupted = True
        raise
    finally:
        if responder is not None:
            stats.feedback = await _stop_responder(*responder)
        try:
            await asyncio.wait_for(producer.stop(), STOP_TIMEOUT_S)  # flushes what is buffered
            sender.prune()
        except (TimeoutError, KafkaError, OSError, SimulationError):
            pass  # the original error (if any) is the one worth reporting
        finally:
            stats.seconds = time.monotonic() - started
            if stats.events or stats.interrupted:
                report.finish(stats.summary())
    return stats


async def _start_responder(settings: Settings, customers: int, seed: int,
                           accelerated: bool) -> tuple[asyncio.Task[Any], ResponderStats]:
    """The responder as a task, once it follows the decisions topic (so none is missed)."""
    stats = ResponderStats()
    ready = asyncio.Event()
    task = asyncio.create_task(respond_to_decisions(
        settings, customers, seed, progress=None, wall_clock=not accelerated, ready=ready,
        stats=stats, click_delay_ms=LIVE_CLICK_DELAY_MS,
        conversion_delay_ms=LIVE_CONVERSION_DELAY_MS))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():  # it failed to start: say why
        waiter.cancel()
        task.result()
    return task, stats


async def _stop_responder(task: asyncio.Task[Any], stats: ResponderStats) -> str:
    """Stop the responder; its summary (or why it stopped)."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception as exc:  # the simulation's own summary still matters
        return f"the responder stopped: {exc}"
    return stats.summary()
