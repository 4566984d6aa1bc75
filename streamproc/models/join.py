"""Event-time label joining for the one learner: snapshots and purchases, in either order.

The scoring workers publish, for every scored browsing event, a *snapshot* (customer, event id,
event time, features, the score given) and, for every purchase, the purchase (customer, event
id, event time). They arrive at the learner roughly, not exactly, in event time: the browsing
and purchases topics are consumed independently, workers run at different speeds, and
redelivered batches publish again. :class:`LabelJoin` turns them into labels that do not depend
on the arrival order, as long as the disorder stays within ``lateness_ms`` of event time:

* the *watermark* is the event time before which every event is assumed to have arrived. Each
  observation names its *source* (the topic-partition it was read from: a partition is read in
  order, but two partitions, or the browsing and purchases topics, can be hours of event time
  apart while a backlog is read): the watermark is the smallest of the sources' latest event
  times, minus ``lateness_ms`` (disorder within a source). A source more than ``idle_ms``
  behind the latest event time seen is left out (a partition with no traffic must not hold
  every label back): the watermark never lags the latest event time by more than ``idle_ms``.
  ``sources`` names the sources expected (every partition of the browsing and purchases
  topics); until every one of them has delivered, the watermark stays ``idle_ms`` behind the
  latest event time seen, so a learner that starts reading before every partition delivered
  does not run ahead, whichever partition it happens to read first (the first one read can be
  hours of event time ahead of the others); one that has not delivered ``idle_ms`` after the
  first event seen is left out, as an idle one;
* snapshots are thinned: per customer, the latest one in each ``min_gap_ms`` bucket of event time
  (default ``horizon / 5``), so a long session gives a few labels, not hundreds, and the one kept
  does not depend on the arrival order;
* once the watermark passes a bucket's end plus the horizon, its snapshot (taken at ``t``) is
  labelled: **positive** when the customer has a purchase in ``[t, t + horizon]``, whichever
  arrived first, else **negative**. Because the watermark is global, the windows of a customer
  who never comes back close as the rest of the stream moves on: no per-customer timer;
* a snapshot of a bucket already labelled (later than the allowance) is dropped and counted in
  ``too_late``; a second snapshot or purchase with an event id already seen is ignored
  (``duplicates``);
* an erased customer is forgotten (:meth:`LabelJoin.forget`): their pending snapshots go
  unlabelled and their purchases go (the event ids seen stay, until they age out as above).

The whole object pickles (it is part of the learner's signed snapshot), so a learner restored
from a snapshot and fed the rest of the topic gives the labels an uninterrupted one gives.

>>> join = LabelJoin(horizon_ms=30 * 60_000, lateness_ms=60_000, idle_ms=3_600_000)
>>> join.snapshot("c1", "e1", 0, {"cart": 1.0}, 0.4)
[]
>>> join.purchase("c1", "e2", 10 * 60_000)  # labels come when the window closes
[]
>>> join.snapshot("c2", "e3", 11 * 60_000, {"cart": 0.0}, 0.1)
[]
>>> [(s.customer_id, s.label) for s in join.snapshot("c3", "e4", 38 * 60_000, {}, None)]
[('c1', True)]
>>> [(s.customer_id, s.label) for s in join.snapshot("c3", "e5", 49 * 60_000, {}, None)]
[('c2', False)]
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable
from typing import NamedTuple

from streamproc.models.labels import Features, Labelled


class _Pending(NamedTuple):
    ts_ms: int
    event_id: str
    features: Features
    score: float | None


class LabelJoin:
    """Snapshots and purchases in, labels out; see the module docstring."""

    # The expected sources that have not delivered yet (a class default: snapshots pickled
    # before it existed restore with every source counted as seen).
    _unseen: frozenset[str] = frozenset()

    def __init__(self, horizon_ms: int, lateness_ms: int, idle_ms: int | None = None,
                 min_gap_ms: int | None = None, sources: Iterable[str] = ()) -> None:
        if horizon_ms <= 0 or lateness_ms < 0 or (min_gap_ms is not None and min_gap_ms <= 0):
            raise ValueError("horizon_ms and min_gap_ms must be positive, lateness_ms not "
                             "negative")
        self.horizon_ms = horizon_ms
        self.lateness_ms = lateness_ms
        self.idle_ms = lateness_ms if idle_ms is None else max(idle_ms, lateness_ms)
        self.min_gap_ms = min_gap_ms or max(1, horizon_ms // 5)
        # (customer, bucket) -> the latest snapshot of that bucket; heap of (due, customer,
        # bucket): labelled when the watermark reaches ``due``.
        self.pending: dict[tuple[str, int], _Pending] = {}
        self._due: list[tuple[int, str, int]] = []
        self.purchases: dict[str, list[int]] = {}
        self._purchase_heap: list[tuple[int, str]] = []
        self.seen: dict[str, int] = {}
        self._seen_heap: list[tuple[int, str]] = []
        self.max_ts: int | None = None
        self.expected = tuple(sources)
        self.sources: dict[str, int] = {}  # source -> its latest event time
        self._watermark: int | None = None
        self.duplicates = 0
        self.too_late = 0

    @property
    def watermark(self) -> int | None:
        """Event time up to which every event is assumed seen (None before any event)."""
        return self._watermark

    def _compute_watermark(self) -> int:
        assert self.max_ts is not None
        idle_floor = self.max_ts - self.idle_ms
        # A source yet to deliver may be anywhere up to idle_ms behind: it holds the watermark
        # at the idle floor until idle_ms of event time have passed since the first event seen
        # (its entry in `sources`), then it is left out like any idle source.
        if any(self.sources[name] >= idle_floor for name in self._unseen):
            return idle_floor
        slowest = min((ts for ts in self.sources.values() if ts >= idle_floor),
                      default=self.max_ts)
        return max(slowest - self.lateness_ms, idle_floor)

    def _due_ms(self, bucket: int) -> int:
        """When a bucket's snapshot is labelled: past any of its snapshots' horizon."""
        return (bucket + 1) * self.min_gap_ms + self.horizon_ms

    def _first_sight(self, event_id: str, ts_ms: int) -> bool:
        if event_id in self.seen:
            self.duplicates += 1
            return False
        self.seen[event_id] = ts_ms
        heapq.heappush(self._seen_heap, (ts_ms, event_id))
        return True

    def snapshot(self, customer_id: str, event_id: str, ts_ms: int, features: Features,
                 score: float | None, source: str = "") -> list[Labelled]:
        """A browsing moment was scored; returns the labels whose window closed since."""
        if not self._first_sight(event_id, ts_ms):
            return []
        bucket = ts_ms // self.min_gap_ms
        due = self._due_ms(bucket)
        w = self.watermark
        if w is not None and w >= due:
            self.too_late += 1
        else:
            key = (customer_id, bucket)
            kept = self.pending.get(key)
            if kept is None:
                heapq.heappush(self._due, (due, customer_id, bucket))
            if kept is None or (ts_ms, event_id) > (kept.ts_ms, kept.event_id):
                self.pending[key] = _Pending(ts_ms, event_id, features, score)
        return self._advance(source, ts_ms)

    def purchase(self, customer_id: str, event_id: str, ts_ms: int,
                 source: str = "") -> list[Labelled]:
        """A purchase: it makes the customer's snapshots of the horizon before it positive."""
        if not self._first_sight(event_id, ts_ms):
            return []
        bisect.insort(self.purchases.setdefault(customer_id, []), ts_ms)
        heapq.heappush(self._purchase_heap, (ts_ms, customer_id))
        return self._advance(source, ts_ms)

    def forget(self, customer_id: str) -> int:
        """An erased customer: drop their pending moments (never labelled) and purchases, and
        their heap entries, so that the learner's next snapshot names them nowhere (an
        erasure is rare: rebuilding both heaps is fine); returns how many entries went."""
        keys = [key for key in self.pending if key[0] == customer_id]
        for key in keys:
            del self.pending[key]
        self._due = [e for e in self._due if e[1] != customer_id]
        heapq.heapify(self._due)
        self._purchase_heap = [e for e in self._purchase_heap if e[1] != customer_id]
        heapq.heapify(self._purchase_heap)
        return len(keys) + len(self.purchases.pop(customer_id, ()))

    def rename(self, customer_id: str, to: str) -> int:
        """An identifier merged into a customer (docs/identity.md): its pending moments and
        purchases become the customer's (a moment of a bucket both have keeps the later
        snapshot), so a purchase after login labels the moments before it; returns how many
        entries moved.

        >>> j = LabelJoin(horizon_ms=100, lateness_ms=0)
        >>> _ = j.snapshot("anon-1", "e1", 10, {"x": 1.0}, 0.5)
        >>> j.rename("anon-1", "c1"), sorted(j.pending)
        (1, [('c1', 0)])
        """
        if customer_id == to:
            return 0
        moved = 0
        for key in [key for key in self.pending if key[0] == customer_id]:
            theirs = self.pending.pop(key)
            new = (to, key[1])
            ours = self.pending.get(new)
            if ours is None:
                heapq.heappush(self._due, (self._due_ms(key[1]), to, key[1]))
            if ours is None or (theirs.ts_ms, theirs.event_id) > (ours.ts_ms, ours.event_id):
                self.pending[new] = theirs
            moved += 1
        bought = self.purchases.pop(customer_id, None)
        if bought:
            merged = self.purchases.setdefault(to, [])
            for ts in bought:
                bisect.insort(merged, ts)
            self._purchase_heap = [(ts, to if c == customer_id else c)
                                   for ts, c in self._purchase_heap]
            heapq.heapify(self._purchase_heap)
            moved += len(bought)
        return moved

    def _bought(self, customer_id: str, ts_ms: int) -> bool:
        bought = self.purchases.get(customer_id, ())
        i = bisect.bisect_left(bought, ts_ms)
        return i < len(bought) and bought[i] <= ts_ms + self.horizon_ms

    def _advance(self, source: str, ts_ms: int) -> list[Labelled]:
        if self.max_ts is None:
            self.sources = dict.fromkeys(self.expected, ts_ms)
            self._unseen = frozenset(self.expected)
        unseen = self._unseen
        if source in unseen:  # its first observation: where it is, even behind the others
            self._unseen = unseen = unseen - {source}
        elif ts_ms <= self.sources.get(source, ts_ms - 1):
            return []
        self.sources[source] = ts_ms
        self.max_ts = ts_ms if self.max_ts is None else max(self.max_ts, ts_ms)
        w = self._compute_watermark()
        if self._watermark is not None and w <= self._watermark:
            return []
        self._watermark = w
        out: list[Labelled] = []
        due = self._due
        while due and due[0][0] <= w:
            _, customer_id, bucket = heapq.heappop(due)
            s = self.pending.pop((customer_id, bucket), None)
            if s is None:  # forgotten (an erasure), or a second entry of a forgotten key
                continue
            out.append(Labelled(s.features, self._bought(customer_id, s.ts_ms), s.ts_ms,
                                s.score, customer_id))
        # Nothing pending is older than w - horizon - gap: purchases and ids before are done.
        floor = w - 2 * self.horizon_ms - self.min_gap_ms
        heap = self._seen_heap
        while heap and heap[0][0] < floor:
            _, event_id = heapq.heappop(heap)
            del self.seen[event_id]
        heap = self._purchase_heap
        while heap and heap[0][0] < floor:
            ts, customer_id = heapq.heappop(heap)
            bought = self.purchases.get(customer_id)
            if bought is None or ts not in bought:
                continue  # forgotten (an erasure)
            bought.remove(ts)
            if not bought:
                del self.purchases[customer_id]
        return out

    def stats(self) -> dict[str, int]:
        return {
            "pending": len(self.pending),
            "duplicates": self.duplicates,
            "too_late": self.too_late,
            "watermark_ms": self.watermark or 0,
        }
