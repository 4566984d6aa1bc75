"""The KPI counters recounted from the topics, independently of the worker: what
tests/integration/test_kpis.py and the HTTP API's tests compare the counters in Redis with."""

from __future__ import annotations

from collections import Counter
from typing import Any

from streamproc.days import DAY_MS
from streamproc.decisions.catalogue import NONE_ID
from streamproc.decisions.kpis import FEEDBACK_KPIS, arm_of, attribute, segment_parts, ts_ms_of


def unique(records: list[dict[str, Any] | None], key: str) -> list[dict[str, Any]]:
    seen: set[Any] = set()
    out = []
    for r in records:
        if isinstance(r, dict) and r.get(key) not in seen:
            seen.add(r.get(key))
            out.append(r)
    return out


def recount(decisions: list[dict[str, Any]], feedback: list[dict[str, Any]],
            purchases: list[dict[str, Any]], window_ms: int) -> dict[int, Counter[str]]:
    days: dict[int, Counter[str]] = {}
    rows: dict[str, tuple[int, list[str], str]] = {}  # decision id -> day, fields, reach key
    reached: set[tuple[str, int, str]] = set()
    for d in decisions:
        day = ts_ms_of(d["ts"]) // DAY_MS
        arm, action = arm_of(d), d["action"]["id"]
        parts = segment_parts(d["segments"])
        fields = [f"{part}|{arm}|{action}|" for part in parts]
        counts = days.setdefault(day, Counter())
        for f in fields:
            counts[f + "decisions"] += 1
        if action == NONE_ID:
            continue
        row = f"{arm}|{action}|{parts}"
        rows[d["decision_id"]] = (day, fields, row)
        if (d["customer_id"], day, row) not in reached:
            reached.add((d["customer_id"], day, row))
            for f in fields:
                counts[f + "customers"] += 1
    # Each decision once per outcome, an open, click or conversion counting its impression.
    answered: dict[str, set[str]] = {}
    for event in feedback:
        found = rows.get(event["decision_id"])
        if found is not None and event["outcome"] in FEEDBACK_KPIS:
            done = answered.setdefault(event["decision_id"], set())
            for kpi in {FEEDBACK_KPIS[event["outcome"]], "impressions"} - done:
                done.add(kpi)
                for f in found[1]:
                    days[found[0]][f + kpi] += 1
    buyers: set[tuple[str, int, str]] = set()
    by_id = {d["decision_id"]: d for d in decisions}
    for did, (n, revenue) in attribute(decisions, purchases, window_ms).items():
        day, fields, row = rows[did]
        for f in fields:
            days[day][f + "purchases"] += n
            days[day][f + "revenue_cents"] += round(revenue * 100)
        who = (by_id[did]["customer_id"], day, row)
        if who not in buyers:
            buyers.add(who)
            for f in fields:
                days[day][f + "buyers"] += 1
    return days
