"""One batch of raw messages in, state written and records to publish out: no Kafka here.

Effectively once: every customer's profile carries the last applied offset of each
topic-partition and a bounded window of recent event ids, written in the same atomic
compare-and-set as the state change. A redelivered message (same partition, offset not newer)
and a producer duplicate (same event id) are skipped, so a crash, a rebalance or a retry never
double counts. The decisions of a customer's last batch (per input partition) stay in its
outbox and are published again when that batch is redelivered, so a crash between the state
write and the publish loses no decision (decision ids are deterministic: consumers see the same
id twice, never two ids).

Three per-event hooks run after the profile took an event: a :class:`Scorer` (the served
models: purchase intent, lifetime value, clusters; :mod:`streamproc.intent`), a
:class:`Segmenter` (which sees the new scores) and the decision
:class:`~streamproc.decisions.engine.Engine` (which sees both, and the segment moves). The
scorer's observations (for the learner, :mod:`streamproc.learner`) and the engine's lessons for
the learning bandit (:mod:`streamproc.decisions.lessons`) go to the learning topic through the
outbox like the decisions, once the customer's state write succeeded; the decisions published
are also kept as the customer's latest per slot (:mod:`streamproc.decisions.latest`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from streamproc.decisions.catalogue import CatalogueFile, default_catalogue_path
from streamproc.decisions.chooser import UniformChooser
from streamproc.decisions.engine import Engine, Lesson
from streamproc.decisions.latest import LatestDecisions
from streamproc.decisions.record import Source
from streamproc.errors import DecodeError, StreamprocError
from streamproc.events.codec import Decoder, Event, RawMessage, deadletter_record
from streamproc.intent import NoScoring
from streamproc.observations import lesson_record
from streamproc.settings import Settings
from streamproc.state.document import pack_doc, pack_outbox, unpack_doc, unpack_outbox
from streamproc.state.profile import (
    Profile,
    ProfileConfig,
    apply_event,
    new_profile,
    upgrade_profile,
)
from streamproc.state.store import Store, Stored, Write

log = logging.getLogger(__name__)

MAX_CAS_ATTEMPTS = 5


class StateConflictError(StreamprocError):
    """Another writer kept changing the same customers; the batch is retried as a whole."""


@dataclass
class BatchResult:
    decisions: list[tuple[bytes, bytes]] = field(default_factory=list)
    segments: list[tuple[bytes, bytes]] = field(default_factory=list)
    deadletters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    # Customers erased by this batch: a tombstone (null value) for each goes to the decisions
    # and segments topics, so compacted copies forget them too.
    erased: list[bytes] = field(default_factory=list)
    # Observations for the learning topic (streamproc.observations).
    learning: list[tuple[bytes, bytes]] = field(default_factory=list)
    applied: int = 0
    redelivered: int = 0
    duplicates: int = 0


class Segmenter(Protocol):
    """Re-segments a profile after each event (streamproc.segmentation is the real one)."""

    async def refresh(self, store: Store) -> None: ...

    def update(self, p: Profile, event: Event, trigger: dict[str, Any]) -> list[dict[str, Any]]:
        """Recompute the profile's segments; return the moves (records for the segments topic)."""
        ...

    def buckets(self, p: Profile) -> tuple[str, ...]: ...


class Scorer(Protocol):
    """Scores a profile after each event with the served models (streamproc.intent)."""

    async def refresh(self) -> None:
        """Before each batch: serve a newer model snapshot if there is one."""
        ...

    def update(self, p: Profile, event: Event) -> list[dict[str, Any]]:
        """Score the event into the profile; return observations for the learning topic."""
        ...

    def model_versions(self) -> dict[str, str]:
        """The versions of the models served, for decision records."""
        ...


class NoSegments:
    async def refresh(self, store: Store) -> None:
        return None

    def update(self, p: Profile, event: Event, trigger: dict[str, Any]) -> list[dict[str, Any]]:
        return []

    def buckets(self, p: Profile) -> tuple[str, ...]:
        return ()


def event_token(event_id: str) -> str:
    """A short, fixed-size stand-in for an event id in the dedupe window (48-bit BLAKE2b).

    Two different ids of one customer's last window collide with odds of about 1 in 10^13.

    >>> event_token("evt-7f3a9c2e-0007")
    'l40pwBdW'
    """
    digest = hashlib.blake2b(event_id.encode(), digest_size=6).digest()
    return base64.urlsafe_b64encode(digest).decode()


def trigger_of(event: Event) -> dict[str, Any]:
    msg = event.message
    return {
        "type": event.type,
        "event_id": event.event_id,
        "topic": msg.topic,
        "partition": msg.partition,
        "offset": msg.offset,
    }


def lesson_outputs(event: Event, lessons: Sequence[Lesson]) -> list[dict[str, Any]]:
    """The engine's lessons as learning-topic observations, for the one learner's bandit."""
    msg = event.message
    trigger = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
    return [{"topic": "learning",
             "record": lesson_record(event.customer_id, event.event_id, event.ts_ms, le, trigger)}
            for le in lessons]


def source_of(event: Event) -> Source:
    msg = event.message
    return Source(event.type, event.event_id, event.customer_id, event.data["ts"], event.ts_ms,
                  msg.topic, msg.partition, msg.offset, msg.timestamp_ms)


def default_engine(settings: Settings) -> Engine:
    """The engine on the configured catalogue (reloaded when it changes), choosing uniformly
    until a learning chooser is given (the worker gives it the bandit: streamproc.app)."""
    path = settings.catalogue or default_catalogue_path()
    return Engine(CatalogueFile(path, activity_days=settings.activity_days), UniformChooser())


@dataclass
class _CustomerOutcome:
    write: Write | None
    # What to publish: {"topic": "decisions" | "segments" | "learning", "record": {...}}, in
    # order. With the outbox's outputs of the partitions this batch did not read, it is the
    # customer's new outbox.
    outputs: list[dict[str, Any]]
    deadletters: list[tuple[Event, str]]
    applied: int = 0
    redelivered: int = 0
    duplicates: int = 0


class Processor:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        decoder: Decoder | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        segmenter: Segmenter | None = None,
        scorer: Scorer | None = None,
        engine: Engine | None = None,
        latest: LatestDecisions | None = None,
    ) -> None:
        self.store = store
        self.decoder = decoder or Decoder(settings)
        self.dedupe_window = settings.dedupe_window
        self.compression = settings.state_compression
        self.clock_ms = clock_ms
        self.segmenter: Segmenter = segmenter or NoSegments()
        self.scorer: Scorer = scorer or NoScoring()
        self.profile_config = ProfileConfig(settings.affinity_half_life_days,
                                            settings.activity_days)
        self.ttl_ms = settings.customer_ttl_days * 86_400_000
        self.engine = engine or default_engine(settings)
        self.latest = latest

    async def process(self, messages: Sequence[RawMessage]) -> BatchResult:
        result = BatchResult()
        now_ms = self.clock_ms()
        by_customer: dict[str, list[Event]] = {}
        for msg in messages:
            try:
                event = self.decoder.decode(msg)
            except DecodeError as exc:
                result.deadletters.append(
                    (msg.key, deadletter_record(msg, exc.reason, exc.message, now_ms))
                )
                continue
            by_customer.setdefault(event.customer_id, []).append(event)

        await self.segmenter.refresh(self.store)
        await self.scorer.refresh()
        # An erase supersedes everything before it: the customer's keys go now, and the
        # events after it (if any) start a new profile.
        for cid, events in by_customer.items():
            erases = [i for i, e in enumerate(events) if e.type == "erase"]
            if erases:
                await self.store.erase(cid)
                result.erased.append(cid.encode())
                by_customer[cid] = events[erases[-1] + 1:]
        pending = {cid: events for cid, events in by_customer.items() if events}
        decided: list[dict[str, Any]] = []
        read_order: list[tuple[str, int, int]] = []  # of result.learning's records
        for _ in range(MAX_CAS_ATTEMPTS):
            if not pending:
                break
            stored = await self.store.load(list(pending))
            outcomes = {
                cid: self._apply_customer(cid, events, stored[cid], now_ms)
                for cid, events in pending.items()
            }
            writes = [o.write for o in outcomes.values() if o.write is not None]
            lost = set(await self.store.save(writes)) if writes else set()
            for cid, outcome in outcomes.items():
                if cid in lost:
                    continue
                result.applied += outcome.applied
                result.redelivered += outcome.redelivered
                result.duplicates += outcome.duplicates
                key = cid.encode()
                targets = {"decisions": result.decisions, "segments": result.segments,
                           "learning": result.learning}
                for out in outcome.outputs:
                    targets[out["topic"]].append((key, orjson.dumps(out["record"])))
                    if out["topic"] == "decisions":
                        decided.append(out["record"])
                    elif out["topic"] == "learning":
                        trigger = out["record"]["trigger"]
                        read_order.append((trigger["topic"], trigger["partition"],
                                           trigger["offset"]))
                for event, error in outcome.deadletters:
                    record = deadletter_record(event.message, "processing_error", error, now_ms)
                    result.deadletters.append((key, record))
            if lost:
                log.warning("state of %d customers changed under us; recomputing", len(lost))
            pending = {cid: pending[cid] for cid in lost}
        if pending:
            raise StateConflictError(
                f"{len(pending)} customers kept changing under this worker "
                f"({MAX_CAS_ATTEMPTS} attempts); is another worker writing the same partitions?"
            )
        if decided and self.latest is not None:
            await self.latest.save(decided, now_ms)
        # Observations in the order their events were read, not grouped by customer: the
        # learner's watermark follows each partition's event time (streamproc.models.join).
        order = sorted(range(len(read_order)), key=read_order.__getitem__)
        result.learning = [result.learning[i] for i in order]
        return result

    def _apply_customer(
        self, cid: str, events: list[Event], stored: Stored, now_ms: int
    ) -> _CustomerOutcome:
        # An event that makes the profile code raise is dead-lettered, and the customer is
        # recomputed from the stored document without it: no half-applied event is ever saved.
        poison: dict[int, str] = {}
        while True:
            try:
                return self._apply_events(cid, events, stored, now_ms, poison)
            except _PoisonEventError as exc:
                poison[id(exc.event)] = exc.error

    def _apply_events(
        self, cid: str, events: list[Event], stored: Stored, now_ms: int, poison: dict[int, str]
    ) -> _CustomerOutcome:
        p: Profile = upgrade_profile(unpack_doc(stored.doc)) if stored.doc else new_profile(cid)
        applied: dict[str, int] = p.setdefault("applied", {})
        recent: list[str] = p.setdefault("recent_event_ids", [])
        previous_outbox = upgrade_outbox(unpack_outbox(stored.outbox))
        out = _CustomerOutcome(None, [], [])
        changed = False
        for event in events:
            msg = event.message
            if msg.offset <= applied.get(msg.source, -1):
                out.redelivered += 1
                out.outputs.extend(
                    o for o in previous_outbox
                    if o["record"]["trigger"]["topic"] == msg.topic
                    and o["record"]["trigger"]["partition"] == msg.partition
                    and o["record"]["trigger"]["offset"] == msg.offset
                )
                continue
            applied[msg.source] = msg.offset
            changed = True
            token = event_token(event.event_id)
            if token in recent:
                out.duplicates += 1
                continue
            if self.dedupe_window:
                recent.append(token)
                del recent[: -self.dedupe_window]
            if id(event) in poison:
                out.deadletters.append((event, poison[id(event)]))
                continue
            try:
                apply_event(p, event.type, event.ts_ms, event.data, self.profile_config)
                out.outputs.extend({"topic": "learning", "record": o}
                                   for o in self.scorer.update(p, event))
                moves = self.segmenter.update(p, event, trigger_of(event))
                out.outputs.extend({"topic": "segments", "record": m} for m in moves)
                if event.type == "feedback":
                    out.outputs.extend(lesson_outputs(
                        event, self.engine.feedback(p, event.data, event.ts_ms)))
                # Asked per event: the reload timer may swap the served model between batches'
                # awaits, and the record names the model that scored this event.
                decided = self.engine.decide(p, source_of(event), event.data, moves, now_ms,
                                             self.scorer.model_versions())
                out.outputs.extend({"topic": "decisions", "record": r} for r in decided.records)
                out.outputs.extend(lesson_outputs(event, decided.lessons))
            except StreamprocError as exc:  # bad input the schema could not catch (a slot
                # the catalogue does not have): dead-lettered with its reason, no traceback
                log.warning("%s %s dead-lettered: %s", event.type, event.event_id, exc)
                raise _PoisonEventError(event, str(exc)[:500]) from exc
            except Exception as exc:  # a bug in profile or policy code must not stop the stream
                log.exception("processing %s %s failed", event.type, event.event_id)
                raise _PoisonEventError(event, f"{type(exc).__name__}: {exc}"[:500]) from exc
            out.applied += 1
        if changed:
            # The outbox keeps, per input partition, the outputs of the last batch that read
            # it: after a crash, the partitions are read again in any order, and a batch of
            # another partition must not drop the outputs still to be published again.
            read = {(e.message.topic, e.message.partition) for e in events}
            outbox = [o for o in previous_outbox
                      if (o["record"]["trigger"]["topic"], o["record"]["trigger"]["partition"])
                      not in read] + out.outputs
            out.write = Write(
                cid, stored.version, pack_doc(p, self.compression),
                pack_outbox(outbox, self.compression),
                self.segmenter.buckets(p), self.ttl_ms,
            )
        return out


def upgrade_outbox(outbox: list[Any]) -> list[dict[str, Any]]:
    """An outbox as this version writes it: the first versions kept bare decision records.

    >>> upgrade_outbox([{"decision_id": "d1", "trigger": {}}])
    [{'topic': 'decisions', 'record': {'decision_id': 'd1', 'trigger': {}}}]
    """
    return [o if "record" in o else {"topic": "decisions", "record": o}
            for o in outbox if isinstance(o, dict)]


class _PoisonEventError(Exception):
    def __init__(self, event: Event, error: str) -> None:
        super().__init__(error)
        self.event = event
        self.error = error
