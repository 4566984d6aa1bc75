"""Logged decisions joined with their feedback: the input of ``streamproc evaluate`` and ``report``.

Both come from a JSON Lines file (one decision record, or one feedback event, a line) or from
the Kafka topics, read from the beginning up to the end offsets at the moment of reading.

* A decision id seen twice (a batch republished after a crash keeps its ids) counts once.
* Feedback counts once per ``event_id``; feedback on a decision that is not in the log is
  counted in :attr:`DecisionLog.orphan_feedback` and otherwise ignored.
* Records that are not JSON objects, tombstones and decisions without a ``decision_id`` are
  skipped and counted, never fatal: a log is evidence, and one bad line must not hide the rest.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, TextIO, overload

import orjson

from streamproc.errors import StreamprocError
from streamproc.settings import Settings

PROGRESS_EVERY = 50_000


class LogError(StreamprocError):
    """A decision or feedback log cannot be read."""


@dataclass
class DecisionOutcome:
    """What happened after one decision, from its feedback events."""

    impressions: int = 0
    opens: int = 0
    clicks: int = 0
    conversions: int = 0
    unsubscribes: int = 0
    dismissals: int = 0
    revenue: float = 0.0

    @property
    def clicked(self) -> bool:
        """A click, or a conversion (which implies one)."""
        return self.clicks > 0 or self.conversions > 0

    @property
    def converted(self) -> bool:
        return self.conversions > 0

    def add(self, event: dict[str, Any]) -> None:
        outcome = event.get("outcome")
        if outcome == "impression":
            self.impressions += 1
        elif outcome == "open":
            self.opens += 1
        elif outcome == "click":
            self.clicks += 1
        elif outcome == "conversion":
            self.conversions += 1
            revenue = event.get("revenue")
            if isinstance(revenue, int | float) and not isinstance(revenue, bool):
                self.revenue += float(revenue)
        elif outcome == "unsubscribe":
            self.unsubscribes += 1
        elif outcome == "dismiss":
            self.dismissals += 1


@dataclass
class DecisionLog:
    """Unique decisions in log order, each with its outcome, and what was skipped."""

    decisions: list[dict[str, Any]] = field(default_factory=list)
    outcomes: dict[str, DecisionOutcome] = field(default_factory=dict)
    duplicate_decisions: int = 0
    duplicate_feedback: int = 0
    orphan_feedback: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def outcome(self, decision_id: str) -> DecisionOutcome:
        return self.outcomes.get(decision_id) or DecisionOutcome()

    def notes(self) -> list[str]:
        """What was left out of the log and why, for people."""
        notes = [f"{n} {why}" for why, n in sorted(self.skipped.items())]
        if self.duplicate_decisions:
            notes.append(f"{self.duplicate_decisions} repeated decision records counted once")
        if self.duplicate_feedback:
            notes.append(f"{self.duplicate_feedback} repeated feedback events counted once")
        if self.orphan_feedback:
            notes.append(f"{self.orphan_feedback} feedback events on decisions not in the log")
        return notes


def join(decisions: Iterable[dict[str, Any] | None],
         feedback: Iterable[dict[str, Any] | None]) -> DecisionLog:
    """Decision records joined with feedback events by ``decision_id``."""
    log = DecisionLog()
    seen: set[str] = set()
    for record in decisions:
        if not isinstance(record, dict):
            log.skip("decision records that are not JSON objects (or tombstones)")
            continue
        decision_id = record.get("decision_id")
        if not isinstance(decision_id, str) or not decision_id:
            log.skip("decision records without a decision_id")
            continue
        if decision_id in seen:
            log.duplicate_decisions += 1
            continue
        seen.add(decision_id)
        log.decisions.append(record)
    events: set[str] = set()
    for event in feedback:
        if not isinstance(event, dict) or event.get("type", "feedback") != "feedback":
            log.skip("feedback records that are not feedback events")
            continue
        decision_id, event_id = event.get("decision_id"), event.get("event_id")
        if not isinstance(decision_id, str) or not isinstance(event.get("outcome"), str):
            log.skip("feedback events without a decision_id or outcome")
            continue
        if isinstance(event_id, str):
            if event_id in events:
                log.duplicate_feedback += 1
                continue
            events.add(event_id)
        if decision_id not in seen:
            log.orphan_feedback += 1
            continue
        log.outcomes.setdefault(decision_id, DecisionOutcome()).add(event)
    return log


def read_jsonl(path: Path) -> list[dict[str, Any] | None]:
    """The records of a JSON Lines file (``-`` is stdin); a line that is not JSON is None."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LogError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise LogError(f"{path} is not UTF-8 text ({exc}); expected JSON Lines") from None
    records: list[dict[str, Any] | None] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            value = None
        records.append(value if isinstance(value, dict) else None)
    return records


class Placed(NamedTuple):
    """A record of a topic with where it was read from."""

    partition: int
    offset: int
    record: dict[str, Any] | None


@overload
async def read_topic(settings: Settings, topic: str, progress: TextIO | None = None, *,
                     offsets: Literal[False] = False) -> list[dict[str, Any] | None]: ...


@overload
async def read_topic(settings: Settings, topic: str, progress: TextIO | None = None, *,
                     offsets: Literal[True]) -> list[Placed]: ...


async def read_topic(settings: Settings, topic: str, progress: TextIO | None = None, *,
                     offsets: bool = False) -> list[dict[str, Any] | None] | list[Placed]:
    """Every record of ``topic`` from the beginning to its end offsets as of now (None for
    one that is not a JSON object); with ``offsets``, each as a :class:`Placed`, with its
    partition and offset."""
    from aiokafka import TopicPartition

    from streamproc.tail import open_consumer

    consumer, partitions = await open_consumer(settings, topic)
    records: list[Placed] = []
    try:
        if not partitions:
            raise LogError(f"topic {topic} does not exist: check STREAMPROC_TOPIC_PREFIX, or "
                           "read a JSON Lines file instead (--decisions/--feedback FILE)")
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        next_report = PROGRESS_EVERY
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, messages in batch.items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        break
                    value = None
                    if message.value is not None:
                        try:
                            loaded = orjson.loads(message.value)
                            value = loaded if isinstance(loaded, dict) else None
                        except orjson.JSONDecodeError:
                            value = None
                    records.append(Placed(tp.partition, message.offset, value))
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if progress is not None and len(records) >= next_report:
                print(f"read {len(records):,} records of {topic}...", file=progress, flush=True)
                next_report += PROGRESS_EVERY
    finally:
        await consumer.stop()
    return records if offsets else [r.record for r in records]


async def load_log(settings: Settings, decisions: Path | None, feedback: Path | None,
                   progress: TextIO | None = None) -> DecisionLog:
    """Decisions and feedback from the given files, or from the topics when a file is None."""
    decided = (read_jsonl(decisions) if decisions is not None
               else await read_topic(settings, settings.topics.decisions, progress))
    answered = (read_jsonl(feedback) if feedback is not None
                else await read_topic(settings, settings.topics.feedback, progress))
    return join(decided, answered)


def field_at(record: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of a record (``segments.rfm``), or None."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
