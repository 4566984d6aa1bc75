"""Event-time label joining for the one learner: snapshots and purchases, in either order.

The scoring workers publish, for every scored browsing event, a *snapshot* (customer, event id,
event time, features, the score given) and, for every purchase, the purchase (customer, event
id, event time). They arrive at the learner roughly, not exactly, in event time: the browsing
and purchases topics are consumed independently, and redelivered batches publish again.
:class:`LabelJoin` turns them into labels that do not depend on the arrival order:

* a snapshot taken at ``t`` is **positive** when the same customer has a purchase in
  ``[t, t + horizon]``, whichever of the two arrived first (recent purchase times are kept);
* it is **negative** once the *watermark* passes ``t + horizon`` with no such purchase. The
  watermark is the largest event time seen (of any customer) minus ``lateness_ms``, the
  disorder the learner tolerates. Because it is global, a customer who never comes back has
  their snapshots closed as the rest of the stream moves on: no per-customer timer;
* a snapshot that arrives after the watermark already passed its horizon (later than the
  allowance) is labelled at once against the purchases kept; one older than ``2 * horizon``
  behind the watermark is dropped, counted in ``too_late`` (its purchases may be forgotten);
* a second snapshot or purchase with an event id already seen is ignored (``duplicates``).

Pending snapshots are thinned as in :class:`~streamproc.models.labels.PendingLabels`: the latest
per ``min_gap_ms`` of a customer's event time (default ``horizon / 5``), so a long session gives
a few labels, not hundreds.

The whole object pickles (it is part of the learner's signed snapshot), so a learner restored
from a snapshot and fed the rest of the topic gives the labels an uninterrupted one gives.

>>> join = LabelJoin(horizon_ms=30 * 60_000, lateness_ms=60_000)
>>> join.snapshot("c1", "e1", 0, {"cart": 1.0}, 0.4)
[]
>>> [(s.customer_id, s.label) for s in join.purchase("c1", "e2", 10 * 60_000)]
[('c1', True)]
>>> join.snapshot("c2", "e3", 11 * 60_000, {"cart": 0.0}, 0.1)
[]
>>> [(s.customer_id, s.label) for s in join.snapshot("c3", "e4", 43 * 60_000, {}, None)]
[('c2', False)]
"""

from __future__ import annotations

import bisect
import heapq

from streamproc.models.labels import Features, Labelled, PendingLabels


class LabelJoin:
    """Snapshots and purchases in, labels out; see the module docstring."""

    def __init__(self, horizon_ms: int, lateness_ms: int, min_gap_ms: int | None = None) -> None:
        if horizon_ms <= 0 or lateness_ms < 0:
            raise ValueError("horizon_ms must be positive and lateness_ms not negative")
        self.horizon_ms = horizon_ms
        self.lateness_ms = lateness_ms
        self.min_gap_ms = min_gap_ms or max(1, horizon_ms // 5)
        # Everything within horizon + lateness of event time can be pending at once.
        max_pending = (horizon_ms + lateness_ms) // self.min_gap_ms + 2
        self.pending = PendingLabels(horizon_ms, self.min_gap_ms, max_pending)
        self.purchases: dict[str, list[int]] = {}
        self._purchase_heap: list[tuple[int, str]] = []
        self.seen: dict[str, int] = {}
        self._seen_heap: list[tuple[int, str]] = []
        self.max_ts: int | None = None
        self.duplicates = 0
        self.too_late = 0
        self.late_labelled = 0

    @property
    def watermark(self) -> int | None:
        """Event time up to which every purchase is assumed seen (None before any event)."""
        return None if self.max_ts is None else self.max_ts - self.lateness_ms

    def _floor(self) -> int | None:
        w = self.watermark
        return None if w is None else w - 2 * self.horizon_ms

    def _first_sight(self, event_id: str, ts_ms: int) -> bool:
        if event_id in self.seen:
            self.duplicates += 1
            return False
        floor = self._floor()
        if floor is not None and ts_ms < floor:
            self.too_late += 1
            return False
        self.seen[event_id] = ts_ms
        heapq.heappush(self._seen_heap, (ts_ms, event_id))
        return True

    def snapshot(self, customer_id: str, event_id: str, ts_ms: int, features: Features,
                 score: float | None) -> list[Labelled]:
        """A browsing moment was scored; returns the labels now known (maybe this one's)."""
        if not self._first_sight(event_id, ts_ms):
            return []
        out: list[Labelled] = []
        bought = self.purchases.get(customer_id, ())
        i = bisect.bisect_left(bought, ts_ms)
        w = self.watermark
        if i < len(bought) and bought[i] <= ts_ms + self.horizon_ms:
            out.append(Labelled(features, True, ts_ms, score, customer_id))
        elif w is not None and ts_ms + self.horizon_ms < w:
            self.late_labelled += 1
            out.append(Labelled(features, False, ts_ms, score, customer_id))
        else:
            self.pending.add(customer_id, ts_ms, features, score)
        out.extend(self._advance(ts_ms))
        return out

    def purchase(self, customer_id: str, event_id: str, ts_ms: int) -> list[Labelled]:
        """A purchase: its customer's pending snapshots of the horizon before it turn positive."""
        if not self._first_sight(event_id, ts_ms):
            return []
        bisect.insort(self.purchases.setdefault(customer_id, []), ts_ms)
        heapq.heappush(self._purchase_heap, (ts_ms, customer_id))
        out = self.pending.on_purchase(customer_id, ts_ms)
        out.extend(self._advance(ts_ms))
        return out

    def _advance(self, ts_ms: int) -> list[Labelled]:
        if self.max_ts is not None and ts_ms <= self.max_ts:
            return []
        self.max_ts = ts_ms
        floor = self.max_ts - self.lateness_ms - 2 * self.horizon_ms
        heap = self._seen_heap
        while heap and heap[0][0] < floor:
            _, event_id = heapq.heappop(heap)
            del self.seen[event_id]
        heap = self._purchase_heap
        while heap and heap[0][0] < floor:
            ts, customer_id = heapq.heappop(heap)
            bought = self.purchases[customer_id]
            bought.remove(ts)
            if not bought:
                del self.purchases[customer_id]
        return self.pending.expire(self.max_ts - self.lateness_ms)

    def stats(self) -> dict[str, int]:
        return {
            "pending": len(self.pending),
            "duplicates": self.duplicates,
            "too_late": self.too_late,
            "late_labelled": self.late_labelled,
            "watermark_ms": self.watermark or 0,
        }
