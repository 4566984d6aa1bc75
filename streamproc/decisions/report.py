"""Experiment results per arm (and per segment or cluster): ``streamproc report``.

For every experiment, arm and (with ``by``) segment, from logged decisions and their feedback:

* ``customers``: distinct customers decided for; ``decisions``: decision records;
* ``conversion``: the share of *customers* with at least one converted decision (the customer
  is the unit of assignment, so the unit of analysis), with a Wilson 95% interval. A decision
  converted when a purchase is attributed to it (``attributed``: each purchase to the
  customer's latest decision within the attribution window, the control group's neutral
  decisions alike: :func:`streamproc.decisions.kpis.attribute`), or, without purchases, when
  a ``conversion`` feedback names it;
* ``click_rate``: the share of *decisions* clicked (a conversion counts as a click), Wilson;
* ``revenue_per_customer``: attributed revenue over customers, Student t 95% interval;
* ``uplift``: against the ``control`` arm of the same experiment (and segment): the difference
  in conversion and in revenue per customer, with bootstrap (or, above a few thousand
  customers an arm, Welch t) 95% intervals, and conversion relative to control
  (``treated / control - 1``); ``null`` with ``status`` "not enough data yet" until both arms
  have :data:`~streamproc.decisions.stats.MIN_CUSTOMERS` customers and together
  :data:`~streamproc.decisions.stats.MIN_CONVERSIONS` conversions;
* ``customers_needed``: customers each arm needs to detect a 10% relative uplift over the
  control's conversion, and ``still_needed``: how many more the smaller arm needs.

Experiments with two or more treated arms get a pooled row, arm ``(personalised)``: every
arm but control together, personalisation as a whole against control.
Decisions outside any experiment are grouped under experiment ``(none)``, one row per policy.

>>> from streamproc.decisions.decision_log import join
>>> log = join([{"decision_id": "d1", "customer_id": "a", "experiment": {"id": "e", "arm": "x"},
...              "segments": {}}], [{"event_id": "f1", "decision_id": "d1",
...              "outcome": "conversion", "revenue": 20.0}])
>>> [(r.arm, r.customers, r.conversion.value, r.revenue_per_customer.value)
...  for r in arm_results(log)]
[('x', 1, 1.0, 20.0)]
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from streamproc.decisions.decision_log import (
    DecisionLog,
    field_at,
    load_log,
    read_jsonl,
    read_topic,
)
from streamproc.decisions.experiments import CONTROL
from streamproc.decisions.kpis import attribute
from streamproc.decisions.stats import (
    MIN_CONVERSIONS,
    MIN_CUSTOMERS,
    Interval,
    customers_needed,
    enough_data,
    mean_t_ci,
    proportion_ci,
    uplift_ci,
)

if TYPE_CHECKING:
    from streamproc.settings import Settings

NO_EXPERIMENT = "(none)"
ALL = "all"
POOLED = "(personalised)"
NOT_ENOUGH = "not enough data yet"
RELATIVE_UPLIFT = 0.10


@dataclass
class ArmResult:
    experiment: str
    arm: str
    segment: str
    customers: int
    decisions: int
    conversion: Interval
    click_rate: Interval
    revenue_per_customer: Interval
    conversion_uplift: Interval | None = None
    relative_conversion_uplift: float | None = None
    revenue_uplift: Interval | None = None
    # "control", "ok", NOT_ENOUGH, "no control" (no control arm in the segment) or "-"
    # (outside experiments).
    status: str = "-"
    customers_needed: int | None = None
    still_needed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        def maybe(iv: Interval | None) -> dict[str, float] | None:
            return None if iv is None else iv.as_dict()

        return {
            "experiment": self.experiment, "arm": self.arm, "segment": self.segment,
            "customers": self.customers, "decisions": self.decisions, "status": self.status,
            "customers_needed": self.customers_needed, "still_needed": self.still_needed,
            "conversion": self.conversion.as_dict(), "click_rate": self.click_rate.as_dict(),
            "revenue_per_customer": self.revenue_per_customer.as_dict(),
            "uplift": None if self.conversion_uplift is None else {
                "conversion": maybe(self.conversion_uplift),
                "relative_conversion": (None if self.relative_conversion_uplift is None
                                        else round(self.relative_conversion_uplift, 6)),
                "revenue_per_customer": maybe(self.revenue_uplift),
            },
        }


@dataclass
class _Group:
    decisions: int = 0
    clicked: int = 0
    converted: dict[str, bool] = field(default_factory=dict)  # customer -> converted once
    revenue: dict[str, float] = field(default_factory=dict)  # customer -> revenue


def _arm_of(record: dict[str, Any]) -> tuple[str, str]:
    exp = record.get("experiment")
    if isinstance(exp, dict) and isinstance(exp.get("id"), str):
        return exp["id"], str(exp.get("arm"))
    return NO_EXPERIMENT, str(record.get("policy") or "?")


def arm_results(log: DecisionLog, by: str | None = None,
                experiment: str | None = None,
                attributed: Mapping[str, tuple[int, float]] | None = None,
                min_customers: int = MIN_CUSTOMERS,
                min_conversions: int = MIN_CONVERSIONS) -> list[ArmResult]:
    """One row per experiment, arm and segment (the value at dotted path ``by`` of each
    decision record, e.g. ``segments.rfm``; ``all`` without ``by``), control first.

    ``attributed``: decision id -> (purchases, revenue) attributed to it; without it,
    conversions and revenue come from ``conversion`` feedback."""
    groups: dict[tuple[str, str, str], _Group] = defaultdict(_Group)
    treated: dict[str, set[str]] = defaultdict(set)
    for record in log.decisions:
        exp_id, arm = _arm_of(record)
        if experiment is not None and exp_id != experiment:
            continue
        segment = ALL if by is None else str(field_at(record, by))
        outcome = log.outcome(record["decision_id"])
        if attributed is not None:
            bought, revenue = attributed.get(record["decision_id"], (0, 0.0))
            converted = bought > 0
        else:
            converted, revenue = outcome.converted, outcome.revenue
        customer = str(record.get("customer_id"))
        keys = [(exp_id, arm, segment)]
        if exp_id != NO_EXPERIMENT and arm != CONTROL:
            treated[exp_id].add(arm)
            keys.append((exp_id, POOLED, segment))
        for key in keys:
            group = groups[key]
            group.decisions += 1
            group.clicked += outcome.clicked or converted
            group.converted[customer] = group.converted.get(customer, False) or converted
            group.revenue[customer] = group.revenue.get(customer, 0.0) + revenue
    for key in [k for k in groups if k[1] == POOLED and len(treated[k[0]]) < 2]:
        del groups[key]  # one treated arm: its own row says it all
    rows: list[ArmResult] = []
    per_customer: dict[tuple[str, str, str], tuple[list[float], list[float]]] = {}
    for key in sorted(groups, key=lambda k: (k[0] == NO_EXPERIMENT, k[0], k[2], k[1] != CONTROL,
                                            k[1])):
        g = groups[key]
        conversions = [1.0 if c else 0.0 for c in g.converted.values()]
        revenues = list(g.revenue.values())
        per_customer[key] = (conversions, revenues)
        n = len(conversions)
        rows.append(ArmResult(
            key[0], key[1], key[2], n, g.decisions, proportion_ci(int(sum(conversions)), n),
            proportion_ci(g.clicked, g.decisions), mean_t_ci(revenues),
        ))
    for row in rows:
        if row.experiment == NO_EXPERIMENT:
            continue
        control = per_customer.get((row.experiment, CONTROL, row.segment))
        if control is None:
            row.status = "no control"
            continue
        base = math.fsum(control[0]) / len(control[0])
        row.customers_needed = customers_needed(base, RELATIVE_UPLIFT)
        if row.arm == CONTROL:
            row.status = "control"
            continue
        conversions, revenues = per_customer[(row.experiment, row.arm, row.segment)]
        if row.customers_needed is not None:
            row.still_needed = max(0, row.customers_needed - min(len(conversions),
                                                                 len(control[0])))
        if not enough_data(len(conversions), len(control[0]),
                           int(math.fsum(conversions) + math.fsum(control[0])),
                           min_customers, min_conversions):
            row.status = NOT_ENOUGH
            continue
        row.status = "ok"
        row.conversion_uplift = uplift_ci(conversions, control[0])
        row.relative_conversion_uplift = (row.conversion.value / base - 1.0) if base else None
        row.revenue_uplift = uplift_ci(revenues, control[1])
    return rows


def attribute_purchases(records: Iterable[dict[str, Any] | None],
                        decisions: Sequence[dict[str, Any]], window_ms: int
                        ) -> dict[str, tuple[int, float]] | None:
    """Purchases (each event id once) attributed to ``decisions``
    (:func:`streamproc.decisions.kpis.attribute`); None when there is no purchase: then
    feedback says what converted."""
    seen: set[str] = set()
    purchases = []
    for r in records:
        if (isinstance(r, dict) and r.get("type") == "purchase" and isinstance(r.get("ts"), str)
                and r.get("event_id") not in seen):
            seen.add(str(r.get("event_id")))
            purchases.append(r)
    if not purchases:
        return None
    return attribute(decisions, purchases, window_ms)


async def experiment_report(settings: Settings, decisions: Path | None = None,
                            feedback: Path | None = None, purchases: Path | None = None,
                            by: str | None = None, experiment: str | None = None,
                            progress: TextIO | None = None) -> ExperimentReport:
    """What ``streamproc report --json`` prints and ``GET /v1/kpis/experiments`` answers:
    :func:`arm_results` of the decisions and feedback (files, or their topics when None), with
    the purchases attributed (from ``purchases``, or the purchases topic when the decisions
    come from their topic), and the notes on what was left out."""
    log = await load_log(settings, decisions, feedback, progress)
    if purchases is not None:
        bought: list[dict[str, Any] | None] = list(read_jsonl(purchases))
    elif decisions is None:
        bought = await read_topic(settings, settings.topics.purchases, progress)
    else:
        bought = []
    attributed = attribute_purchases(bought, log.decisions,
                                     settings.attribution_hours * 3_600_000)
    rows = arm_results(log, by=by, experiment=experiment, attributed=attributed)
    if attributed is None:
        log.skip("(no purchases read: conversions and revenue from feedback only)")
    return ExperimentReport(rows, log.notes())


@dataclass
class ExperimentReport:
    rows: list[ArmResult]
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"rows": [r.as_dict() for r in self.rows], "notes": self.notes}

    def render(self) -> str:
        return render_table(self.rows, self.notes)


def _pct(iv: Interval) -> str:
    return f"{100 * iv.value:6.2f}% [{100 * iv.low:5.2f}, {100 * iv.high:5.2f}]"


def _money(iv: Interval) -> str:
    return f"{iv.value:8.2f} [{iv.low:.2f}, {iv.high:.2f}]"


def _points(iv: Interval | None, status: str = "-") -> str:
    if iv is None:
        return NOT_ENOUGH if status == NOT_ENOUGH else "-"
    return f"{100 * iv.value:+.2f} pts [{100 * iv.low:+.2f}, {100 * iv.high:+.2f}]"


def _needed(row: ArmResult) -> str:
    if row.still_needed is None:
        return "-"
    return f"{row.still_needed:,} (of {row.customers_needed:,} an arm)"


def render_table(rows: list[ArmResult], notes: list[str]) -> str:
    """The rows as a table for people; intervals are 95%."""
    if not rows:
        return "no decisions in the log" + "".join(f"\nnote: {n}" for n in notes)
    header = ("experiment", "arm", "segment", "customers", "decisions", "conversion (95% CI)",
              "click rate (95% CI)", "revenue/customer (95% CI)", "conversion uplift vs control",
              "customers still needed")
    table = [header] + [
        (r.experiment, r.arm, r.segment, f"{r.customers:,}", f"{r.decisions:,}",
         _pct(r.conversion), _pct(r.click_rate), _money(r.revenue_per_customer),
         _points(r.conversion_uplift, r.status), _needed(r))
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in table]
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)
