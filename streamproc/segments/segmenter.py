"""Re-segment a customer on every event: the glue between the processor and ``segments/``.

Only the segmentations that read a part of the profile the event changed run
(:data:`~streamproc.segments.assign.READS`; the others would give the segment they have): the
processor says what the event changed and keeps this segmenter's notes on the customer (the
time, the base's cuts and the rules of their last update, whether a segment moved, and until
when RFM and lifecycle hold: they read the time, and run again only once it reaches the moment
their answer can change) with the cached profile. A profile read from Redis has no notes:
everything runs.

RFM scores are quantiles of the whole customer base. The base lives in Redis as histograms
(``streamproc.state.keys.HISTOGRAMS``) that the state write moves atomically with each profile:
the customer's last purchase day, its repeat-purchase-days bucket and its order-value bucket.
The last purchase *day* is stored rather than days-since-purchase because it only changes when
the customer buys; days-since-purchase is derived from it at each event's time, so the base stays
consistent while time passes. Each worker re-reads the histograms every few seconds.

Every move between segments becomes a record for the segments topic, and moves (not first
assignments) are kept, compactly, in the profile's ``segment_history``. A customer who
withdraws personalisation consent leaves every segment at once (:func:`leave_all`,
reason ``consent_withdrawn``), so that systems targeting the segments stop targeting them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

from streamproc.days import DAY_MS
from streamproc.events.codec import Event
from streamproc.segments import (
    CUSTOM_PREFIX,
    Cuts,
    RuleFile,
    SegmentConfig,
    Transition,
    assign_deferred,
    bucket_of,
    changed,
    cuts_from_histograms,
)
from streamproc.segments.assign import CLOCK_PARTS, IDLE, TIMED
from streamproc.segments.assignment import Deferred
from streamproc.settings import Settings
from streamproc.state.profile import Profile
from streamproc.state.store import Store

HISTOGRAM_REFRESH_S = 5.0
# Segmentations whose moves are not kept in the profile's segment history.
TRANSIENT = frozenset({"intent", "cluster"})
# The reasons of the exits published when a customer withdraws personalisation consent, and
# when a profile kept under an earlier default that granted it lacks the customer's answer.
CONSENT_WITHDRAWN = "consent_withdrawn"
CONSENT_NOT_GIVEN = "consent_not_given"


def rfm_buckets(p: Profile) -> tuple[str, str, str]:
    """The customer's place in each base histogram: (last purchase day, F bucket, M bucket)."""
    buys = p["purchases"]
    if not buys["days"]:
        return ("", "", "")
    last_day = max(int(d) for d in buys["days"])
    frequency = len(buys["days"]) - 1
    order_value = buys["total"] / buys["orders"]
    return (str(last_day), str(bucket_of("frequency", frequency)),
            str(bucket_of("monetary", order_value)))


def base_cuts(histograms: dict[str, dict[str, int]], today: int,
              min_customers: int) -> dict[str, Cuts]:
    """Quintile cuts of the base as of epoch day ``today``."""
    recency: dict[int, int] = {}
    for day, n in histograms.get("last_purchase_day", {}).items():
        bucket = bucket_of("recency_days", max(0, today - int(day)))
        recency[bucket] = recency.get(bucket, 0) + n
    return cuts_from_histograms(
        {
            "recency_days": recency,
            "frequency": {int(b): n for b, n in histograms.get("frequency", {}).items()},
            "monetary": {int(b): n for b, n in histograms.get("monetary", {}).items()},
        },
        min_customers,
    )


class Segmenter:
    """Every segmentation of a customer, built in and from the rules file, after each event;
    the processor's ``SegmentUpdater``."""

    def __init__(
        self,
        settings: Settings,
        config: SegmentConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or SegmentConfig(activity_days=settings.activity_days)
        # The first load raises ConfigError with every problem: a worker does not start on a
        # broken rules file. Later edits are checked the same way but never stop it.
        self.rule_file = (
            RuleFile(settings.segment_rules, activity_days=settings.activity_days)
            if settings.segment_rules else None
        )
        self.history = settings.segment_history
        self.clock = clock
        self._histograms: dict[str, dict[str, int]] = {}
        self._next_refresh = 0.0
        self._cuts: tuple[int, dict[str, Cuts]] | None = None
        # Bumped when the cuts' values change (not on every refresh): RFM runs again then.
        self._cuts_version = 0
        self._last_cuts: dict[str, Cuts] | None = None

    async def refresh(self, store: Store) -> None:
        if self.clock() < self._next_refresh:
            return
        self._histograms = await store.histograms()
        self._cuts = None
        self._next_refresh = self.clock() + HISTOGRAM_REFRESH_S

    def cuts(self, today: int) -> dict[str, Cuts]:
        if self._cuts is None or self._cuts[0] != today:
            cuts = base_cuts(self._histograms, today, self.config.rfm_min_customers)
            if cuts != self._last_cuts:
                self._cuts_version += 1
                self._last_cuts = cuts
            self._cuts = (today, cuts)
        return self._cuts[1]

    def update(self, p: Profile, event: Event, trigger: dict[str, Any],
               changed_parts: Collection[str] | None = None,
               memo: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Re-segment ``p`` after ``event``; return the moves (segments topic records).

        With ``changed_parts`` (what the event changed in ``p``) and ``memo`` (what this
        segmenter noted in the customer's last update, kept by the caller with the profile;
        empty: nothing known), only the segmentations reading a changed part run
        (:data:`~streamproc.segments.assign.READS`); the segments moved since count as a
        changed part, and so does the time for RFM and lifecycle once it reaches the moment
        their answer can change by time alone (noted when they last ran). Otherwise every
        one runs.
        """
        # The customer's time: their latest event, or a timer that fired later (a lifecycle
        # move in time, streamproc.decisions.timers): a late event does not turn it back.
        now_ms = max(event.ts_ms, p["last_seen_ms"] or event.ts_ms, p.get("clock_ms") or 0)
        # Ahead of their last event: a timer moved the customer's clock (a lifecycle move).
        ahead = now_ms != p["last_seen_ms"]
        rules = self.rule_file.current() if self.rule_file else None
        cuts = self.cuts(now_ms // DAY_MS)
        parts = None
        if (changed_parts is not None and memo and memo.get("cuts", -1) == self._cuts_version
                and memo["rules"] is rules):
            parts = self._changed_since(memo, changed_parts, now_ms, ahead)
        new = assign_deferred(p, now_ms, cuts, rules, self.config, parts)
        moves = changed(p["segments"], new, complete=parts is None)
        if memo is not None:
            until = memo.setdefault("until", {})
            for name in TIMED:  # noted when they ran (always when parts is None), kept else
                ran = new.get(name)
                if isinstance(ran, Deferred):
                    until[name] = ran.until_ms
            memo.update(cuts=self._cuts_version, rules=rules, now_ms=now_ms, moved=bool(moves),
                        ahead=ahead)
        if not moves:
            return []
        segments, history = p["segments"], p["segment_history"]
        for move in moves:
            if move.to is None:
                segments.pop(move.segmentation, None)
            else:
                segments[move.segmentation] = move.to
            # The intent tier follows a score that moves on most browsing events: its moves
            # are published, but kept out of the short history, which is for customer moves.
            if move.from_ is not None and self.history and move.segmentation not in TRANSIENT:
                history.append([move.segmentation, move.from_, move.to, event.ts_ms])
        del history[: -self.history or len(history)]
        return move_records(moves, event, trigger)

    @staticmethod
    def _changed_since(memo: dict[str, Any], changed_parts: Collection[str], now_ms: int,
                       ahead: bool) -> set[str]:
        """What changed since the customer's last update (``memo``): the event's parts, and
        the segmenter's own (see :data:`~streamproc.segments.assign.READS`)."""
        parts = set(changed_parts)
        before = memo["now_ms"]
        if before != now_ms:
            if before // DAY_MS != now_ms // DAY_MS:
                parts.add("day")
            for name, clock in CLOCK_PARTS.items():
                due = memo["until"][name]
                if now_ms < before or (due is not None and now_ms >= due):
                    parts.add(clock)
        if ahead or memo["ahead"]:
            parts.add(IDLE)
        if memo["moved"]:
            parts.add("segments")
        return parts

    def buckets(self, p: Profile) -> tuple[str, ...]:
        return rfm_buckets(p)


def move_records(moves: list[Transition], event: Event,
                 trigger: dict[str, Any]) -> list[dict[str, Any]]:
    """Records for the segments topic, one per move."""
    return [
        {
            "customer_id": event.customer_id,
            "segmentation": move.segmentation,
            "from": move.from_,
            "to": move.to,
            "reason": move.reason,
            "custom": move.segmentation.startswith(CUSTOM_PREFIX),
            "ts": event.data["ts"],
            "trigger": trigger,
        }
        for move in moves
    ]


def leave_all(p: Profile, event: Event, trigger: dict[str, Any],
              reason: str = CONSENT_WITHDRAWN) -> list[dict[str, Any]]:
    """The customer leaves every segment they are in (at ``event``, which withdrew their
    consent): the exits, with ``reason``; the profile's segments and history are emptied."""
    moves = [Transition(name, segment, None, reason)
             for name, segment in sorted((p.get("segments") or {}).items())]
    p["segments"], p["segment_history"] = {}, []
    return move_records(moves, event, trigger)
