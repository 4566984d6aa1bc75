"""Delayed labels for purchase intent: join feature snapshots with the purchases that follow.

A snapshot of a customer's intent features is taken when a browsing event is scored; whether it
was a *buying* moment is only known later. :class:`PendingLabels` keeps the snapshots until
their label is known, entirely in **event time**:

* ``on_purchase(customer, t)`` labels every pending snapshot of that customer taken in
  ``[t - horizon, t]`` **positive** and forgets it (so a duplicate purchase labels nothing);
* ``expire(now)`` labels every snapshot taken before ``now - horizon`` **negative**: no purchase
  came within the horizon. ``now`` is the stream's event-time watermark (for example the
  largest event time seen, minus the lateness the worker tolerates): a purchase that arrives
  after its snapshots expired cannot turn them positive any more.

A purchase later than ``horizon`` after a snapshot leaves it pending, to expire as a negative.
Snapshots taken after a purchase's event time (out-of-order arrival) wait for a later one.
Labels come back as :class:`Labelled` tuples ``(features, label, ts_ms, score, customer_id)``:
the snapshot's event time, and the score the model gave it then (if ``add`` was given one).

The pending set is bounded, which also thins the training sample: per customer at most one
snapshot per ``min_gap_ms`` bucket of event time (the latest one in the bucket replaces the
earlier; with the defaults, one per minute) and at most ``max_per_customer`` snapshots (the
oldest is dropped unlabelled). With a 30-minute horizon and one per minute, 30 is a full
horizon's worth.

Nothing here does I/O. ``to_dict``/``from_dict`` (everything) and ``customer_to_list``/
``load_customer`` (one customer, e.g. a field of the customer's Redis hash) are JSON-able, so a
worker can persist the pending snapshots and resume with exactly the same labels.

>>> labels = PendingLabels(horizon_ms=30 * 60_000)
>>> labels.add("c1", 0, {"cart_value": 3.4})
>>> labels.add("c2", 0, {"cart_value": 0.0})
>>> [(s.features, s.label) for s in labels.on_purchase("c1", 10 * 60_000)]
[({'cart_value': 3.4}, True)]
>>> labels.on_purchase("c1", 10 * 60_000)  # a duplicate purchase labels nothing twice
[]
>>> [(s.features, s.label) for s in labels.expire(31 * 60_000)]
[({'cart_value': 0.0}, False)]
"""

from __future__ import annotations

import bisect
import heapq
from typing import Any, NamedTuple

Features = dict[str, float]
FORMAT = 1


class Labelled(NamedTuple):
    """A snapshot with its label: ``score`` is what the model said when the snapshot was taken."""

    features: Features
    label: bool
    ts_ms: int
    score: float | None
    customer_id: str


class _Snapshot(NamedTuple):
    ts_ms: int
    features: Features
    score: float | None


class PendingLabels:
    """Feature snapshots awaiting their purchase label (see the module docstring)."""

    def __init__(
        self, horizon_ms: int = 30 * 60_000, min_gap_ms: int = 60_000, max_per_customer: int = 30
    ) -> None:
        if horizon_ms <= 0 or min_gap_ms <= 0 or max_per_customer <= 0:
            raise ValueError("horizon_ms, min_gap_ms and max_per_customer must be positive")
        self.horizon_ms = horizon_ms
        self.min_gap_ms = min_gap_ms
        self.max_per_customer = max_per_customer
        # customer -> snapshots sorted by event time
        self._pending: dict[str, list[_Snapshot]] = {}
        # (ts_ms, customer): when to look at a customer again; stale entries are skipped
        self._heap: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return sum(len(items) for items in self._pending.values())

    def customers(self) -> list[str]:
        return list(self._pending)

    def add(
        self, customer_id: str, ts_ms: int, features: Features, score: float | None = None
    ) -> None:
        """Keep a snapshot taken at event time ``ts_ms`` (and the score given then) for labelling.

        Passing the score lets the model's metrics judge the prediction that was actually made
        at that moment (see :meth:`IntentModel.observe <streamproc.models.intent.IntentModel>`).
        """
        items = self._pending.setdefault(customer_id, [])
        snapshot = _Snapshot(ts_ms, features, score)
        bucket = ts_ms // self.min_gap_ms
        i = bisect.bisect_right(items, ts_ms, key=lambda s: s.ts_ms)
        # Same bucket as a neighbour: the later of the two stays.
        if i > 0 and items[i - 1].ts_ms // self.min_gap_ms == bucket:
            items[i - 1] = snapshot
        elif i < len(items) and items[i].ts_ms // self.min_gap_ms == bucket:
            return
        else:
            items.insert(i, snapshot)
            if len(items) > self.max_per_customer:
                del items[0]
        heapq.heappush(self._heap, (ts_ms, customer_id))

    def on_purchase(self, customer_id: str, ts_ms: int) -> list[Labelled]:
        """The customer's snapshots within the horizon before ``ts_ms``, labelled positive."""
        items = self._pending.get(customer_id)
        if not items:
            return []
        start = ts_ms - self.horizon_ms
        hit = [s for s in items if start <= s.ts_ms <= ts_ms]
        if hit:
            rest = [s for s in items if not start <= s.ts_ms <= ts_ms]
            if rest:
                self._pending[customer_id] = rest
            else:
                del self._pending[customer_id]
        return [Labelled(s.features, True, s.ts_ms, s.score, customer_id) for s in hit]

    def expire(self, now_ms: int) -> list[Labelled]:
        """Every snapshot older than the horizon at event time ``now_ms``, labelled negative.

        Ordered by snapshot time (then customer id), whatever the order of the calls that
        added them, so a restarted joiner yields the same sequence.
        """
        cutoff = now_ms - self.horizon_ms
        due: list[tuple[str, _Snapshot]] = []
        heap = self._heap
        while heap and heap[0][0] < cutoff:
            _, customer_id = heapq.heappop(heap)
            due.extend((customer_id, s) for s in self._expire_one(customer_id, cutoff))
        due.sort(key=lambda d: (d[1].ts_ms, d[0]))
        return [Labelled(s.features, False, s.ts_ms, s.score, c) for c, s in due]

    def expire_customer(self, customer_id: str, now_ms: int) -> list[Labelled]:
        """Like :meth:`expire` for one customer (a worker that just loaded this customer)."""
        expired = self._expire_one(customer_id, now_ms - self.horizon_ms)
        return [Labelled(s.features, False, s.ts_ms, s.score, customer_id) for s in expired]

    def due_ms(self, customer_id: str) -> int | None:
        """Event time after which the customer's oldest snapshot expires (e.g. a ZSET score)."""
        items = self._pending.get(customer_id)
        return items[0].ts_ms + self.horizon_ms + 1 if items else None

    def _expire_one(self, customer_id: str, cutoff: int) -> list[_Snapshot]:
        items = self._pending.get(customer_id)
        if not items or items[0].ts_ms >= cutoff:
            return []
        n = bisect.bisect_left(items, cutoff, key=lambda s: s.ts_ms)
        old = items[:n]
        del items[:n]
        if not items:
            del self._pending[customer_id]
        return old

    # -- persistence ----------------------------------------------------------------------------

    def customer_to_list(self, customer_id: str) -> list[list[Any]]:
        """One customer's pending snapshots, JSON-able: ``[[ts_ms, features, score], ...]``."""
        return [[s.ts_ms, dict(s.features), s.score] for s in self._pending.get(customer_id, [])]

    def load_customer(self, customer_id: str, items: list[list[Any]]) -> None:
        """Replace one customer's pending snapshots with ``customer_to_list``'s output."""
        restored = sorted(
            (_Snapshot(int(t), dict(f), None if p is None else float(p)) for t, f, p in items),
            key=lambda s: s.ts_ms,
        )
        if restored:
            self._pending[customer_id] = restored
            for s in restored:
                heapq.heappush(self._heap, (s.ts_ms, customer_id))
        else:
            self._pending.pop(customer_id, None)

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-able (settings included)."""
        return {
            "format": FORMAT,
            "horizon_ms": self.horizon_ms,
            "min_gap_ms": self.min_gap_ms,
            "max_per_customer": self.max_per_customer,
            "pending": {c: self.customer_to_list(c) for c in self._pending},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingLabels:
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown pending-labels format {data.get('format')!r}")
        labels = cls(data["horizon_ms"], data["min_gap_ms"], data["max_per_customer"])
        for customer_id, items in data["pending"].items():
            labels.load_customer(customer_id, items)
        return labels
