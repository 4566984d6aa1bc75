"""One batch of raw messages in, state written and records to publish out: no Kafka here.

Effectively once: every customer's profile carries the last applied offset of each
topic-partition and a bounded window of recent event ids, written in the same atomic
compare-and-set as the state change. A redelivered message (same partition, offset not newer)
and a producer duplicate (same event id) are skipped, so a crash, a rebalance or a retry never
double counts. The decisions of a customer's last batch (per input partition) stay in its
outbox and are published again when that batch is redelivered, so a crash between the state
write and the publish loses no decision (decision ids are deterministic: consumers see the same
id twice, never two ids). An output leaves the outbox only once a batch read its partition up
to its offset, so a redelivery cut into other batches than the first time publishes all of it
(:func:`outbox_keeps`).

Three per-event hooks run after the profile took an event: a :class:`Scorer` (the served
models: purchase intent, lifetime value, clusters; :mod:`streamproc.learning.scorer`), a
:class:`SegmentUpdater` (the segments, :mod:`streamproc.segments.segmenter`; it sees the new
scores) and the decision :class:`~streamproc.decisions.engine.Engine` (which sees both, and
the segment moves). The
scorer's observations (for the learner, :mod:`streamproc.learning.learner`) and the engine's
lessons for the learning bandit (:mod:`streamproc.decisions.lessons`) go to the learning topic
through the outbox like the decisions, once the customer's state write succeeded; the decisions
are also kept as the customer's latest per slot, by the same write
(:mod:`streamproc.decisions.latest`), and so are the KPI counters' increments of the events
and decisions applied (:mod:`streamproc.decisions.kpis`): counted exactly when the state is.

Consent gates all of it (:meth:`Processor._consents`). A customer without personalisation
consent (withdrawn, or never given while ``STREAMPROC_CONSENT_DEFAULTS`` denies it) is not
profiled: their events are applied once and counted (``unprofiled``), and nothing else
happens: no profile data, scores, observations, segment moves, decisions or lessons. A
profile that was profiled until then is reduced to its consent record and its bookkeeping
(:func:`streamproc.state.consent.withhold`); its segments are left with one exit each (reason
``consent_withdrawn``), the learner is told to forget the customer's pending moments (an
``erase`` observation), their timers are dropped and so are their latest decisions. A new
grant profiles them again from that event on.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from streamproc.decisions import timers
from streamproc.decisions.catalogue import LIFECYCLE_TIMER, CatalogueFile, default_catalogue_path
from streamproc.decisions.chooser import UniformChooser
from streamproc.decisions.engine import SERVED, TIMER, Decided, Engine, Lesson
from streamproc.decisions.exposure import merge_history
from streamproc.decisions.kpis import KpiCounter, Tally, merge_memory, tally_fields
from streamproc.decisions.latest import latest_fields
from streamproc.decisions.record import Source, iso_ms
from streamproc.errors import DecodeError, StreamprocError
from streamproc.events.codec import Decoder, Event, RawMessage, deadletter_key, deadletter_record
from streamproc.events.partitioner import PartitionCheck
from streamproc.learning.observations import (
    alias_record,
    erase_record,
    lesson_record,
    read_from,
)
from streamproc.learning.scorer import NoScoring
from streamproc.models.ranking import Recommender
from streamproc.segments.segmenter import CONSENT_NOT_GIVEN, CONSENT_WITHDRAWN, leave_all
from streamproc.settings import PROFILING_PURPOSE, Settings
from streamproc.state.consent import profiling, record_consent, withhold
from streamproc.state.document import pack_doc, pack_outbox, unpack_doc, unpack_outbox
from streamproc.state.erasure import suppressed
from streamproc.state.identity import (
    alias_profile,
    alias_target,
    merge_consent,
    merge_profile,
    unlinked,
)
from streamproc.state.keys import CUSTOMER_ID, timer_index_key
from streamproc.state.profile import (
    Profile,
    ProfileConfig,
    apply_event,
    new_profile,
    upgrade_profile,
)
from streamproc.state.regions import (
    REGION_FIELDS,
    REGION_PREFIX,
    InvalidRegionError,
    RegionContexts,
    region_surroundings,
    validate_region,
)
from streamproc.state.store import DueTimers, Store, Stored, Write

log = logging.getLogger(__name__)

MAX_CAS_ATTEMPTS = 5
# The identity events (docs/identity.md), the outbox topic of events published on an input
# topic, what an identifier's profile carries to its customer (the rest is rebuilt there, or
# only the identifier's: schemas/events/profile_merge.schema.json), the segment moves' reason,
# and what a customer's profile remembers: identifiers merged into it (an erasure reaches them)
# and merges applied (one merge, once).
IDENTITY_TYPES = frozenset({"identify", "profile_merge", "unlink"})
FORWARD = "forward"
CARRIED = ("customer_id", "first_seen_ms", "last_seen_ms", "counts", "session", "cart",
           "purchases", "categories", "affinities", "engagement", "activity", "attributes",
           "consent", "feedback", "device", "location", "rfm", "recent_products", "decisions",
           "timers", "kpi", "recent_event_ids", "aliases")
MERGED = "merged"
MAX_ALIASES = 64
MAX_MERGES = 256
# Messages on the wrong partition, processed anyway (STREAMPROC_PARTITION_CHECK=warn), are
# logged at most once per this many seconds, with how many there were since: a misconfigured
# producer sends thousands a second, the metric counts each one.
WRONG_PARTITION_LOG_S = 10.0
TIMER_ROUNDS = 4
TIMER_OUTBOX_FIRES = 8


class StateConflictError(StreamprocError):
    """Another writer kept changing the same customers; the batch is retried as a whole."""


@dataclass
class BatchResult:
    decisions: list[tuple[bytes, bytes]] = field(default_factory=list)
    segments: list[tuple[bytes, bytes]] = field(default_factory=list)
    # Keyed by customer where known (streamproc.events.codec.deadletter_key): never None, the
    # topic is compacted.
    deadletters: list[tuple[bytes, bytes]] = field(default_factory=list)
    # Customers erased by this batch: a tombstone (null value) for each goes to the decisions,
    # segments and dead-letter topics (compacted), so the cleaner removes their records.
    erased: list[bytes] = field(default_factory=list)
    # Observations for the learning topic (streamproc.learning.observations).
    learning: list[tuple[bytes, bytes]] = field(default_factory=list)
    # Events for the input topics, keyed by the customer they are for: an identifier's profile
    # carried to its customer (profile_merge), an event under an alias forwarded to the
    # customer (docs/identity.md). (logical input topic, key, value).
    forwards: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    # Index entries (key, member) of the timers fired, removed once the batch is published.
    timers_done: list[tuple[str, str]] = field(default_factory=list)
    timers_fired: int = 0
    applied: int = 0
    redelivered: int = 0
    duplicates: int = 0
    # Events applied but not profiled: their customer has no personalisation consent.
    unprofiled: int = 0
    # Identifiers merged into a customer's profile, and events forwarded from an alias; on the
    # identifier's side, identifiers made aliases (identify) and aliases ended (unlink).
    merged: int = 0
    forwarded: int = 0
    linked: int = 0
    unlinked: int = 0
    # Profiles reduced to their consent record (consent withdrawn, or missing) by this batch.
    withheld: int = 0
    # Stored profiles taken from the worker's cache, and parsed (STREAMPROC_PROFILE_CACHE).
    cache_hits: int = 0
    cache_misses: int = 0
    # Messages found off their key's murmur2 partition: (topic, "deadletter" | "warn") -> count.
    wrong_partition: dict[tuple[str, str], int] = field(default_factory=dict)
    # Events of erased customers from before their erasure, not applied: topic -> count
    # (streamproc.state.erasure).
    suppressed: dict[str, int] = field(default_factory=dict)


async def erase_customer(store: Store, customer_id: str, event_id: str, ts_ms: int,
                         trigger: dict[str, Any] | None, result: BatchResult, *,
                         suppress_ms: int, erased_ms: int | None = None) -> int:
    """Erase a customer: the one way, for an ``erase`` event, ``streamproc forget`` and the
    API's ``DELETE /v1/customers/{id}``.

    Their keys go from the store now (profile, outbox, latest decisions, timer index entries;
    the RFM histograms lose their counts), and the erasure is recorded for ``suppress_ms``
    (STREAMPROC_ERASURE_SUPPRESS_DAYS) as at ``erased_ms`` (default ``ts_ms``), so that their
    events from before it, read later, are suppressed (:mod:`streamproc.state.erasure`);
    ``result`` gains what is left to publish: tombstones for the decisions, segments and
    dead-letter topics, and the learner's erase observation (event ``event_id`` at ``ts_ms``,
    read from ``trigger``; None for ``streamproc forget``), so it forgets their pending moments
    and purchases. Returns how many keys were deleted.
    """
    at_ms = ts_ms if erased_ms is None else erased_ms
    found = await store.read_profile(customer_id)
    deleted = 0
    # Every identifier merged into the customer's profile goes too (docs/identity.md): first,
    # so that a crash in between leaves the customer's list for the erasure done again.
    for alias in (found or {}).get("profile", {}).get("aliases") or ():
        if isinstance(alias, str) and CUSTOMER_ID.fullmatch(alias):
            deleted += await store.erase(alias, at_ms, suppress_ms)
            erasure_outputs(alias, event_id, ts_ms, trigger, result)
    deleted += await store.erase(customer_id, at_ms, suppress_ms)
    erasure_outputs(customer_id, event_id, ts_ms, trigger, result)
    return deleted


def erasure_outputs(customer_id: str, event_id: str, ts_ms: int,
                    trigger: dict[str, Any] | None, result: BatchResult) -> None:
    """What an erasure publishes (see :func:`erase_customer`): tombstones and the learner's
    erase observation."""
    result.erased.append(customer_id.encode())
    result.learning.append((customer_id.encode(), orjson.dumps(erase_record(
        customer_id, event_id, ts_ms, trigger))))


class SegmentUpdater(Protocol):
    """Re-segments a profile after each event (:class:`~streamproc.segments.segmenter.Segmenter`
    is the real one, :class:`NoSegments` the stand-in)."""

    async def refresh(self, store: Store) -> None: ...

    def update(self, p: Profile, event: Event, trigger: dict[str, Any],
               changed_parts: Collection[str] | None = None,
               memo: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Recompute the profile's segments; return the moves (records for the segments topic).

        ``changed_parts``: the parts of the profile the event changed (None: unknown, every
        segmentation runs); ``memo``: the updater's notes on this customer, kept with the
        profile between its events (empty when it is parsed again)."""
        ...

    def buckets(self, p: Profile) -> tuple[str, ...]: ...


class Scorer(Protocol):
    """Scores a profile after each event with the served models (streamproc.learning.scorer)."""

    async def refresh(self) -> None:
        """Before each batch: serve a newer model snapshot if there is one."""
        ...

    def update(self, p: Profile, event: Event,
               changed_parts: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Score the event into the profile; return observations for the learning topic.
        ``changed_parts``: what the event changed in the profile (None: unknown)."""
        ...

    def model_versions(self) -> dict[str, str]:
        """The versions of the models served, for decision records."""
        ...


class NoSegments:
    async def refresh(self, store: Store) -> None:
        return None

    def update(self, p: Profile, event: Event, trigger: dict[str, Any],
               changed_parts: Collection[str] | None = None,
               memo: dict[str, Any] | None = None) -> list[dict[str, Any]]:
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
    trigger = read_from(event.message)
    return [{"topic": "learning",
             "record": lesson_record(event.customer_id, event.event_id, event.ts_ms, le, trigger)}
            for le in lessons]


def region_report(event: Event) -> tuple[str, dict[str, Any]] | None:
    """The region and report of a region's ``context_update`` (customer id
    ``region:<region>``: :mod:`streamproc.state.regions`); None for a customer's event;
    DecodeError (dead-lettered with the reason) for an invalid region id, or another event type
    under a region's id.

    >>> from streamproc.events.codec import RawMessage
    >>> m = RawMessage("streamproc.profiles", 0, 1, b"region:city:paris", b"")
    >>> region_report(Event("context_update", "region:City:Paris", "e1", 5, {"weather": "rain"},
    ...                     m))
    ('city:paris', {'ts_ms': 5, 'weather': 'rain'})
    """
    if not event.customer_id.startswith(REGION_PREFIX):
        return None
    if event.type != "context_update":
        raise DecodeError("reserved_id",
                          f"{event.type}: customer ids starting {REGION_PREFIX!r} name regions, "
                          "for their context_update only; use another id for a customer",
                          event.customer_id)
    try:
        region = validate_region(event.customer_id[len(REGION_PREFIX):])
    except InvalidRegionError as exc:
        raise DecodeError("invalid_region", f"context_update: {exc}",
                          event.customer_id) from None
    report: dict[str, Any] = {"ts_ms": event.ts_ms}
    report.update((k, event.data[k]) for k in REGION_FIELDS if k in event.data)
    return region, report


def source_of(event: Event) -> Source:
    msg = event.message
    return Source(event.type, event.event_id, event.customer_id, event.data["ts"], event.ts_ms,
                  msg.topic, msg.partition, msg.offset, msg.timestamp_ms)


def default_engine(settings: Settings) -> Engine:
    """The engine on the configured catalogue (reloaded when it changes), choosing uniformly
    until a learning chooser is given (the worker gives it the bandit: streamproc.worker.app),
    recommending with no relations until the scorer serves some."""
    path = settings.catalogue or default_catalogue_path()
    return Engine(CatalogueFile(path, activity_days=settings.activity_days), UniformChooser(),
                  consent_defaults=settings.consent_granted_by_default(),
                  recommender=Recommender.from_settings(settings),
                  trust_levels=settings.trust_level_map())


@dataclass
class _CustomerOutcome:
    write: Write | None
    # What to publish: {"topic": "decisions" | "segments" | "learning", "record": {...}}, in
    # order. With the outbox's outputs of the partitions this batch did not read, it is the
    # customer's new outbox.
    outputs: list[dict[str, Any]]
    deadletters: list[tuple[Event, str]]
    # Fired (or stale) timers' index entries, dropped once the batch is published.
    timers_done: list[tuple[str, str]] = field(default_factory=list)
    # What the write stores, parsed: kept in the processor's cache once the write went through.
    kept: _Kept | None = None
    fired: int = 0
    applied: int = 0
    redelivered: int = 0
    duplicates: int = 0
    # Events suppressed (an erased customer's, from before the erasure).
    suppressed: list[Event] = field(default_factory=list)
    unprofiled: int = 0
    withheld: int = 0
    merged: int = 0
    forwarded: int = 0
    linked: int = 0
    unlinked: int = 0
    # Where in ``outputs`` the customer's profile was last withheld (their latest decisions are
    # deleted and only the decisions after it kept as latest); None: it was not.
    withheld_at: int | None = None
    # KPI counter increments, carried in the customer's write (streamproc.decisions.kpis).
    kpis: Tally = field(default_factory=dict)
    # ``outputs``' records as JSON, when the write serialised them (in the same order): the
    # outbox is built from these bytes and the batch publishes them, serialised once.
    encoded: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Kept:
    """A customer's profile and outbox as this worker last wrote them: the bytes stored, and
    the objects they were serialised from (used again only while Redis holds those bytes)."""

    doc: bytes
    outbox: bytes
    profile: Profile
    outputs: list[dict[str, Any]]
    # The notes kept with this profile: the segmenter's (SegmentUpdater.update's memo) and
    # the timer index entries of the write (timers.settle).
    memo: dict[str, Any] = field(default_factory=dict)


class Processor:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        decoder: Decoder | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        segmenter: SegmentUpdater | None = None,
        scorer: Scorer | None = None,
        engine: Engine | None = None,
        partition_check: PartitionCheck | None = None,
    ) -> None:
        self.store = store
        self.decoder = decoder or Decoder(settings)
        # Whether each message is on its key's partition (the worker gives the check, with the
        # topics' real partition counts; none: not checked).
        self.partition_check = (partition_check if partition_check is not None
                                and partition_check.enabled else None)
        self._unreported_wrong = 0  # processed on a wrong partition, not yet in a log line
        self._wrong_reported_at = float("-inf")
        self.dedupe_window = settings.dedupe_window
        self.compression = settings.state_compression
        self.clock_ms = clock_ms
        self.segmenter: SegmentUpdater = segmenter or NoSegments()
        # The lifecycle thresholds, for the time-driven lifecycle timer (none without segments).
        self.segment_config = getattr(self.segmenter, "config", None)
        self.scorer: Scorer = scorer or NoScoring()
        self.profile_config = ProfileConfig(settings.affinity_half_life_days,
                                            settings.activity_days,
                                            settings.trust_conflict_days,
                                            settings.trust_level_map())
        self.ttl_ms = settings.customer_ttl_days * 86_400_000
        self.suppress_ms = settings.erasure_suppress_days * 86_400_000
        self._unreported_suppressed = 0  # events suppressed, not yet in a log line
        self._suppressed_reported_at = float("-inf")
        self.engine = engine or default_engine(settings)
        self.app_id = settings.app_id
        # Run only the segmentations, rules, feature sets and triggers that read a part of the
        # profile an event changed (STREAMPROC_SKIP_UNCHANGED; off: all of them, every event).
        self.skip_unchanged = settings.skip_unchanged
        self.timer_lateness_ms = settings.timer_lateness_seconds * 1000
        self.timer_limit = settings.timers_per_batch
        self.kpis = KpiCounter(settings.app_id, settings.attribution_hours * 3_600_000,
                               settings.kpi_days)
        # The profiles this worker wrote last, most recent last (STREAMPROC_PROFILE_CACHE).
        self.cache_size = settings.profile_cache
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self.cache_hits = self.cache_misses = 0  # since the processor started
        # The regions' context (streamproc.state.regions), read every REGION_CONTEXT_SECONDS.
        self.regions = RegionContexts(settings.region_context_seconds)

    async def process(self, messages: Sequence[RawMessage]) -> BatchResult:
        result = BatchResult()
        hits, misses = self.cache_hits, self.cache_misses
        now_ms = self.clock_ms()
        by_customer: dict[str, list[Event]] = {}
        seen: dict[int, int] = {}  # partition -> latest event time read (timers' watermarks)
        if self.partition_check is not None:
            self.partition_check.refresh()
        reports: list[tuple[str, dict[str, Any]]] = []  # the regions' context_updates
        for msg in messages:
            try:
                event = self.decoder.decode(msg)
                reported = region_report(event)
            except DecodeError as exc:
                result.deadletters.append((deadletter_key(msg, exc.customer_id),
                                           deadletter_record(msg, exc.reason, exc.message,
                                                             now_ms)))
                continue
            if reported is not None:
                reports.append(reported)
                continue
            check = self.partition_check
            if check is not None and (want := check.expected(msg)) is not None:
                counted = (msg.topic, check.mode)
                result.wrong_partition[counted] = result.wrong_partition.get(counted, 0) + 1
                if check.mode == "deadletter":
                    result.deadletters.append((deadletter_key(msg, event.customer_id),
                                               deadletter_record(
                        msg, "wrong_partition", check.error(msg, want), now_ms)))
                    continue
                self._report_wrong_partition(check, msg, want)
            by_customer.setdefault(event.customer_id, []).append(event)
            seen[msg.partition] = max(seen.get(msg.partition, 0), event.ts_ms)

        await self.segmenter.refresh(self.store)
        await self.scorer.refresh()
        # The regions' reports first (the customers' decisions of this batch see them), each
        # in its own key: never part of a customer's atomic write. Keeping one again (a
        # redelivery) changes nothing: only a newer report replaces a region's context.
        for region, report in reports:
            if len(report) > 1 and await self.store.save_region(region, report):
                self.regions.put(region, report)
        result.applied += len(reports)
        await self.regions.refresh(self.store)
        # An erase supersedes everything before it: the customer's keys go now, the learner is
        # told to forget them (before any observation of this batch: those are all of events
        # after the erase), and the events after it (if any) start a new profile.
        erasures = BatchResult()
        for cid, events in by_customer.items():
            erases = [i for i, e in enumerate(events) if e.type == "erase"]
            if erases:
                self._kept.pop(cid, None)
                erase = events[erases[-1]]
                # Erased as of the request's time: the later of the event's own and its
                # record's (streamproc.state.erasure says why both count).
                erased_ms = max(erase.ts_ms, erase.message.timestamp_ms or 0)
                if self.suppress_ms and (
                        await self.store.load([cid]))[cid].erased_ms >= erased_ms:
                    # Done before (a redelivered erase, or a later erasure recorded): what the
                    # store holds now came after it and stays; its outputs go out again, as
                    # a redelivered batch's do (tombstones only remove what precedes them).
                    erasure_outputs(cid, erase.event_id, erase.ts_ms,
                                    read_from(erase.message), erasures)
                else:
                    await erase_customer(self.store, cid, erase.event_id, erase.ts_ms,
                                         read_from(erase.message), erasures,
                                         suppress_ms=self.suppress_ms, erased_ms=erased_ms)
                by_customer[cid] = events[erases[-1] + 1:]
        result.erased = erasures.erased
        pending = {cid: events for cid, events in by_customer.items() if events}
        read_order: list[tuple[str, int, int]] = []  # of result.learning's records
        # Timers due by the partitions' new watermarks (streamproc.decisions.timers), asked in
        # the round trip of the events' write when it can be.
        ask = seen if seen and self.timer_limit else None
        asked = await self._commit(pending, self._apply_customer, result, read_order,
                                   now_ms, ask)
        # A timer that fires may arm the next one already due (lifecycle: at risk, then
        # lapsed; a cascade's next step): a few rounds, each only when the one before fired.
        done: set[str] = set()
        for _ in range(TIMER_ROUNDS if ask else 0):
            due: dict[str, list[timers.Due]] = {}
            if asked is None:
                asked = await self.store.due_timers(self.app_id, seen, self.timer_lateness_ms,
                                                    self.timer_limit)
            parts, asked = asked, None
            for part in parts:
                for text in part.members:
                    entry = timers.parse_member(text, part.partition)
                    if entry is not None and entry.member in done:
                        continue  # fired this batch; its entry goes once the batch is out
                    if entry is None:  # not ours: dropped, so it cannot block the index
                        log.warning("dropping unreadable timer index entry %r", text[:200])
                        result.timers_done.append(
                            (timer_index_key(self.app_id, part.partition), text))
                    else:
                        due.setdefault(entry.customer_id, []).append(entry)
                        done.add(entry.member)
            if not due:
                break
            await self._commit(due, self._fire_timers, result, read_order, now_ms)
        # Observations grouped by the partition their events were read from, in offset order,
        # not by customer: the learner's watermark follows each partition's event time, so it
        # needs each partition's observations in order (streamproc.models.join).
        order = sorted(range(len(read_order)), key=read_order.__getitem__)
        result.learning = erasures.learning + [result.learning[i] for i in order]
        result.cache_hits = self.cache_hits - hits
        result.cache_misses = self.cache_misses - misses
        return result

    def _report_wrong_partition(self, check: PartitionCheck, msg: RawMessage,
                                want: int) -> None:
        """Log a message processed on the wrong partition, at most every WRONG_PARTITION_LOG_S
        seconds (saying how many were processed since the last line)."""
        self._unreported_wrong += 1
        now = time.monotonic()
        if now - self._wrong_reported_at < WRONG_PARTITION_LOG_S:
            return
        log.warning("%d message(s) processed on the wrong partition (STREAMPROC_PARTITION_CHECK"
                    "=warn) since the last report, e.g. %s:%d: %s", self._unreported_wrong,
                    msg.source, msg.offset, check.error(msg, want))
        self._unreported_wrong = 0
        self._wrong_reported_at = now

    def _report_suppressed(self, count: int, event: Event) -> None:
        """Log suppressed events (``count``, one of them ``event``) without personal data
        (where one was read, its type), at most every WRONG_PARTITION_LOG_S seconds, with how
        many there were since."""
        self._unreported_suppressed += count
        now = time.monotonic()
        if now - self._suppressed_reported_at < WRONG_PARTITION_LOG_S:
            return
        msg = event.message
        log.info("%d event(s) of erased customers suppressed since the last report, dated or "
                 "produced before their erasure (STREAMPROC_ERASURE_SUPPRESS_DAYS), e.g. a %s "
                 "at %s@%d", self._unreported_suppressed, event.type, msg.source, msg.offset)
        self._unreported_suppressed = 0
        self._suppressed_reported_at = now

    async def settle(self, result: BatchResult) -> None:
        """Once a batch's records are published: drop the index entries of the timers it fired
        (a worker that dies before this fires them again, and publishes them again)."""
        if not result.timers_done:
            return
        try:
            await self.store.clear_timers(result.timers_done)
        except Exception as exc:  # they come due again and are dropped then
            log.warning("could not clear %d fired timers' index entries (%s: %s)",
                        len(result.timers_done), type(exc).__name__, exc)

    async def _commit(self, pending: dict[str, Any],
                      apply: Callable[[str, Any, Stored, int], _CustomerOutcome],
                      result: BatchResult,
                      read_order: list[tuple[str, int, int]], now_ms: int,
                      ask: Mapping[int, int] | None = None) -> list[DueTimers] | None:
        """Apply each customer's items, save with compare-and-set, collect what to publish;
        customers whose state changed under us are read and computed again.

        With ``ask`` (the batch's latest event time per partition), the first write also asks
        which timers came due, in the same round trip. The answer is returned when every
        write went through at the first attempt; otherwise (or with nothing to write) None,
        and the caller asks after the rewrites, which may have indexed timers of their own."""
        answer: list[DueTimers] | None = None
        for attempt in range(MAX_CAS_ATTEMPTS):
            if not pending:
                break
            stored = await self.store.load(list(pending))
            outcomes = {cid: apply(cid, items, stored[cid], now_ms)
                        for cid, items in pending.items()}
            writes = [o.write for o in outcomes.values() if o.write is not None]
            if writes and ask is not None and attempt == 0:
                lost_ids, answer = await self.store.save_then_due(
                    writes, self.app_id, ask, self.timer_lateness_ms, self.timer_limit)
                lost = set(lost_ids)
            else:
                lost = set(await self.store.save(writes)) if writes else set()
            for cid, outcome in outcomes.items():
                if cid in lost:
                    continue
                if outcome.kept is not None and self.cache_size:
                    self._keep(cid, outcome.kept)
                result.applied += outcome.applied
                result.redelivered += outcome.redelivered
                result.duplicates += outcome.duplicates
                for event in outcome.suppressed:
                    topic = event.message.topic
                    result.suppressed[topic] = result.suppressed.get(topic, 0) + 1
                if outcome.suppressed:
                    self._report_suppressed(len(outcome.suppressed), outcome.suppressed[0])
                result.unprofiled += outcome.unprofiled
                result.withheld += outcome.withheld
                result.merged += outcome.merged
                result.forwarded += outcome.forwarded
                result.linked += outcome.linked
                result.unlinked += outcome.unlinked
                result.timers_fired += outcome.fired
                result.timers_done.extend(outcome.timers_done)
                key = cid.encode()
                targets = {"decisions": result.decisions, "segments": result.segments,
                           "learning": result.learning}
                encoded = outcome.encoded or [orjson.dumps(o["record"]) for o in outcome.outputs]
                for out, record in zip(outcome.outputs, encoded, strict=True):
                    if out["topic"] == FORWARD:
                        result.forwards.append((out["to"], out["key"].encode(), record))
                        continue
                    targets[out["topic"]].append((key, record))
                    if out["topic"] == "learning":
                        trigger = place_of(out)
                        read_order.append((trigger["topic"], trigger["partition"],
                                           trigger["offset"]))
                for event, error in outcome.deadletters:
                    record = deadletter_record(event.message, "processing_error", error, now_ms)
                    result.deadletters.append((key, record))
            if lost:
                log.warning("state of %d customers changed under us; recomputing", len(lost))
                answer = None
            pending = {cid: pending[cid] for cid in lost}
        if pending:
            raise StateConflictError(
                f"{len(pending)} customers kept changing under this worker "
                f"({MAX_CAS_ATTEMPTS} attempts); is another worker writing the same partitions?"
            )
        return answer

    def _keep(self, cid: str, kept: _Kept) -> None:
        self._kept[cid] = kept
        self._kept.move_to_end(cid)
        if len(self._kept) > self.cache_size:
            self._kept.popitem(last=False)

    def _load(self, cid: str, stored: Stored
              ) -> tuple[Profile, list[dict[str, Any]], dict[str, Any]]:
        """The customer's profile and outbox from what Redis holds (a new profile if nothing),
        and the segmenter's notes on that profile (empty unless it came from the cache).

        When Redis holds exactly the bytes this worker last wrote, the objects they were
        serialised from are used instead of parsing them again. The cache entry is taken out
        either way: a batch that fails after changing the profile leaves nothing behind that
        differs from Redis, and the entry comes back only with a write that went through.
        """
        kept = self._kept.pop(cid, None)
        if not stored.doc:
            return new_profile(cid), upgrade_outbox(unpack_outbox(stored.outbox)), {}
        if kept is not None and kept.doc == stored.doc and kept.outbox == stored.outbox:
            self.cache_hits += 1
            return kept.profile, kept.outputs, kept.memo
        self.cache_misses += 1
        return (upgrade_profile(unpack_doc(stored.doc)),
                upgrade_outbox(unpack_outbox(stored.outbox)), {})

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
        p, previous_outbox, memo = self._load(cid, stored)
        applied: dict[str, int] = p.setdefault("applied", {})
        recent: list[str] = p.setdefault("recent_event_ids", [])
        before = timers.indexed(p)
        out = _CustomerOutcome(None, [], [])
        changed = False
        for event in events:
            msg = event.message
            if msg.offset <= applied.get(msg.source, -1):
                out.redelivered += 1
                out.outputs.extend(
                    o for o in previous_outbox
                    if (t := place_of(o))["topic"] == msg.topic
                    and t["partition"] == msg.partition and t["offset"] == msg.offset
                )
                continue
            if suppressed(stored.erased_ms, event.ts_ms, msg.timestamp_ms):
                # An erased customer's event from before the erasure (redelivered, retried,
                # replayed): it must not build the profile again. Not dead-lettered either
                # (that would copy it); counted and logged without personal data.
                out.suppressed.append(event)
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
                if (event.type in IDENTITY_TYPES or alias_target(p) is not None) \
                        and self._identity(p, event, out):
                    memo.clear()  # a merge or an alias changed the profile wholesale
                    out.applied += 1
                    continue
                if not self._consents(p, event, out):
                    memo.clear()  # its segments may have been left: nothing known of them
                    out.applied += 1
                    continue
                if event.type == SERVED:  # decided by the HTTP API: recorded, not re-decided
                    out.outputs.extend(self._served(p, event, out.kpis))
                    out.applied += 1
                    continue
                parts: Collection[str] | None = apply_event(
                    p, event.type, event.ts_ms, event.data, self.profile_config)
                if not self.skip_unchanged:
                    parts = None
                scores, cluster = dict(p.get("scores") or {}), p.get("cluster")
                out.outputs.extend({"topic": "learning", "record": o}
                                   for o in self.scorer.update(p, event, parts))
                if parts is not None and ((p.get("scores") or {}) != scores
                                          or p.get("cluster") != cluster):
                    parts = {*parts, "scores", "cluster"}
                moves = self.segmenter.update(p, event, trigger_of(event), parts, memo)
                out.outputs.extend({"topic": "segments", "record": m} for m in moves)
                if event.type == "feedback":
                    out.outputs.extend(lesson_outputs(
                        event, self.engine.feedback(p, event.data, event.ts_ms)))
                # The engine runs only when one of its triggers may fire: the event's type has
                # one, or a segment moved (Engine.may_fire).
                decided = Decided()
                if not self.skip_unchanged or self.engine.may_fire(event.type, moves):
                    # Asked per event: the reload timer may swap the served model between
                    # batches' awaits, and the record names the model that scored this event.
                    with region_surroundings(p, self.regions.contexts):
                        decided = self.engine.decide(p, source_of(event), event.data, moves,
                                                     now_ms, self.scorer.model_versions())
                out.outputs.extend({"topic": "decisions", "record": r} for r in decided.records)
                out.outputs.extend(lesson_outputs(event, decided.lessons))
                self.kpis.count(p, event.type, event.ts_ms, event.data, decided.records,
                                out.kpis)
                self.kpis.count_moves(moves, event.ts_ms, out.kpis)
                timers.after_event(p, self.engine.current(), event.type, event.ts_ms,
                                   event.data, decided.records, self.segment_config,
                                   msg.partition)
            except StreamprocError as exc:  # bad input the schema could not catch (a slot
                # the catalogue does not have): dead-lettered with its reason, no traceback
                log.warning("%s %s dead-lettered: %s", event.type, event.event_id, exc)
                raise _PoisonEventError(event, str(exc)[:500]) from exc
            except Exception as exc:  # a bug in profile or policy code must not stop the stream
                log.exception("processing %s %s failed", event.type, event.event_id)
                raise _PoisonEventError(event, f"{type(exc).__name__}: {exc}"[:500]) from exc
            out.applied += 1
        if changed:
            # What the outbox may drop: per input partition, the outputs up to the last offset
            # this batch read there (see _write).
            read: dict[tuple[str, int], int] = {}
            for e in events:
                place = (e.message.topic, e.message.partition)
                read[place] = max(read.get(place, -1), e.message.offset)
            self._write(out, cid, p, stored, previous_outbox, read, before, now_ms, memo=memo)
        return out

    def _identity(self, p: Profile, event: Event, out: _CustomerOutcome) -> bool:
        """The identity steps (docs/identity.md): an event under an alias is forwarded to its
        customer; ``identify`` turns the profile into an alias and carries what it held to the
        customer (a profile_merge); ``profile_merge`` combines it, once; ``unlink`` ends an
        alias. True when the event was handled here (False: an ordinary event, applied as
        usual)."""
        msg, data = event.message, event.data
        place = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
        target = alias_target(p)
        if event.type == "unlink":
            if target is not None:  # the customer forgets the identifier; it starts afresh
                out.outputs.append(forward_output("profiles", target, {
                    "event_id": f"unlink:{event.event_id}", "type": "profile_merge",
                    "customer_id": target, "ts": data["ts"], "merge_id": event.event_id,
                    "identifier": event.customer_id, "unlinked": True}, place))
                unlinked(p)
                out.unlinked += 1
            return True
        if target is not None:
            if event.type == "identify":
                if data["identified_as"] != target:
                    raise IdentityError(
                        f"{event.customer_id} is identified as {target} already: send an "
                        f"unlink for it first, then identify it as {data['identified_as']}")
                return True  # said again: nothing changes
            # Under an alias: the customer's event (its id kept, so the customer's duplicate
            # window drops a copy), on the customer's partition of the same topic.
            out.outputs.append(forward_output(
                self.decoder.logical_topic[msg.topic], target,
                {**data, "customer_id": target}, place))
            out.forwarded += 1
            return True
        if event.type == "identify":
            customer = data["identified_as"]
            if customer == event.customer_id:
                raise IdentityError(f"identify: identified_as is the identifier itself "
                                    f"({customer}); name the customer it belongs to")
            # A copy: the rest of the batch goes on changing the profile's lists (the
            # duplicate window) before the outbox is serialised.
            carried = orjson.loads(orjson.dumps(
                {k: p[k] for k in CARRIED if k in p}))  # type: ignore[literal-required]
            moves = leave_all(p, event, trigger_of(event), MERGED)
            out.outputs.extend({"topic": "segments", "record": m} for m in moves)
            self.kpis.count_moves(moves, event.ts_ms, out.kpis)
            out.outputs.append(forward_output("profiles", customer, {
                "event_id": f"merge:{event.event_id}", "type": "profile_merge",
                "customer_id": customer, "ts": data["ts"], "merge_id": event.event_id,
                "identifier": event.customer_id, "profile": carried}, place))
            out.outputs.append({"topic": "learning", "record": alias_record(
                event.customer_id, event.event_id, event.ts_ms, customer,
                read_from(event.message))})
            alias_profile(p, customer)
            out.linked += 1
            out.withheld_at = len(out.outputs)  # its latest decisions go with the rest
            return True
        if event.type == "profile_merge":
            self._merge(p, event, out)
            return True
        return False

    def _merge(self, p: Profile, event: Event, out: _CustomerOutcome) -> None:
        """Apply a profile_merge to the customer's profile, once per merge (``p["merged"]``)."""
        data = event.data
        identifier = data["identifier"]
        token = event_token(f"{identifier}:{data['merge_id']}")
        merged = p.setdefault("merged", [])
        if token in merged:
            out.duplicates += 1
            return
        merged.append(token)
        del merged[:-MAX_MERGES]
        aliases = p.setdefault("aliases", [])
        if data.get("unlinked"):
            if identifier in aliases:
                aliases.remove(identifier)
            return
        other: dict[str, Any] = data.get("profile") or {}
        for alias in [identifier, *(other.get("aliases") or ())]:
            if alias not in aliases and alias != event.customer_id:
                aliases.append(alias)
        del aliases[:-MAX_ALIASES]
        consent = p.setdefault("consent", {})
        merge_consent(consent, other.get("consent") or {})
        if not self._consents(p, event, out):
            return  # the stricter consent denies profiling: nothing of the identifier is kept
        merge_profile(p, other, self.profile_config)
        merge_history(p, other.get("decisions") or {})
        timers.merge_timers(p, other.get("timers") or {}, event.message.partition)
        merge_memory(p, other.get("kpi") or {})
        recent = p.setdefault("recent_event_ids", [])
        recent[:0] = [t for t in other.get("recent_event_ids") or () if t not in recent]
        if self.dedupe_window:
            del recent[: -self.dedupe_window]
        moves = [{**m, "reason": MERGED}
                 for m in self.segmenter.update(p, event, trigger_of(event))]
        out.outputs.extend({"topic": "segments", "record": m} for m in moves)
        self.kpis.count_moves(moves, event.ts_ms, out.kpis)
        out.merged += 1

    def _consents(self, p: Profile, event: Event, out: _CustomerOutcome) -> bool:
        """Whether ``event`` is profiled: its customer has personalisation consent (a
        consent_update's answer taken first). If not, a profile profiled until now is
        withheld: reduced to its consent record, its segments left (the exits published),
        the learner told to forget the customer (see the module docstring)."""
        if event.type == "consent_update":
            record_consent(p, event.ts_ms, event.data)
        if profiling(p, self.engine.consent_defaults):
            return True
        if p.get("first_seen_ms") is not None or p.get("segments"):  # profiled until now
            trigger = trigger_of(event)
            answered = PROFILING_PURPOSE in (p.get("consent") or {})
            out.outputs.extend({"topic": "segments", "record": m} for m in leave_all(
                p, event, trigger, CONSENT_WITHDRAWN if answered else CONSENT_NOT_GIVEN))
            out.outputs.append({"topic": "learning", "record": erase_record(
                event.customer_id, event.event_id, event.ts_ms, read_from(event.message))})
            withhold(p)
            out.withheld += 1
            out.withheld_at = len(out.outputs)
        if event.type != "consent_update":
            out.unprofiled += 1
        return False

    def _served(self, p: Profile, event: Event, tally: Tally) -> list[dict[str, Any]]:
        """A decision the HTTP API served: its exposure recorded, counted in the KPIs as the
        worker's own decisions are (once: see KpiCounter.count_served), and the record
        published (and kept as the latest for its slot) with this event as its trigger's place,
        so a redelivered batch publishes it again from the outbox like any decision."""
        lessons = self.engine.served(p, event.data, event.ts_ms)
        msg, record = event.message, event.data["decision"]
        record = {**record, "trigger": {**record["trigger"], "topic": msg.topic,
                                        "partition": msg.partition, "offset": msg.offset}}
        self.kpis.count_served(p, record, event.ts_ms, tally)
        return [{"topic": "decisions", "record": record}, *lesson_outputs(event, lessons)]

    def _write(self, out: _CustomerOutcome, cid: str, p: Profile, stored: Stored,
               previous_outbox: list[dict[str, Any]], read: Mapping[tuple[str, int], int],
               before: set[tuple[int, int, str]], now_ms: int,
               fired: Sequence[tuple[int, int, str]] = (),
               memo: dict[str, Any] | None = None) -> None:
        """The customer's write (``out.write``), with its outbox: ``out.outputs`` and what the
        previous outbox keeps (see :func:`outbox_keeps`; ``read``: the last offset this batch
        read of each input partition), and its decisions as the latest per slot; and what the
        cache keeps of it (``out.kept``, with the segmenter's ``memo`` on ``p``: none when
        something else changed it)."""
        kept = [o for o in previous_outbox if outbox_keeps(o, read)] if read else previous_outbox
        outbox = kept + out.outputs
        index = timers.settle(p, cid, self.app_id, before, fired, memo)
        decided = [o for o in out.outputs if o["topic"] == "decisions"]
        if out.withheld_at is not None:
            # Only what was decided after the withdrawal (a new grant's) may be the latest, not
            # what a redelivered event published again from the outbox.
            again = {id(o) for o in previous_outbox}
            decided = [o for o in out.outputs[out.withheld_at:]
                       if o["topic"] == "decisions" and id(o) not in again]
        latest, latest_ttl_ms = latest_fields([o["record"] for o in decided], now_ms)
        if out.withheld_at is not None:  # the latest decisions kept before are deleted first
            latest_ttl_ms = -max(latest_ttl_ms, 1)
        # Each new record serialised once: the outbox embeds the bytes, the batch publishes them.
        out.encoded = [orjson.dumps(o["record"]) for o in out.outputs]
        packed = [{**o, "record": orjson.Fragment(record)}
                  for o, record in zip(out.outputs, out.encoded, strict=True)]
        out.write = Write(
            cid, stored.version, pack_doc(p, self.compression),
            pack_outbox(kept + packed, self.compression),
            self.segmenter.buckets(p), self.ttl_ms,
            index.entries, index.add, index.remove, latest, latest_ttl_ms,
            tally_fields(out.kpis), stored.erased_ms,
        )
        out.kept = _Kept(out.write.doc, out.write.outbox, p, outbox,
                         {} if memo is None else memo)

    def _fire_timers(self, cid: str, due: list[timers.Due], stored: Stored,
                     now_ms: int) -> _CustomerOutcome:
        """A customer's timers that came due: fire those still armed as indexed, re-index
        those that moved later, publish again what an already fired one decided."""
        out = _CustomerOutcome(None, [], [])
        if stored.doc is None:  # erased or expired since: nothing to fire
            self._kept.pop(cid, None)
            out.timers_done = [(timer_index_key(self.app_id, d.partition), d.member)
                               for d in due]
            return out
        p, previous_outbox, _ = self._load(cid, stored)
        before = timers.indexed(p)
        if not profiling(p, self.engine.consent_defaults):
            # Armed while they were profiled (STREAMPROC_CONSENT_DEFAULTS changed since, or a
            # profile of an older version): none fires, none stays armed.
            p.pop("timers", None)
            out.timers_done = [(timer_index_key(self.app_id, d.partition), d.member)
                               for d in due]
            self._write(out, cid, p, stored, previous_outbox, {}, before, now_ms)
            return out
        fired: list[tuple[int, int, str]] = []
        replaced: set[tuple[str, int, int]] = set()
        changed = False
        cat = self.engine.current()
        for d in sorted(due, key=lambda d: (d.due_ms, d.name)):
            entry = (p.get("timers") or {}).get(d.name)
            topic = f"timer.{d.name}"
            if entry is None or entry.get("at") != [d.partition, d.due_ms]:
                # Fired before (the worker died before its index entry was dropped) or gone:
                # what it decided is published again, if the outbox still has it.
                out.outputs.extend(
                    o for o in previous_outbox
                    if place_of(o)["topic"] == topic and place_of(o)["offset"] == d.due_ms)
                out.timers_done.append((timer_index_key(self.app_id, d.partition), d.member))
                out.redelivered += 1
                continue
            changed = True
            if entry["due"] > d.due_ms:
                entry["at"] = None  # moved later since it was indexed: index it again
                continue
            fired.append((d.partition, d.due_ms, d.name))
            out.timers_done.append((timer_index_key(self.app_id, d.partition), d.member))
            replaced.add((topic, d.partition, d.due_ms))
            timers.disarm(p, d.name)
            p["clock_ms"] = max(p.get("clock_ms") or 0, d.due_ms)
            event = Event(TIMER, cid, f"timer:{d.name}:{d.due_ms}", d.due_ms,
                          {"ts": iso_ms(d.due_ms), "timer": d.name},
                          RawMessage(topic, d.partition, d.due_ms, cid.encode(), None))
            unfired = orjson.loads(orjson.dumps(p))
            try:
                with region_surroundings(p, self.regions.contexts):
                    records = self._fire(p, cat, d, entry, event, now_ms, out)
                self.kpis.count_decisions(p, records, d.due_ms, out.kpis)
            except Exception as exc:  # a bug must not block the index: logged, dead-lettered
                log.exception("timer %s of %s failed; dropped", d.name, cid)
                p = unfired  # nothing half-fired is saved
                out.deadletters.append((event, f"timer {d.name}: {type(exc).__name__}: {exc}"))
                continue
            out.outputs.extend({"topic": "decisions", "record": r} for r in records)
            out.fired += 1
        if changed:
            # A fired timer's outputs stay in the outbox after its batch (its index entry may
            # outlive the batch, and one batch can fire several of a customer's timers): the
            # outputs of the customer's last TIMER_OUTBOX_FIRES fired timers are kept.
            def group(o: dict[str, Any]) -> tuple[str, int, int] | None:
                t = place_of(o)
                return ((t["topic"], t["partition"], t["offset"])
                        if t["topic"].startswith("timer.") else None)

            older = sorted({g for o in previous_outbox if (g := group(o)) and g not in replaced},
                           key=lambda g: g[2])
            keep = set(older[max(0, len(older) + len(replaced) - TIMER_OUTBOX_FIRES):])
            self._write(out, cid, p, stored,
                        [o for o in previous_outbox if (g := group(o)) is None or g in keep],
                        {}, before, now_ms, fired)
        return out

    def _fire(self, p: Profile, cat: Any, d: timers.Due, entry: dict[str, Any], event: Event,
              now_ms: int, out: _CustomerOutcome) -> list[dict[str, Any]]:
        """One timer's work (already disarmed); returns its decision records."""
        src = source_of(event)
        versions = self.scorer.model_versions()
        if d.name == LIFECYCLE_TIMER:
            moves = self.segmenter.update(p, event, trigger_of(event))
            out.outputs.extend({"topic": "segments", "record": m} for m in moves)
            decided = self.engine.decide(p, src, event.data, moves, now_ms, versions)
            self.kpis.count_moves(moves, d.due_ms, out.kpis)
            if self.segment_config is not None:
                due = timers.next_lifecycle_due(p, d.due_ms, self.segment_config)
                if due is not None:
                    timers.arm(p, LIFECYCLE_TIMER, due, d.partition)
        else:
            trigger = timers.trigger_of_timer(cat, d.name, entry)
            if trigger is None:
                log.info("timer %s of %s: its trigger left the catalogue; nothing decided",
                         d.name, event.customer_id)
                return []
            if not d.name.startswith(timers.CASCADE):
                decided = self.engine.decide_timer(p, src, trigger, trigger.slots, now_ms,
                                                   versions)
            else:
                return self._cascade_step(p, cat, d, entry, trigger, event, now_ms, versions,
                                          out)
        out.outputs.extend(lesson_outputs(event, decided.lessons))
        timers.arm_cascades(p, cat, decided.records, d.due_ms, d.partition)
        return decided.records

    def _cascade_step(self, p: Profile, cat: Any, d: timers.Due, entry: dict[str, Any],
                      trigger: Any, event: Event, now_ms: int, versions: dict[str, str],
                      out: _CustomerOutcome) -> list[dict[str, Any]]:
        step = int(entry.get("step", 0))
        if step >= len(trigger.cascade) or trigger.cascade[step].slot not in cat.slots:
            return []  # the catalogue's cascade changed: it ends here
        hop = trigger.cascade[step]
        wait = timers.quiet_wait_ms(p, cat, cat.slots[hop.slot].channel, d.due_ms)
        if wait:  # quiet hours: the same step when they end
            timers.arm(p, d.name, d.due_ms + wait, d.partition, **{
                k: v for k, v in entry.items() if k not in {"due", "p", "at"}})
            return []
        previous = cat.slots[trigger.cascade[step - 1].slot if step else trigger.slots[0]]
        note = (f"trigger {trigger.id}, cascade step {step + 2} of {len(trigger.cascade) + 1}: "
                f"no open, click or purchase {hop.after_hours:g} h after the {previous.channel}")
        decided = self.engine.decide_timer(p, source_of(event), trigger, (hop.slot,), now_ms,
                                           versions, check_when=False,
                                           carry=entry.get("action"), note=note)
        out.outputs.extend(lesson_outputs(event, decided.lessons))
        record = decided.records[0]
        if step + 1 < len(trigger.cascade) and timers.cascade_continues(record):
            timers.arm(p, d.name, d.due_ms + trigger.cascade[step + 1].ms, d.partition,
                       step=step + 1, ids=[*entry["ids"], record["decision_id"]],
                       action=record["action"]["id"] if record["personalised"]
                       else entry.get("action"),
                       since=entry["since"], trigger=trigger.id)
        return decided.records


def outbox_keeps(output: dict[str, Any], read: Mapping[tuple[str, int], int]) -> bool:
    """Whether a customer's write keeps ``output`` of its previous outbox, given the last
    offset the batch read of each input partition (``read``).

    An output stays until a batch read its trigger's partition up to its offset: that batch
    published it again (a redelivered event publishes what its outbox holds for it), or it was
    published and its offset committed before. The outputs of later offsets stay, whatever
    else the write changes. After a crash the next worker reads a partition again from the
    committed offset in batches cut elsewhere than the dead worker's: its first batch may hold
    only part of the events whose outputs were never published, and when it changes the
    customer (with a new event of another partition) the rest must still be there when the
    next batch reads them again. The outputs of partitions the batch did not read (a timer's
    among them) stay too.

    >>> out = {"topic": "decisions", "record": {"trigger": {"topic": "browsing",
    ...                                                     "partition": 1, "offset": 7}}}
    >>> [outbox_keeps(out, r) for r in ({}, {("browsing", 1): 6}, {("browsing", 1): 7},
    ...                                 {("browsing", 2): 9}, {("purchases", 1): 9})]
    [True, True, False, True, True]
    """
    trigger = place_of(output)
    last = read.get((trigger["topic"], trigger["partition"]))
    return last is None or trigger["offset"] > last


def place_of(output: dict[str, Any]) -> dict[str, Any]:
    """Where the event an outbox output came from was read: its record's trigger, or for an
    event forwarded to the customer an identifier belongs to (whose record is the event
    itself), the output's own ``trigger`` (streamproc.state.identity).

    >>> place_of({"topic": "forward", "to": "browsing", "key": "c1", "record": {},
    ...           "trigger": {"topic": "browsing", "partition": 0, "offset": 3}})["offset"]
    3
    """
    place: dict[str, Any] = output.get("trigger") or output["record"]["trigger"]
    return place


def upgrade_outbox(outbox: list[Any]) -> list[dict[str, Any]]:
    """An outbox as this version writes it: the first versions kept bare decision records.

    >>> upgrade_outbox([{"decision_id": "d1", "trigger": {}}])
    [{'topic': 'decisions', 'record': {'decision_id': 'd1', 'trigger': {}}}]
    """
    return [o if "record" in o else {"topic": "decisions", "record": o}
            for o in outbox if isinstance(o, dict)]


def forward_output(topic: str, customer_id: str, record: dict[str, Any],
                   place: dict[str, Any]) -> dict[str, Any]:
    """An outbox output publishing ``record`` (an event) on input ``topic``, keyed by
    ``customer_id``; ``place``: where its trigger was read (:func:`place_of`)."""
    return {"topic": FORWARD, "to": topic, "key": customer_id, "record": record,
            "trigger": place}


class IdentityError(StreamprocError):
    """An identity event that cannot apply (dead-lettered with this reason)."""


class _PoisonEventError(Exception):
    def __init__(self, event: Event, error: str) -> None:
        super().__init__(error)
        self.event = event
        self.error = error
