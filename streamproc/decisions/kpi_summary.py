"""The KPI counters (:mod:`streamproc.decisions.kpis`) as JSON-ready dicts: what
``streamproc kpis --json`` prints and what the HTTP service will serve at ``/v1/kpis``.

Pure: it takes the counters already read (:func:`streamproc.state.counters.read_counters`)
and knows nothing of Redis or HTTP. ``by`` picks one segmentation (``rfm``, ``cluster``, ...;
``all`` for everyone together); rates are ``None`` where their denominator is 0, and open and
click rates are shares of the decisions seen (never above 1: each decision counts once per
outcome, :mod:`streamproc.decisions.kpis`).

>>> days = {20_513: {"all:all|hero:control|hero_default|decisions": 4,
...                  "all:all|hero:control|hero_default|customers": 2,
...                  "all:all|hero:control|hero_default|buyers": 1,
...                  "all:all|hero:control|hero_default|revenue_cents": 1999,
...                  "all:all|-|-|responses": 2, "all:all|-|-|promoters": 2}}
>>> out = summarise(days, {})
>>> row = out["rows"][0]
>>> row["arm"], row["decisions"], row["conversion"], row["revenue"], row["revenue_per_customer"]
('hero:control', 4, 0.5, 19.99, 9.995)
>>> out["days"], out["nps"][0]["nps"]
(['2026-03-01'], 100.0)
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from streamproc.decisions.kpis import KPIS, NONE_ROW, NPS_KPIS, QUALITY_BANDS
from streamproc.state.counters import Counters

EPOCH = datetime.date(1970, 1, 1)


def iso_day(day: int) -> str:
    return (EPOCH + datetime.timedelta(days=day)).isoformat()


def iso_month(month: int) -> str:
    year, m = divmod(month, 12)
    return f"{1970 + year:04d}-{m + 1:02d}"


def _ratio(num: float, den: float, digits: int = 6) -> float | None:
    return round(num / den, digits) if den else None


def _split(name: str) -> tuple[str, str, str, str, str] | None:
    """``segmentation:segment|arm|action|kpi`` -> its five parts (None if malformed)."""
    parts = name.split("|")
    if len(parts) != 4:
        return None
    segmentation, _, segment = parts[0].partition(":")
    return segmentation, segment, parts[1], parts[2], parts[3]


def _with_rates(row: dict[str, Any]) -> dict[str, Any]:
    revenue = row.pop("revenue_cents", 0) / 100
    row["revenue"] = round(revenue, 2)
    row["open_rate"] = _ratio(row["opens"], row["impressions"])
    row["click_rate"] = _ratio(row["clicks"], row["impressions"])
    row["conversion"] = _ratio(row["buyers"], row["customers"])
    row["revenue_per_customer"] = _ratio(revenue, row["customers"])
    return row


def summarise(days: Mapping[int, Mapping[str, int]], cohorts: Mapping[int, Mapping[str, int]],
              by: str = "all") -> dict[str, Any]:
    """Totals over ``days`` per segment (of segmentation ``by``), arm and action; the same per
    day and arm (every segment and action together), and per day and segment (every arm and
    action together); NPS per segment; retention per cohort
    and segment."""
    totals: dict[tuple[str, str, str], dict[str, Any]] = {}
    daily: dict[tuple[int, str], dict[str, Any]] = {}
    daily_segments: dict[tuple[int, str], dict[str, Any]] = {}
    nps: dict[str, dict[str, int]] = {}
    segmentations: set[str] = set()
    for day, counts in sorted(days.items()):
        for name, n in counts.items():
            parts = _split(name)
            if parts is None:
                continue
            segmentation, segment, arm, action, kpi = parts
            segmentations.add(segmentation)
            if arm == NONE_ROW:
                if segmentation == by and kpi in NPS_KPIS:
                    row = nps.setdefault(segment, dict.fromkeys(NPS_KPIS, 0))
                    row[kpi] += n
                continue
            if kpi not in KPIS:
                continue
            if segmentation == by:
                key = (segment, arm, action)
                if key not in totals:
                    totals[key] = {"segment": segment, "arm": arm, "action": action,
                                   **dict.fromkeys(KPIS, 0)}
                totals[key][kpi] += n
                per_segment = daily_segments.setdefault((day, segment), {
                    "day": iso_day(day), "segment": segment, **dict.fromkeys(KPIS, 0)})
                per_segment[kpi] += n
            if segmentation == "all":
                per_day = daily.setdefault((day, arm), {"day": iso_day(day), "arm": arm,
                                                        **dict.fromkeys(KPIS, 0)})
                per_day[kpi] += n
    return {
        "days": [iso_day(d) for d in sorted(days)],
        "by": by,
        "segmentations": sorted(segmentations),
        "rows": [_with_rates(totals[k]) for k in sorted(totals)],
        "daily": [_with_rates(daily[k]) for k in sorted(daily)],
        "daily_segments": [_with_rates(daily_segments[k]) for k in sorted(daily_segments)],
        "nps": [{"segment": s, **row, "nps": (round(100 * (row["promoters"] - row["detractors"])
                                                    / row["responses"], 1)
                                              if row["responses"] else None)}
                for s, row in sorted(nps.items())],
        "retention": retention(cohorts, by),
    }


def summarise_counters(counters: Counters, by: str = "all") -> dict[str, Any]:
    """What ``streamproc kpis --json`` prints and ``GET /v1/kpis`` answers: :func:`summarise`
    of the counters, with the segments (:func:`segment_summary`)."""
    return {**summarise(counters.days, counters.cohorts, by),
            "segments": segment_summary(counters.moves, counters.sizes, by),
            "quality": quality_summary(counters.days, by)}


def segment_summary(moves: Mapping[int, Mapping[str, int]], sizes: Mapping[str, int],
                    by: str = "all") -> dict[str, Any]:
    """Segment sizes now and each day's moves between segments, of segmentation ``by``
    (every segmentation for ``all``); a segment emptied by its moves is left out.

    >>> out = segment_summary({20_513: {"rfm|new|loyal": 3, "rfm|-|new": 5, "cluster|-|1": 2}},
    ...                       {"rfm:new": 2, "rfm:loyal": 3, "rfm:lost": 0}, "rfm")
    >>> [(s["segmentation"], s["segment"], s["customers"]) for s in out["sizes"]]
    [('rfm', 'loyal', 3), ('rfm', 'new', 2)]
    >>> out["moves"][1]
    {'day': '2026-03-01', 'segmentation': 'rfm', 'from': 'new', 'to': 'loyal', 'customers': 3}
    """
    def wanted(segmentation: str) -> bool:
        return by == "all" or segmentation == by

    shown_sizes = []
    for name, n in sorted(sizes.items()):
        segmentation, _, segment = name.partition(":")
        if n > 0 and wanted(segmentation):
            shown_sizes.append({"segmentation": segmentation, "segment": segment,
                                "customers": n})
    shown_moves = []
    for day, counts in sorted(moves.items()):
        for name, n in sorted(counts.items()):
            parts = name.split("|")
            if len(parts) == 3 and wanted(parts[0]) and n > 0:
                shown_moves.append({"day": iso_day(day), "segmentation": parts[0],
                                    "from": parts[1], "to": parts[2], "customers": n})
    return {"sizes": shown_sizes, "moves": shown_moves}


def retention(cohorts: Mapping[int, Mapping[str, int]], by: str = "all") -> list[dict[str, Any]]:
    """Per cohort (month of first purchase) and segment of ``by``: its size and, for each
    month n after, the customers who bought again then and their share.

    >>> [row] = retention({674: {"all:all|0": 4, "all:all|2": 1}})
    >>> row["cohort"], row["segment"], row["customers"], row["months"]
    ('2026-03', 'all', 4, [{'n': 2, 'customers': 1, 'rate': 0.25}])
    """
    out = []
    for month, counts in sorted(cohorts.items()):
        per_segment: dict[str, dict[int, int]] = {}
        for name, n in counts.items():
            head, _, index = name.rpartition("|")
            segmentation, _, segment = head.partition(":")
            if segmentation == by and index.isdigit():
                per_segment.setdefault(segment, {})[int(index)] = n
        for segment, months in sorted(per_segment.items()):
            size = months.get(0, 0)
            out.append({"cohort": iso_month(month), "segment": segment, "customers": size,
                        "months": [{"n": i, "customers": months[i],
                                    "rate": _ratio(months[i], size, 4)}
                                   for i in sorted(months) if i > 0]})
    return out


def render_kpis(summary: Mapping[str, Any]) -> str:
    """The summary as tables for people."""
    if not summary["days"]:
        return "no KPI counters in Redis yet (are workers running on this app id?)"
    lines = [f"KPIs of {summary['days'][0]} to {summary['days'][-1]} by {summary['by']} "
             f"(segmentations: {', '.join(summary['segmentations'])})"]
    header = ("segment", "arm", "action", "decisions", "customers", "impr", "opens", "clicks",
              "purchases", "buyers", "revenue", "conversion")
    table = [header] + [
        (r["segment"], r["arm"], r["action"], *(f"{r[k]:,}" for k in (
            "decisions", "customers", "impressions", "opens", "clicks", "purchases", "buyers")),
         f"{r['revenue']:,.2f}",
         "-" if r["conversion"] is None else f"{100 * r['conversion']:.2f}%")
        for r in summary["rows"]]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
              for line in table]
    for row in summary["nps"]:
        lines.append(f"NPS {row['segment']}: {row['nps']} ({row['responses']:,} responses)")
    for row in summary["retention"]:
        months = ", ".join(f"m{m['n']} {100 * (m['rate'] or 0):.1f}%" for m in row["months"])
        lines.append(f"cohort {row['cohort']} {row['segment']}: {row['customers']:,} "
                     f"customers; {months or 'no repeat purchase yet'}")
    return "\n".join(lines)


def quality_summary(days: Mapping[int, Mapping[str, int]], by: str = "all"
                    ) -> list[dict[str, Any]]:
    """The data quality of the decisions over ``days``, per segment of ``by``: how many fell in
    each band of 0.2 (``bands``, lowest first) and the mean score.

    >>> quality_summary({20000: {"rfm:new|-|-|quality_4": 3, "rfm:new|-|-|quality_1": 1,
    ...                          "rfm:new|-|-|quality_milli": 2950}}, "rfm")
    [{'segment': 'new', 'decisions': 4, 'bands': [0, 1, 0, 0, 3], 'mean': 0.7375}]
    """
    found: dict[str, dict[str, Any]] = {}
    for counts in days.values():
        for name, n in counts.items():
            parts = _split(name)
            if parts is None or parts[0] != by or not parts[4].startswith("quality_"):
                continue
            row = found.setdefault(parts[1], {"segment": parts[1], "decisions": 0,
                                              "bands": [0] * QUALITY_BANDS, "milli": 0})
            kpi = parts[4].removeprefix("quality_")
            if kpi == "milli":
                row["milli"] += n
            elif kpi.isdigit() and int(kpi) < QUALITY_BANDS:
                row["bands"][int(kpi)] += n
                row["decisions"] += n
    return [{"segment": s, "decisions": row["decisions"], "bands": row["bands"],
             "mean": _ratio(row.pop("milli") / 1000, row["decisions"], 4)}
            for s, row in sorted(found.items())]

