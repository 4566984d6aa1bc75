"""Reading the KPI counters the workers keep in Redis (:mod:`streamproc.decisions.kpis` says
what they count; :mod:`streamproc.state.keys` names the keys): one hash per day, one per
retention cohort. Readers only: the counters are written by the customers' own atomic writes.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from streamproc.state.keys import (
    kpi_cohort_key,
    kpi_day_key,
    kpi_moves_key,
    kpi_sizes_key,
    validate_name,
)


@dataclass
class Counters:
    """Day (epoch day) -> field -> count, and cohort month (months since 1970) -> field ->
    count; segment moves by day (epoch day -> ``segmentation|from|to`` -> count) and segment
    sizes (``segmentation:segment`` -> customers)."""

    days: dict[int, dict[str, int]] = field(default_factory=dict)
    cohorts: dict[int, dict[str, int]] = field(default_factory=dict)
    moves: dict[int, dict[str, int]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


def _day_of(name: str) -> int | None:
    try:
        date = datetime.date.fromisoformat(name)
    except ValueError:
        return None
    return (date - datetime.date(1970, 1, 1)).days


def _month_of(name: str) -> int | None:
    try:
        year, month = (int(x) for x in name.split("-"))
    except ValueError:
        return None
    return (year - 1970) * 12 + month - 1 if 1 <= month <= 12 else None


async def read_counters(client: aioredis.Redis, app_id: str, days: int | None = None
                        ) -> Counters:
    """The latest ``days`` days that have counters (all of them without ``days``), and every
    retention cohort; the segment moves of the same days and the segment sizes. Two round
    trips and a SCAN of the app's KPI keys (at most twice the days kept, STREAMPROC_KPI_DAYS,
    and a few dozen cohorts)."""
    prefix = f"sp:kpi:{{{validate_name('app id', app_id)}}}:"
    found_days: list[int] = []
    found_months: list[int] = []
    move_days: set[int] = set()
    async for raw in client.scan_iter(match=prefix + "*", count=500):
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        kind, _, when = name[len(prefix):].partition(":")
        if kind == "day" and (day := _day_of(when)) is not None:
            found_days.append(day)
        elif kind == "cohort" and (month := _month_of(when)) is not None:
            found_months.append(month)
        elif kind == "moves" and (day := _day_of(when)) is not None:
            move_days.add(day)
    found_days.sort()
    if days is not None:
        found_days = found_days[-days:] if days > 0 else []
    found_months.sort()
    # The moves of the days shown (a day may have moves and no decision yet).
    newest = max([*found_days, *move_days], default=0)
    moved = sorted(d for d in move_days if days is None or d > newest - max(days, 0))
    pipe = client.pipeline(transaction=False)
    for day in found_days:
        pipe.hgetall(kpi_day_key(app_id, day))
    for month in found_months:
        pipe.hgetall(kpi_cohort_key(app_id, month))
    for day in moved:
        pipe.hgetall(kpi_moves_key(app_id, day))
    pipe.hgetall(kpi_sizes_key(app_id))
    rows = await pipe.execute()
    after = len(found_days) + len(found_months)

    def decoded(row: dict[bytes, bytes]) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in row.items()}

    return Counters(
        {day: decoded(row) for day, row in zip(found_days, rows, strict=False)},
        {month: decoded(row)
         for month, row in zip(found_months, rows[len(found_days):after], strict=True)},
        {day: decoded(row) for day, row in zip(moved, rows[after:-1], strict=True)},
        decoded(rows[-1]))
