"""Simulated customers answering live decisions: ``streamproc respond``.

Runs beside ``streamproc simulate`` (same ``--customers`` and ``--seed``) and a worker: it reads
the decisions topic and, for every decision about a simulated customer, sends that customer's
feedback to the feedback topic the way their persona would
(:meth:`streamproc.simulator.preferences.Preferences.respond`): an impression, maybe a click,
maybe a conversion with revenue, at the decision's event time plus a delay; a message's open,
and now and then an NPS survey answer (``Preferences.after``). So the learning bandit gets the
rewards of hidden preferences, and ``streamproc report`` and the dashboard have something to
show.

**When.** Feedback is stamped with the decision's event time plus its delay and, by default
(``wall_clock``), held until the wall clock reaches that stamp (:class:`FeedbackQueue`): a
click never arrives before it happened, so a live stack's event time does not run ahead. Held
feedback still due when the responder stops is not sent (the summary counts it). Without
``wall_clock`` (decisions of an accelerated simulation, in event time far ahead of the clock)
everything is sent at once.

Decisions about other customers (not ``sim{seed}-c...`` of the population), tombstones,
records that are not decisions and decisions whose action is ``none`` (nothing shown) are
skipped and counted. Non-personalised decisions are answered at the neutral rate.
"""

from __future__ import annotations

import asyncio
import heapq
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition

from streamproc.events.codec import parse_ts
from streamproc.kafka_options import producer_options
from streamproc.settings import Settings
from streamproc.simulator.population import Population
from streamproc.simulator.preferences import CLICK_DELAY_MS, CONVERSION_DELAY_MS, Preferences
from streamproc.tail import open_consumer

PROGRESS_S = 5.0
# Delays of the feedback `streamproc simulate` gives while it runs: a banner is clicked within
# seconds, and the demo's bandit must learn within a minute (Preferences' defaults are slower).
LIVE_CLICK_DELAY_MS = 5_000
LIVE_CONVERSION_DELAY_MS = 60_000


@dataclass
class ResponderStats:
    answered: int = 0
    feedback: int = 0  # feedback events made (sent, or held until due)
    sent: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def summary(self) -> str:
        outcomes = ", ".join(f"{n:,} {o}" for o, n in sorted(self.by_outcome.items()))
        skipped = "; ".join(f"{n:,} {why}" for why, n in sorted(self.skipped.items()))
        held = self.feedback - self.sent
        return (f"answered {self.answered:,} decisions with {self.feedback:,} feedback events"
                f"{f' ({outcomes})' if outcomes else ''}"
                f"{f'; {held:,} not due yet, not sent' if held > 0 else ''}"
                f"{f'; skipped {skipped}' if skipped else ''}")


class FeedbackQueue:
    """Feedback events held until the wall clock reaches their ``ts`` (epoch ms).

    >>> q = FeedbackQueue()
    >>> q.push(2_000, {"event_id": "b"}); q.push(1_000, {"event_id": "a"})
    >>> [e["event_id"] for e in q.due(1_500)], len(q), q.next_due()
    (['a'], 1, 2000)
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, dict[str, Any]]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due_ms: int, event: dict[str, Any]) -> None:
        heapq.heappush(self._heap, (due_ms, self._seq, event))
        self._seq += 1

    def due(self, now_ms: int) -> list[dict[str, Any]]:
        """The events due by ``now_ms``, in due order, taken off the queue."""
        out = []
        while self._heap and self._heap[0][0] <= now_ms:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None


class Responder:
    """Turns decision records into the feedback events of the simulated customers."""

    def __init__(self, population: Population, preferences: Preferences) -> None:
        self.customers = {c.customer_id: c for c in population.customers}
        self.preferences = preferences

    def answer(self, record: Any, stats: ResponderStats) -> list[dict[str, Any]]:
        """The feedback events of the customer a decision record is about ([] for others)."""
        if not isinstance(record, dict) or not isinstance(record.get("decision_id"), str):
            stats.skip("records that are not decisions")
            return []
        customer = self.customers.get(str(record.get("customer_id")))
        if customer is None:
            stats.skip("decisions about customers outside the simulated population")
            return []
        action: dict[str, Any] = record["action"] if isinstance(record.get("action"), dict) else {}
        if not isinstance(action.get("id"), str) or action.get("kind") == "none":
            stats.skip("decisions that show nothing")
            return []
        try:
            ts_ms = parse_ts(record["ts"])
        except (KeyError, TypeError, ValueError):
            stats.skip("decisions without a valid ts")
            return []
        action_id = action["id"]
        if record.get("personalised") is False:
            self.preferences.add_neutral(action_id)
        features = record.get("features")
        decision = {"decision_id": record["decision_id"], "action_id": action_id, "ts_ms": ts_ms,
                    "wet": isinstance(features, dict) and bool(features.get("weather_wet"))}
        answered = self.preferences.respond(customer, decision)
        answered += self.preferences.after(customer, decision, str(record.get("channel")),
                                           answered)
        events = [e for _, e in sorted(answered, key=lambda te: te[0])]
        stats.answered += 1
        for event in events:
            stats.feedback += 1
            outcome = event.get("outcome", event["type"])  # a survey has no outcome
            stats.by_outcome[outcome] = stats.by_outcome.get(outcome, 0) + 1
        return events


async def respond_to_decisions(
    settings: Settings, customers: int, seed: int, *, from_beginning: bool = False,
    limit: int | None = None, progress: TextIO | None = sys.stderr, wall_clock: bool = True,
    ready: asyncio.Event | None = None, stats: ResponderStats | None = None,
    click_delay_ms: int = CLICK_DELAY_MS, conversion_delay_ms: int = CONVERSION_DELAY_MS,
) -> ResponderStats:
    """Answer decisions until ``limit`` were answered (or forever; Ctrl-C or cancelling stops).

    ``ready`` is set once the decisions topic is followed; ``stats`` (a new one by default)
    is updated as it goes, so a caller that cancels still has the figures."""
    from streamproc.errors import StreamprocError

    responder = Responder(Population.generate(customers, seed),
                          Preferences(seed=seed, click_delay_ms=click_delay_ms,
                                      conversion_delay_ms=conversion_delay_ms))
    stats = ResponderStats() if stats is None else stats
    held = FeedbackQueue()
    consumer, partitions = await open_consumer(settings, settings.topics.decisions)
    producer = AIOKafkaProducer(**producer_options(settings))

    async def send(events: list[dict[str, Any]]) -> None:
        for event in events:
            await producer.send(settings.topics.feedback, orjson.dumps(event),
                                key=event["customer_id"].encode())
            stats.sent += 1

    try:
        if not partitions:
            raise StreamprocError(f"topic {settings.topics.decisions} does not exist; run "
                                  "`streamproc stack up` or start a worker first")
        await producer.start()
        tps = [TopicPartition(settings.topics.decisions, p) for p in partitions]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
            for tp in tps:  # resolve the end offsets now: what comes later is answered
                await consumer.position(tp)
        if ready is not None:
            ready.set()
        if progress is not None:
            print(f"answering decisions on {settings.topics.decisions} for {customers:,} "
                  f"simulated customers (seed {seed}); Ctrl-C stops", file=progress, flush=True)
        next_report = time.monotonic() + PROGRESS_S
        while limit is None or stats.answered < limit:
            batch = await consumer.getmany(timeout_ms=200 if len(held) else 500)
            for messages in batch.values():
                for message in messages:
                    if limit is not None and stats.answered >= limit:
                        break
                    record = None if message.value is None else _loads(message.value)
                    answers = responder.answer(record, stats)
                    if not wall_clock:
                        await send(answers)
                        continue
                    for event in answers:
                        held.push(parse_ts(event["ts"]), event)
            await send(held.due(time.time_ns() // 1_000_000))
            await producer.flush()
            if progress is not None and time.monotonic() >= next_report:
                print(stats.summary(), file=progress, flush=True)
                next_report = time.monotonic() + PROGRESS_S
        await send(held.due(time.time_ns() // 1_000_000))
    finally:
        await producer.stop()
        await consumer.stop()
    return stats


def _loads(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
