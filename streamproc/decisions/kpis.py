"""KPIs counted by the stream, exactly once: what each customer's own atomic step adds.

The worker calls :meth:`KpiCounter.count` for every event it applies (and
:meth:`KpiCounter.count_decisions` for the decisions of a timer that fired,
:meth:`KpiCounter.count_served` for a decision the HTTP API served); the increments go
into a :data:`Tally` that the processor carries in the customer's compare-and-set write
(:class:`streamproc.state.store.Write`). So the counters move exactly when the profile does: an
event already applied (a redelivery, a producer duplicate) adds nothing, and a write refused by
its version is recomputed with its increments. What the counting remembers lives in the profile
(``p["kpi"]``), so the counters can be rebuilt from the profiles and the topics (principle 9).

Counters, per UTC day (of the decision's event time) x segment x experiment arm x action, one
Redis hash a day (:func:`streamproc.state.keys.kpi_day_key`), fields
``segmentation:segment|arm|action|kpi``:

* ``decisions``: decision records (the action ``none`` included), the worker's own and those
  the HTTP API served (not the neutral fallbacks it publishes itself: no worker sees them);
* ``customers``: distinct customers shown or sent something (once per row and day);
* ``impressions``, ``opens``, ``clicks``, ``conversions``: decisions with such feedback, each
  decision at most once per outcome (a second open of an email is not a second open), counted
  on the decision's row (its day, segments, arm and action) whenever the feedback comes; an
  open, click or conversion also counts the decision's impression if none was counted (it was
  seen), so open and click rates per impression never exceed 100 %, on any row or sum of rows;
* ``purchases``, ``revenue_cents``: purchases attributed to a decision: the customer's latest
  decision that showed or sent something (personalised, or the neutral action of the control
  group and of every fallback: arms compare fairly) strictly before the purchase and at most
  ``window_ms`` before it; each purchase once, to one decision, on that decision's row;
* ``buyers``: distinct customers with an attributed purchase (once per row and day: with
  ``customers``, the conversion of customers reached).

The segmentations are those of the decision record (every one, clusters included) and
``all:all``; the arm is ``experiment:arm``, or ``(none):policy`` outside experiments.
Surveys count NPS on the survey's day, by the customer's segments then, with arm and action
``-``: ``responses``, ``promoters`` (9-10), ``passives`` (7-8), ``detractors`` (0-6).
The data quality of decisions (their record's ``data_quality``) counts on the decision's day
and segments with arm and action ``-``: ``quality_0`` to ``quality_4`` (bands of 0.2) and
``quality_milli`` (the sum, in thousandths).
Segment moves (the segmenter's records for the segments topic), per UTC day of the event
that moved the customer (:func:`~streamproc.state.keys.kpi_moves_key`), fields
``segmentation|from|to`` (``-``: no segment), and the segment sizes they add up to
(:func:`~streamproc.state.keys.kpi_sizes_key`, fields ``segmentation:segment``: a move adds
one to its destination and takes one from its origin).
Retention cohorts, one hash per month of first purchase
(:func:`~streamproc.state.keys.kpi_cohort_key`), fields ``segmentation:segment|n``: customers
of the cohort (by their segments just after that first purchase) buying again in month n
(n = 0: the cohort's size), each customer once per month, up to :data:`RETENTION_MONTHS`.

>>> from streamproc.state.profile import new_profile
>>> counter = KpiCounter("shop", window_ms=3_600_000)
>>> p, tally = new_profile("c1"), {}
>>> record = {"decision_id": "d" * 32, "ts": "", "segments": {"rfm": "new"},
...           "experiment": {"id": "e1", "arm": "control"}, "policy": "neutral",
...           "action": {"id": "hero_default"}}
>>> counter.count_decisions(p, [record], 1_000, tally)
>>> p["purchases"]["orders"] = 1
>>> counter.count(p, "purchase", 61_000, {"amount": 12.5}, [], tally)
>>> day = tally["sp:kpi:{shop}:day:1970-01-01"][1]
>>> row = "|e1:control|hero_default|"
>>> day["rfm:new" + row + "purchases"], day["all:all" + row + "revenue_cents"]
(1, 1250)
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from streamproc.days import DAY_MS
from streamproc.decisions.catalogue import NONE_ID
from streamproc.decisions.record import segments_used
from streamproc.state.keys import kpi_cohort_key, kpi_day_key, kpi_moves_key, kpi_sizes_key
from streamproc.state.profile import Profile

KPIS = ("decisions", "customers", "impressions", "opens", "clicks", "conversions",
        "purchases", "revenue_cents", "buyers")
NPS_KPIS = ("responses", "promoters", "passives", "detractors")
FEEDBACK_KPIS = {"impression": "impressions", "open": "opens", "click": "clicks",
                 "conversion": "conversions"}
ALL = "all:all"
NO_EXPERIMENT = "(none)"
# Bands of the data quality score counted per segment (streamproc.state.provenance.quality).
QUALITY_BANDS = 5
NONE_ROW = "-"  # the arm and action of rows that are not about a decision (surveys)
# Decisions remembered per customer for feedback and attribution (the latest ones).
EXPOSURES_KEPT = 32
# Days of "customers reached" remembered per customer (a decision of an older day, arriving
# late, counts its decision but not its customer again).
REACH_DAYS = 5
RETENTION_MONTHS = 24
# How long a retention cohort's hash lives after its last write, at least.
COHORT_TTL_DAYS = (RETENTION_MONTHS + 2) * 31

# key -> (ttl in ms, field -> increment): what one customer's write adds to the counters.
Tally = dict[str, tuple[int, dict[str, int]]]

# Positions in an exposure entry of p["kpi"]["exp"], and in a purchase entry of
# p["kpi"]["buys"] (the exposure it is attributed to: a copy of its first five, or None).
# FLAGS: the feedback KPIs already counted for the decision (bits of FEEDBACK_BITS; entries
# written before it have five positions).
ID, TS, ARM, ACTION, SEGS, FLAGS = range(6)
FEEDBACK_BITS = {"impressions": 1, "opens": 2, "clicks": 4, "conversions": 8}
BUY_TS, BUY_CENTS, BUY_TO = range(3)
# Purchases remembered per customer (those of the last attribution window, at most this many).
BUYS_KEPT = 16
ID_DIGITS = 12


def _clean(value: Any) -> str:
    """A segment, arm or action as a field part: no separators inside."""
    text = str(value)
    if "|" in text or "\t" in text:
        text = text.replace("|", "_").replace("\t", "_")
    return text


def segment_parts(segments: Mapping[str, Any]) -> list[str]:
    """``segmentation:segment`` of every segmentation, then :data:`ALL`.

    >>> segment_parts({"rfm": "loyal", "cluster": 3})
    ['rfm:loyal', 'cluster:3', 'all:all']
    """
    return [f"{_clean(k)}:{_clean(v)}" for k, v in segments.items()] + [ALL]


def arm_of(record: Mapping[str, Any]) -> str:
    """``experiment:arm`` of a decision record, or ``(none):policy`` outside experiments.

    >>> arm_of({"experiment": {"id": "hero", "arm": "control"}}), arm_of({"policy": "bandit"})
    ('hero:control', '(none):bandit')
    """
    exp = record.get("experiment")
    if isinstance(exp, dict) and exp.get("id") is not None:
        return f"{_clean(exp['id'])}:{_clean(exp.get('arm'))}"
    return f"{NO_EXPERIMENT}:{_clean(record.get('policy') or '?')}"


def _token(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.blake2b(text.encode(), digest_size=6).digest()
                                    ).decode()


def month_of(ts_ms: int) -> int:
    """Months since January 1970 of an epoch-ms time (UTC).

    >>> month_of(0), month_of(31 * DAY_MS), month_of(365 * DAY_MS)
    (0, 1, 12)
    """
    d = datetime.datetime.fromtimestamp(ts_ms / 1000, datetime.UTC)
    return (d.year - 1970) * 12 + d.month - 1


def nps_kpi(score: int) -> str:
    """The NPS class of a 0-10 score.

    >>> [nps_kpi(s) for s in (0, 6, 7, 8, 9, 10)]
    ['detractors', 'detractors', 'passives', 'passives', 'promoters', 'promoters']
    """
    return "promoters" if score >= 9 else "passives" if score >= 7 else "detractors"


class KpiCounter:
    """Turns what one customer's events did into counter increments, remembering in the
    profile what it must (``p["kpi"]``): the latest exposures, the rows already reached today,
    the customer's retention cohort."""

    def __init__(self, app_id: str, window_ms: int, ttl_days: int = 90) -> None:
        self.app_id = app_id
        self.window_ms = window_ms
        self.ttl_days = ttl_days
        self._day_ttl_ms = ttl_days * DAY_MS
        self._cohort_ttl_ms = max(ttl_days, COHORT_TTL_DAYS) * DAY_MS
        self._day_keys: dict[int, str] = {}

    def _day(self, tally: Tally, ts_ms: int) -> dict[str, int]:
        day = ts_ms // DAY_MS
        key = self._day_keys.get(day)
        if key is None:
            if len(self._day_keys) > 64:
                self._day_keys.clear()
            key = self._day_keys[day] = kpi_day_key(self.app_id, day)
        found = tally.get(key)
        if found is None:
            found = tally[key] = (self._day_ttl_ms, {})
        return found[1]

    def count(self, p: Profile, event_type: str, ts_ms: int, data: Mapping[str, Any],
              records: Sequence[Mapping[str, Any]], tally: Tally) -> None:
        """Count one applied event (already in ``p``) and the decisions it led to."""
        if event_type == "purchase":
            self._purchase(p, ts_ms, data, tally)
        elif event_type == "feedback":
            self._feedback(p, data, tally)
        elif event_type == "survey":
            self._survey(p, ts_ms, data, tally)
        if records:
            self.count_decisions(p, records, ts_ms, tally)

    def count_decisions(self, p: Profile, records: Sequence[Mapping[str, Any]], ts_ms: int,
                        tally: Tally) -> None:
        """Count decision records made at event time ``ts_ms``; remember their exposures."""
        state: dict[str, Any] = p.setdefault("kpi", {})
        counts = self._day(tally, ts_ms)
        for record in records:
            arm, action = arm_of(record), _clean(record["action"]["id"])
            parts = segment_parts(record.get("segments") or {})
            middle = f"|{arm}|{action}|"
            for part in parts:
                field = f"{part}{middle}decisions"
                counts[field] = counts.get(field, 0) + 1
            quality = record.get("data_quality")
            if isinstance(quality, int | float):
                count_quality(counts, parts, float(quality))
            if action == NONE_ID:
                continue  # nothing shown or sent: no exposure, nobody reached
            segs = "\t".join(parts[:-1])
            if self._reach(state, ts_ms // DAY_MS, f"{middle}{segs}"):
                for part in parts:
                    field = f"{part}{middle}customers"
                    counts[field] = counts.get(field, 0) + 1
            exposure = self._remember(state, record["decision_id"], ts_ms, arm, action, segs)
            self._claim(state, exposure, tally)

    def count_served(self, p: Profile, record: Mapping[str, Any], ts_ms: int,
                     tally: Tally) -> bool:
        """Count a decision the HTTP API served (its ``decision_served`` event, applied once by
        the worker that owns the customer) like the worker's own; False, and nothing counted,
        when the decision is counted already: the same decision served again under another
        event id, past the duplicate window (the exposures remembered know its id).

        >>> from streamproc.state.profile import new_profile
        >>> counter, p, tally = KpiCounter("shop", window_ms=1), new_profile("c1"), {}
        >>> record = {"decision_id": "d" * 32, "segments": {}, "policy": "bandit",
        ...           "action": {"id": "hero_shoes"}}
        >>> counter.count_served(p, record, 0, tally), counter.count_served(p, record, 5, tally)
        (True, False)
        >>> tally["sp:kpi:{shop}:day:1970-01-01"][1]["all:all|(none):bandit|hero_shoes|decisions"]
        1
        """
        short = str(record["decision_id"])[:ID_DIGITS]
        if any(e[ID] == short for e in (p.get("kpi") or {}).get("exp", ())):
            return False
        self.count_decisions(p, [record], ts_ms, tally)
        return True

    @staticmethod
    def _reach(state: dict[str, Any], day: int, row: str) -> bool:
        """Whether the customer is new to this row on this day (and remember it)."""
        reach: dict[str, list[str]] = state.setdefault("reach", {})
        days = reach.get(str(day))
        if days is None:
            if len(reach) >= REACH_DAYS and day < min(int(d) for d in reach):
                return False  # older than the days remembered: not counted again
            days = reach[str(day)] = []
            for old in sorted(reach, key=int)[:-REACH_DAYS]:
                del reach[old]
        token = _token(row)
        if token in days:
            return False
        days.append(token)
        return True

    @staticmethod
    def _remember(state: dict[str, Any], decision_id: str, ts_ms: int, arm: str, action: str,
                  segs: str) -> list[Any]:
        table: dict[str, str] = state.setdefault("segs", {})
        ref = _token(segs)[:6]
        table[ref] = segs
        exposures: list[list[Any]] = state.setdefault("exp", [])
        exposure = [decision_id[:ID_DIGITS], ts_ms, arm, action, ref, 0]
        exposures.append(exposure)
        del exposures[:-EXPOSURES_KEPT]
        used = {e[SEGS] for e in exposures} | {
            b[BUY_TO][SEGS] for b in state.get("buys", ()) if b[BUY_TO]}
        for old in [r for r in table if r not in used]:
            del table[old]
        return exposure

    def _credit(self, state: dict[str, Any], exposure: list[Any], cents: int, sign: int,
                tally: Tally) -> None:
        """Add (``sign`` 1) or take back (-1) one purchase of ``cents`` on the exposure's rows;
        the customer is a buyer of a row and day while it holds one of their purchases."""
        counts = self._day(tally, exposure[TS])
        rows = self._rows(state, exposure)
        for row in rows:
            counts[row + "purchases"] = counts.get(row + "purchases", 0) + sign
            counts[row + "revenue_cents"] = counts.get(row + "revenue_cents", 0) + sign * cents
        day = exposure[TS] // DAY_MS
        token = _token(f"{day}|{exposure[ARM]}|{exposure[ACTION]}|"
                       f"{state['segs'].get(exposure[SEGS], '')}")
        bought: dict[str, list[int]] = state.setdefault("bought", {})
        held = bought.setdefault(token, [day, 0])
        held[1] += sign
        if held[1] == (1 if sign > 0 else 0):  # 0 -> 1, or 1 -> 0
            for row in rows:
                counts[row + "buyers"] = counts.get(row + "buyers", 0) + sign
        if held[1] <= 0:
            del bought[token]

    def _claim(self, state: dict[str, Any], exposure: list[Any], tally: Tally) -> None:
        """A decision counted after purchases that came after it in event time (another
        topic read first, a timer firing late): the purchases it is now the latest decision
        before move to it, so the result does not depend on the order of processing."""
        key = (exposure[TS], exposure[ID])
        for buy in state.get("buys", ()):
            before = buy[BUY_TO]
            if (exposure[TS] < buy[BUY_TS] <= exposure[TS] + self.window_ms
                    and (before is None or key > (before[TS], before[ID]))):
                if before is not None:
                    self._credit(state, before, buy[BUY_CENTS], -1, tally)
                buy[BUY_TO] = exposure[:FLAGS]
                self._credit(state, exposure, buy[BUY_CENTS], 1, tally)

    def _rows(self, state: dict[str, Any], exposure: list[Any]) -> list[str]:
        segs = state.get("segs", {}).get(exposure[SEGS], "")
        middle = f"|{exposure[ARM]}|{exposure[ACTION]}|"
        return [f"{part}{middle}" for part in [*filter(None, segs.split("\t")), ALL]]

    def count_moves(self, moves: Sequence[Mapping[str, Any]], ts_ms: int, tally: Tally) -> None:
        """Count the segment moves of one event (records of the segments topic).

        >>> counter, tally = KpiCounter("shop", window_ms=1), {}
        >>> counter.count_moves([{"segmentation": "rfm", "from": None, "to": "new"},
        ...                      {"segmentation": "rfm", "from": "new", "to": "loyal"}], 0, tally)
        >>> tally["sp:kpi:{shop}:moves:1970-01-01"][1]
        {'rfm|-|new': 1, 'rfm|new|loyal': 1}
        >>> tally["sp:kpi:{shop}:sizes"][1]
        {'rfm:new': 0, 'rfm:loyal': 1}
        """
        if not moves:
            return
        day = ts_ms // DAY_MS
        key = kpi_moves_key(self.app_id, day)
        counts = tally.setdefault(key, (self._day_ttl_ms, {}))[1]
        sizes = tally.setdefault(kpi_sizes_key(self.app_id), (self._cohort_ttl_ms, {}))[1]
        for move in moves:
            segmentation = _clean(move["segmentation"])
            before, after = move.get("from"), move.get("to")
            field = (f"{segmentation}|{NONE_ROW if before is None else _clean(before)}|"
                     f"{NONE_ROW if after is None else _clean(after)}")
            counts[field] = counts.get(field, 0) + 1
            if before is not None:
                name = f"{segmentation}:{_clean(before)}"
                sizes[name] = sizes.get(name, 0) - 1
            if after is not None:
                name = f"{segmentation}:{_clean(after)}"
                sizes[name] = sizes.get(name, 0) + 1

    def _feedback(self, p: Profile, data: Mapping[str, Any], tally: Tally) -> None:
        """Count a decision's first feedback of each kind (and its implied impression) on the
        decision's day and rows; a repeated one adds nothing."""
        kpi = FEEDBACK_KPIS.get(data.get("outcome", ""))
        state = p.get("kpi")
        if kpi is None or not state:
            return
        short = str(data.get("decision_id", ""))[:ID_DIGITS]
        for exposure in reversed(state.get("exp", ())):
            if exposure[ID] == short:
                if len(exposure) <= FLAGS:
                    exposure.append(0)
                new = (FEEDBACK_BITS[kpi] | FEEDBACK_BITS["impressions"]) & ~exposure[FLAGS]
                if not new:
                    return
                exposure[FLAGS] |= new
                counts = self._day(tally, exposure[TS])
                kpis = [k for k, bit in FEEDBACK_BITS.items() if new & bit]
                for row in self._rows(state, exposure):
                    for k in kpis:
                        counts[row + k] = counts.get(row + k, 0) + 1
                return

    def _purchase(self, p: Profile, ts_ms: int, data: Mapping[str, Any], tally: Tally) -> None:
        state: dict[str, Any] = p.setdefault("kpi", {})
        latest = None
        for exposure in state.get("exp", ()):
            if (ts_ms - self.window_ms <= exposure[TS] < ts_ms
                    and (latest is None or (exposure[TS], exposure[ID])
                         > (latest[TS], latest[ID]))):
                latest = exposure
        cents = round(float(data.get("amount") or 0) * 100)
        # Remembered while a decision counted later could still claim it (within the window).
        buys: list[list[Any]] = state.setdefault("buys", [])
        buys.append([ts_ms, cents, None if latest is None else latest[:FLAGS]])
        newest = max(b[BUY_TS] for b in buys)
        buys[:] = [b for b in buys if b[BUY_TS] > newest - self.window_ms][-BUYS_KEPT:]
        if latest is not None:
            self._credit(state, latest, cents, 1, tally)
        bought = state.get("bought", {})
        for token in [t for t, (day, _) in bought.items() if day < ts_ms // DAY_MS - REACH_DAYS]:
            del bought[token]
        self._retention(p, state, ts_ms, tally)

    def _retention(self, p: Profile, state: dict[str, Any], ts_ms: int, tally: Tally) -> None:
        month = month_of(ts_ms)
        cohort = state.get("cohort")
        if cohort is None:
            if p["purchases"]["orders"] != 1:
                return  # bought before counting began: in no cohort
            parts = segment_parts(segments_used(p))
            cohort = state["cohort"] = [month, 1, "\t".join(parts[:-1])]
            n = 0
        else:
            n = month - cohort[0]
            if not 0 < n <= RETENTION_MONTHS or cohort[1] >> n & 1:
                return
            cohort[1] |= 1 << n
            parts = [*filter(None, cohort[2].split("\t")), ALL]
        key = kpi_cohort_key(self.app_id, cohort[0])
        counts = tally.setdefault(key, (self._cohort_ttl_ms, {}))[1]
        for part in parts:
            counts[f"{part}|{n}"] = counts.get(f"{part}|{n}", 0) + 1

    def _survey(self, p: Profile, ts_ms: int, data: Mapping[str, Any], tally: Tally) -> None:
        score = data.get("score")
        if not isinstance(score, int) or not 0 <= score <= 10:
            return
        counts = self._day(tally, ts_ms)
        kind = nps_kpi(score)
        for part in segment_parts(segments_used(p)):
            row = f"{part}|{NONE_ROW}|{NONE_ROW}|"
            counts[row + "responses"] = counts.get(row + "responses", 0) + 1
            counts[row + kind] = counts.get(row + kind, 0) + 1


def count_quality(counts: dict[str, int], parts: Sequence[str], quality: float) -> None:
    """Count a decision's data quality (0 to 1) in each of its segments' rows: its band
    (``quality_0`` for [0, 0.2) ... ``quality_4`` for [0.8, 1]) and the sum in thousandths
    (``quality_milli``), under arm and action ``-``.

    >>> counts = {}
    >>> count_quality(counts, ["rfm:new", "all:all"], 0.85)
    >>> counts["rfm:new|-|-|quality_4"], counts["all:all|-|-|quality_milli"]
    (1, 850)
    """
    band = f"quality_{min(QUALITY_BANDS - 1, max(0, int(quality * QUALITY_BANDS)))}"
    for part in parts:
        row = f"{part}|{NONE_ROW}|{NONE_ROW}|"
        for field, by in ((band, 1), ("quality_milli", round(quality * 1000))):
            counts[row + field] = counts.get(row + field, 0) + by


def tally_fields(tally: Tally) -> tuple[tuple[str, int, tuple[tuple[str, int], ...]], ...]:
    """A tally as the store's write carries it: (key, ttl ms, ((field, increment), ...))."""
    return tuple((key, ttl, tuple((f, n) for f, n in counts.items() if n))
                 for key, (ttl, counts) in tally.items() if counts)


def ts_ms_of(iso: str) -> int:
    """Epoch ms of an ISO-8601 time with a zone (a record's or an event's ``ts``).

    >>> ts_ms_of("1970-01-02T00:00:00.250Z")
    86400250
    """
    parsed = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return round(parsed.timestamp() * 1000)


def attribute(decisions: Sequence[Mapping[str, Any]], purchases: Sequence[Mapping[str, Any]],
              window_ms: int) -> dict[str, tuple[int, float]]:
    """Purchases attributed to decisions, in batch, as the stream counts them: each purchase
    to its customer's latest decision that showed or sent something, strictly before it and
    at most ``window_ms`` before. Returns decision id -> (purchases, revenue).

    Decisions and purchases are unique already (by decision id, by event id).

    >>> ds = [{"decision_id": "d1", "customer_id": "c", "ts": "2026-03-01T10:00:00Z",
    ...        "action": {"id": "a"}}]
    >>> ps = [{"customer_id": "c", "ts": "2026-03-01T11:00:00Z", "amount": 20.0},
    ...       {"customer_id": "c", "ts": "2026-03-09T11:00:00Z", "amount": 5.0}]
    >>> attribute(ds, ps, 3_600_000)
    {'d1': (1, 20.0)}
    """
    by_customer: dict[str, list[tuple[int, str]]] = {}
    for d in decisions:
        if (d.get("action") or {}).get("id") == NONE_ID:
            continue
        by_customer.setdefault(str(d.get("customer_id")), []).append(
            (ts_ms_of(d["ts"]), str(d["decision_id"])))
    for exposures in by_customer.values():
        exposures.sort(key=lambda e: (e[0], e[1][:ID_DIGITS]))
    out: dict[str, tuple[int, float]] = {}
    for purchase in purchases:
        exposures = by_customer.get(str(purchase.get("customer_id")), [])
        ts = ts_ms_of(purchase["ts"])
        latest = None
        for exposure in exposures:
            if exposure[0] >= ts:
                break
            latest = exposure
        if latest is None or ts - latest[0] > window_ms:
            continue
        n, revenue = out.get(latest[1], (0, 0.0))
        out[latest[1]] = (n + 1, revenue + float(purchase.get("amount") or 0.0))
    return out


def merge_memory(p: Profile, other: Mapping[str, Any]) -> None:
    """Add an identifier's KPI memory (``other``: its ``p["kpi"]``) to the customer's
    (docs/identity.md), so that what was counted under the identifier is not counted again
    under the customer: the rows reached on a day (a customer reached anonymously is not a new
    customer of the row when reached again after login), the exposures a later purchase is
    attributed to, the purchases still claimable, the buyers held; the earlier retention cohort.

    >>> p = {"kpi": {"reach": {"20": ["a"]}, "exp": [["d2", 5, "", "x", "r"]]}}
    >>> merge_memory(p, {"reach": {"20": ["b"], "19": ["c"]}, "exp": [["d1", 3, "", "y", "r"]]})
    >>> p["kpi"]["reach"], [e[ID] for e in p["kpi"]["exp"]]
    ({'20': ['a', 'b'], '19': ['c']}, ['d1', 'd2'])
    """
    if not other:
        return
    state: dict[str, Any] = p.setdefault("kpi", {})
    reach: dict[str, list[str]] = state.setdefault("reach", {})
    for day, tokens in (other.get("reach") or {}).items():
        ours = reach.setdefault(day, [])
        ours.extend(t for t in tokens if t not in ours)
    for old in sorted(reach, key=int)[:-REACH_DAYS]:
        del reach[old]
    state["segs"] = {**(other.get("segs") or {}), **state.get("segs", {})}
    state["exp"] = sorted([*state.get("exp", ()), *(other.get("exp") or ())],
                          key=lambda e: (e[TS], e[ID]))[-EXPOSURES_KEPT:]
    state["buys"] = sorted([*state.get("buys", ()), *(other.get("buys") or ())],
                           key=lambda b: b[BUY_TS])[-BUYS_KEPT:]
    bought = state.setdefault("bought", {})
    for token, held in (other.get("bought") or {}).items():
        bought.setdefault(token, list(held))
    theirs = other.get("cohort")
    if theirs is not None and (state.get("cohort") is None or theirs[0] < state["cohort"][0]):
        state["cohort"] = list(theirs)
    if not state["exp"]:
        del state["exp"]
    if not state["buys"]:
        del state["buys"]
