"""The state store's contract in a dict: for unit tests, the broker-free agent test and the
benchmarks that leave Redis out (:class:`streamproc.state.store.Store` documents it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from streamproc.state.erasure import erasure_token, new_erasure_key
from streamproc.state.keys import (
    HISTOGRAMS,
    customer_key,
    customer_keys,
    erased_key,
    latest_decisions_key,
    timer_index_key,
    timer_watermark_key,
)
from streamproc.state.regions import REGION_FIELDS
from streamproc.state.store import DueTimers, Stored, Write, decode_profile


class MemoryStore:
    """The same contract in a dict: for unit tests and the broker-free agent test."""

    def __init__(self, clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000
                 ) -> None:
        self.rows: dict[str, Stored] = {}
        # Suppression records (streamproc.state.erasure): key -> (erasure ms, expires at ms by
        # clock_ms, as Redis's PX).
        self.clock_ms = clock_ms
        self.erasure_key = new_erasure_key()
        self.erased: dict[str, tuple[int, int]] = {}
        self.buckets: dict[str, tuple[str, ...]] = {}
        self.hist: dict[str, dict[str, int]] = {name: {} for name in HISTOGRAMS}
        self.round_trips = 0
        # Timer indexes (key -> member -> due), watermarks (key -> ms), tidx per customer key.
        self.zsets: dict[str, dict[str, int]] = {}
        self.strings: dict[str, int] = {}
        self.tidx: dict[str, tuple[tuple[str, str], ...]] = {}
        # Latest decisions: key -> slot -> record JSON (no expiry: a reader checks expires_at).
        self.latest: dict[str, dict[str, bytes]] = {}
        # KPI counter hashes: key -> field -> count (no expiry).
        self.kpis: dict[str, dict[str, int]] = {}
        # Regions' contexts: region id -> surroundings with ts_ms (no expiry).
        self.regions: dict[str, dict[str, Any]] = {}

    async def load(self, customer_ids: Sequence[str]) -> dict[str, Stored]:
        self.round_trips += 1
        empty = Stored(0, None, None)
        found = {}
        for cid in customer_ids:
            row = self.rows.get(customer_key(cid), empty)
            erased = self._erased_ms(cid)
            found[cid] = Stored(row.version, row.doc, row.outbox, erased) if erased else row
        return found

    def _erased_ms(self, customer_id: str) -> int:
        key = erased_key(erasure_token(self.erasure_key, customer_id))
        erased_ms, expires_ms = self.erased.get(key, (0, 0))
        if erased_ms and self.clock_ms() >= expires_ms:
            del self.erased[key]
            return 0
        return erased_ms

    async def save(self, writes: Sequence[Write]) -> list[str]:
        self.round_trips += 1
        lost = []
        for w in writes:
            key = customer_key(w.customer_id)
            current = self.rows.get(key)
            if (current.version if current else 0) != w.expected_version or (
                    w.expected_version == 0 and self._erased_ms(w.customer_id) != w.erased_ms):
                lost.append(w.customer_id)
                continue
            self.rows[key] = Stored(w.expected_version + 1, w.doc, w.outbox)
            self._move(key, w.buckets or ("",) * len(HISTOGRAMS))
            self.tidx[key] = w.timers
            for index, member, due in w.timers_add:
                self.zsets.setdefault(index, {})[member] = due
            for index, member in w.timers_remove:
                self.zsets.get(index, {}).pop(member, None)
            if w.latest_ttl_ms < 0:
                self.latest.pop(latest_decisions_key(w.customer_id), None)
            if w.latest:
                self.latest.setdefault(latest_decisions_key(w.customer_id), {}).update(w.latest)
            for kpi_key, _, fields in w.kpis:
                counts = self.kpis.setdefault(kpi_key, {})
                for name, by in fields:
                    counts[name] = counts.get(name, 0) + by
        return lost

    def _move(self, key: str, new: tuple[str, ...]) -> None:
        old = self.buckets.pop(key, ("",) * len(HISTOGRAMS))
        for name, before, after in zip(HISTOGRAMS, old, new, strict=True):
            counts = self.hist[name]
            if before:
                counts[before] -= 1
            if after:
                counts[after] = counts.get(after, 0) + 1
        if any(new):
            self.buckets[key] = new

    async def read_profile(self, customer_id: str) -> dict[str, Any] | None:
        return decode_profile((await self.load([customer_id]))[customer_id])

    async def erase(self, customer_id: str, erased_ms: int = 0, suppress_ms: int = 0) -> int:
        if suppress_ms > 0 and erased_ms >= self._erased_ms(customer_id):
            key = erased_key(erasure_token(self.erasure_key, customer_id))
            self.erased[key] = (erased_ms, self.clock_ms() + suppress_ms)
        self._move(customer_key(customer_id), ("",) * len(HISTOGRAMS))
        for index, member in self.tidx.pop(customer_key(customer_id), ()):
            self.zsets.get(index, {}).pop(member, None)
        return (sum(self.rows.pop(k, None) is not None for k in customer_keys(customer_id))
                + (self.latest.pop(latest_decisions_key(customer_id), None) is not None))

    async def histograms(self) -> dict[str, dict[str, int]]:
        return {name: {b: n for b, n in counts.items() if n > 0}
                for name, counts in self.hist.items()}

    async def due_timers(self, app_id: str, seen: Mapping[int, int], lateness_ms: int,
                         limit: int) -> list[DueTimers]:
        self.round_trips += 1
        out = []
        for partition in sorted(seen):
            wm_key = timer_watermark_key(app_id, partition)
            wm = self.strings[wm_key] = max(self.strings.get(wm_key, 0), seen[partition])
            index = self.zsets.get(timer_index_key(app_id, partition), {})
            due = sorted((d, m) for m, d in index.items() if d <= wm - lateness_ms)[:limit]
            out.append(DueTimers(partition, wm, [m for _, m in due]))
        return out

    async def save_then_due(self, writes: Sequence[Write], app_id: str, seen: Mapping[int, int],
                            lateness_ms: int, limit: int) -> tuple[list[str], list[DueTimers]]:
        lost = await self.save(writes)
        due = await self.due_timers(app_id, seen, lateness_ms, limit)
        self.round_trips -= 1  # one round trip for both, as in Redis
        return lost, due

    async def clear_timers(self, entries: Sequence[tuple[str, str]]) -> None:
        self.round_trips += 1
        for index, member in entries:
            self.zsets.get(index, {}).pop(member, None)

    async def save_region(self, region: str, report: Mapping[str, Any]) -> bool:
        self.round_trips += 1
        known = self.regions.get(region)
        if known is not None and known["ts_ms"] > report["ts_ms"]:
            return False
        fields = {k: report[k] for k in REGION_FIELDS if k in report}
        self.regions[region] = {**(known or {}), **fields, "ts_ms": int(report["ts_ms"])}
        return True

    async def region_contexts(self) -> dict[str, dict[str, Any]]:
        self.round_trips += 1
        return {region: dict(context) for region, context in self.regions.items()}

    async def close(self) -> None:
        return None
