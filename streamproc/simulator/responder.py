"""Simulated customers answering live decisions: ``streamproc respond``.

Runs beside ``streamproc simulate`` (same ``--customers`` and ``--seed``) and a worker: it reads
the decisions topic and, for every decision about a simulated customer, sends that customer's
feedback to the feedback topic the way their persona would
(:meth:`streamproc.simulator.preferences.Preferences.respond`): an impression, maybe a click,
maybe a conversion with revenue, at the decision's event time plus a delay. So the learning
bandit gets the rewards of hidden preferences, and ``streamproc report`` has something to show.

Decisions about other customers (not ``sim{seed}-c...`` of the population), tombstones,
records that are not decisions and decisions whose action is ``none`` (nothing shown) are
skipped and counted. Non-personalised decisions are answered at the neutral rate.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition

from streamproc.events.codec import parse_ts
from streamproc.settings import Settings
from streamproc.simulator.population import Population
from streamproc.simulator.preferences import Preferences
from streamproc.tail import open_consumer

PROGRESS_S = 5.0


@dataclass
class ResponderStats:
    answered: int = 0
    feedback: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def summary(self) -> str:
        outcomes = ", ".join(f"{n:,} {o}" for o, n in sorted(self.by_outcome.items()))
        skipped = "; ".join(f"{n:,} {why}" for why, n in sorted(self.skipped.items()))
        return (f"answered {self.answered:,} decisions with {self.feedback:,} feedback events"
                f"{f' ({outcomes})' if outcomes else ''}"
                f"{f'; skipped {skipped}' if skipped else ''}")


class Responder:
    """Turns decision records into the feedback events of the simulated customers."""

    def __init__(self, population: Population, preferences: Preferences) -> None:
        self.customers = {c.customer_id: c for c in population.customers}
        self.preferences = preferences

    def answer(self, record: Any, stats: ResponderStats) -> list[dict[str, Any]]:
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
        events = [e for _, e in self.preferences.respond(
            customer, {"decision_id": record["decision_id"], "action_id": action_id,
                       "ts_ms": ts_ms})]
        stats.answered += 1
        for event in events:
            stats.feedback += 1
            stats.by_outcome[event["outcome"]] = stats.by_outcome.get(event["outcome"], 0) + 1
        return events


async def respond_to_decisions(settings: Settings, customers: int, seed: int, *,
                               from_beginning: bool = False, limit: int | None = None,
                               progress: TextIO | None = sys.stderr) -> ResponderStats:
    """Answer decisions until ``limit`` were answered (or forever; Ctrl-C stops)."""
    from streamproc.errors import StreamprocError

    responder = Responder(Population.generate(customers, seed), Preferences(seed=seed))
    stats = ResponderStats()
    consumer, partitions = await open_consumer(settings, settings.topics.decisions)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
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
        if progress is not None:
            print(f"answering decisions on {settings.topics.decisions} for {customers:,} "
                  f"simulated customers (seed {seed}); Ctrl-C stops", file=progress, flush=True)
        next_report = time.monotonic() + PROGRESS_S
        while limit is None or stats.answered < limit:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                for message in messages:
                    if limit is not None and stats.answered >= limit:
                        break
                    record = None if message.value is None else _loads(message.value)
                    for event in responder.answer(record, stats):
                        await producer.send(settings.topics.feedback, orjson.dumps(event),
                                            key=event["customer_id"].encode())
            await producer.flush()
            if progress is not None and time.monotonic() >= next_report:
                print(stats.summary(), file=progress, flush=True)
                next_report = time.monotonic() + PROGRESS_S
    finally:
        await producer.stop()
        await consumer.stop()
    return stats


def _loads(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
