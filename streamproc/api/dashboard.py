"""The dashboard: ``GET /dashboard/`` (a page of charts) and the JSON behind every chart.

- ``GET /v1/kpis``: the KPI counters the workers keep in Redis, exactly what
  ``streamproc kpis --json`` prints (:func:`streamproc.decisions.kpi_summary.summarise_counters`,
  with the same ``days`` and ``by``): per segment, arm and action; per day and arm; per day and
  segment; NPS; retention; segment sizes and each day's moves between segments.
- ``GET /v1/kpis/experiments``: uplift over control with intervals, exactly what
  ``streamproc report --json`` prints (:func:`streamproc.decisions.report.experiment_report`,
  same ``by`` and ``experiment``), read from the topics at most every :data:`REPORT_TTL_S`.
- ``GET /v1/kpis/bandit``: the learning bandit this process serves (posterior mean per context
  and action, as ``streamproc bandit``) and each action's share of the bandit arms' decisions.
- ``GET /v1/kpis/models``: the served models' figures (as the workers' ``/metrics``).
- ``GET /v1/kpis/pipeline``: workers, events/s and consumer lag (as ``streamproc status
  --json``) and the dead letters by reason (read from the dead-letter topic).

Who may read them: :class:`streamproc.api.access.ReadAccess`. The page itself holds no data.
Every file of the page is read once, when the app is built, and served from memory; the
charting library (Apache ECharts) is vendored in ``static/vendor/``: nothing comes from a CDN.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web

from streamproc.api.access import ReadAccess
from streamproc.api.assets import TYPES, file_response
from streamproc.decisions.bandit import POLICY, ThompsonChooser
from streamproc.decisions.decision_log import LogError, read_topic
from streamproc.decisions.kpi_summary import summarise_counters
from streamproc.decisions.report import experiment_report
from streamproc.errors import StreamprocError
from streamproc.learning.scorer import IntentScorer
from streamproc.redis_options import FAILURES as REDIS_FAILURES
from streamproc.settings import Settings
from streamproc.state.counters import read_counters
from streamproc.worker.status import collect_status

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
PAGE = STATIC / "dashboard"
VENDOR = STATIC / "vendor"
# Reading whole topics and bootstrapping intervals costs seconds on a busy machine: a report is
# recomputed at most this often, whatever the number of open pages.
REPORT_TTL_S = 30.0
# Status reads offsets from Kafka (two consumers): at most this often.
STATUS_TTL_S = 5.0
MAX_DAYS = 366
# Arms whose decisions the bandit chooses (an experiment arm named after it, or its policy).
BANDIT_ARMS = ("bandit", POLICY)


@dataclass
class _Entry:
    value: Any = None
    at: float = -1e18
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Cache:
    """Values by key, recomputed when older than ``ttl_s``; concurrent askers of a stale key
    wait for one computation."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 64) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self.max_keys = max_keys
        self._entries: dict[Any, _Entry] = {}

    async def get(self, key: Any, compute: Callable[[], Awaitable[Any]]) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_keys:
                self._entries.pop(next(iter(self._entries)))
            entry = self._entries[key] = _Entry()
        async with entry.lock:
            if self.clock() - entry.at >= self.ttl_s:
                entry.value = await compute()
                entry.at = self.clock()
            return entry.value


def bandit_view(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                version: int) -> dict[str, Any]:
    """The bandit's summary (``ThompsonChooser.summary``) with, per action, its posterior mean
    over every context (weighted by outcomes), its outcomes and its share of the bandit arms'
    decisions in the KPI ``rows`` (of ``summarise``); an action without outcomes yet has the
    prior's mean.

    >>> summary = {"contexts": {"a": {"x": {"outcomes": 3, "mean": 0.5}},
    ...                         "b": {"x": {"outcomes": 1, "mean": 0.1},
    ...                               "y": {"outcomes": 0, "mean": 0.5}}}}
    >>> rows = [{"arm": "hero:bandit", "action": "x", "decisions": 3},
    ...         {"arm": "hero:bandit", "action": "y", "decisions": 1},
    ...         {"arm": "hero:control", "action": "z", "decisions": 9}]
    >>> [(a["action"], a["mean"], a["share"]) for a in bandit_view(summary, rows, 4)["actions"]]
    [('x', 0.4, 0.75), ('y', 0.5, 0.25)]
    """
    weighted: dict[str, list[float]] = {}  # outcomes, weighted sum, plain sum, contexts
    for arms in summary.get("contexts", {}).values():
        for action, about in arms.items():
            w = weighted.setdefault(action, [0.0, 0.0, 0.0, 0.0])
            w[0] += about["outcomes"]
            w[1] += about["outcomes"] * about["mean"]
            w[2] += about["mean"]
            w[3] += 1
    decisions: dict[str, int] = {}
    for row in rows:
        if row["arm"].rpartition(":")[2] in BANDIT_ARMS:
            decisions[row["action"]] = decisions.get(row["action"], 0) + row["decisions"]
    total = sum(decisions.values())
    actions = []
    for action in sorted(set(weighted) | set(decisions)):
        outcomes, total_mean, plain, contexts = weighted.get(action, [0.0, 0.0, 0.0, 0.0])
        # Without outcomes yet, the prior's mean (what the bandit believes before learning).
        mean = (total_mean / outcomes if outcomes else plain / contexts if contexts else None)
        actions.append({"action": action, "outcomes": round(outcomes, 3),
                        "mean": None if mean is None else round(mean, 4),
                        "contexts": int(contexts), "decisions": decisions.get(action, 0),
                        "share": round(decisions.get(action, 0) / total, 4) if total else None})
    return {"version": version, **{k: v for k, v in summary.items() if k != "contexts"},
            "actions": actions, "contexts": summary.get("contexts", {})}


def deadletter_reasons(records: Sequence[Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """Dead letters counted by reason (its text before any detail after a colon), most first.

    >>> found = deadletter_reasons([{"reason": "schema: ts missing"}, {"reason": "schema: bad"},
    ...                             {"reason": "not JSON"}, None])
    >>> [(r["reason"], r["count"]) for r in found]
    [('schema', 2), ('not JSON', 1), ('unreadable', 1)]
    """
    counts: dict[str, int] = {}
    for r in records:
        reason = str(r.get("reason", "?")) if isinstance(r, Mapping) else "unreadable"
        short = reason.partition(":")[0].strip()[:80] or "?"
        counts[short] = counts.get(short, 0) + 1
    return [{"reason": k, "count": n}
            for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _int_arg(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise _bad(f"{name} must be a whole number from {low} to {high}") from None
    if not low <= value <= high:
        raise _bad(f"{name} must be a whole number from {low} to {high}")
    return value


def _name_arg(request: web.Request, name: str, default: str | None) -> str | None:
    text = request.query.get(name, default)
    if text is not None and (not text or len(text) > 100 or not all(
            c.isalnum() or c in "._-" for c in text)):
        raise _bad(f"{name} must be a name of letters, digits, '.', '_' or '-'")
    return text


def _bad(message: str) -> web.HTTPException:
    return web.HTTPBadRequest(text=orjson.dumps({"error": message}).decode(),
                              content_type="application/json")


def _unavailable(message: str) -> web.HTTPException:
    return web.HTTPServiceUnavailable(text=orjson.dumps({"error": message}).decode(),
                                      content_type="application/json",
                                      headers={"Retry-After": "5"})


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                        content_type="application/json", headers={"Cache-Control": "no-store"})


class Dashboard:
    """The dashboard's routes; ``redis`` and ``scorer`` are the API's, set when it starts."""

    def __init__(self, settings: Settings, access: ReadAccess,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.access = access
        self.clock = clock
        self.redis: aioredis.Redis | None = None
        self.scorer: IntentScorer | None = None
        self.bandit: ThompsonChooser | None = None
        self.reports = Cache(REPORT_TTL_S)
        self.status = Cache(STATUS_TTL_S)
        self.files = self._load()

    @staticmethod
    def _load() -> dict[str, tuple[bytes, str]]:
        files = {p.name: (p.read_bytes(), TYPES[p.suffix]) for p in sorted(PAGE.iterdir())
                 if p.suffix in TYPES}
        files["echarts.min.js"] = ((VENDOR / "echarts.min.js").read_bytes(), TYPES[".js"])
        return files

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/kpis", self.kpis)
        router.add_get("/v1/kpis/experiments", self.experiments)
        router.add_get("/v1/kpis/bandit", self.bandit_arms)
        router.add_get("/v1/kpis/models", self.models)
        router.add_get("/v1/kpis/pipeline", self.pipeline)
        router.add_get("/dashboard", self.page_slash)
        router.add_get("/dashboard/", self.page)
        router.add_get("/dashboard/{name}", self.page)

    # -- the page -----------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        return file_response(self.files, request)

    async def page_slash(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/dashboard/")

    # -- the data -----------------------------------------------------------------------------

    def _allow(self, request: web.Request) -> None:
        refusal = self.access.refusal(request.headers.get("Authorization"))
        if refusal is not None:
            status, message = refusal
            cls = web.HTTPUnauthorized if status == 401 else web.HTTPForbidden
            raise cls(text=orjson.dumps({"error": message}).decode(),
                      content_type="application/json",
                      headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)

    async def _summary(self, days: int, by: str) -> dict[str, Any]:
        assert self.redis is not None
        try:
            async with asyncio.timeout(5):
                counters = await read_counters(self.redis, self.settings.app_id, days)
        except REDIS_FAILURES as exc:
            raise _unavailable(f"the KPI counters in Redis are unavailable "
                               f"({type(exc).__name__})") from None
        return summarise_counters(counters, by)

    async def kpis(self, request: web.Request) -> web.Response:
        self._allow(request)
        days = _int_arg(request, "days", 7, 1, MAX_DAYS)
        by = _name_arg(request, "by", "all") or "all"
        return _json({**await self._summary(days, by), "generated_at": self.clock()})

    async def experiments(self, request: web.Request) -> web.Response:
        self._allow(request)
        by = _name_arg(request, "by", None)
        experiment = _name_arg(request, "experiment", None)

        async def compute() -> dict[str, Any]:
            # In a thread of its own (own event loop): the bootstrap is CPU work that would
            # hold up every other request.
            report = await asyncio.to_thread(asyncio.run, experiment_report(
                self.settings, by=by, experiment=experiment))
            return {**report.as_dict(), "generated_at": self.clock()}

        try:
            found = await self.reports.get(("report", by, experiment), compute)
        except (LogError, StreamprocError, OSError) as exc:
            raise _unavailable(f"the decision topics could not be read: {exc}"[:300]) from None
        return _json({**found, "by": by, "max_age_s": REPORT_TTL_S})

    async def bandit_arms(self, request: web.Request) -> web.Response:
        self._allow(request)
        days = _int_arg(request, "days", 7, 1, MAX_DAYS)
        summary = await self._summary(days, "all")
        version = self.scorer.bandit_version if self.scorer is not None else 0
        chooser = self.bandit
        return _json({**bandit_view(chooser.summary() if chooser is not None else {},
                                    summary["rows"], version),
                      "days": summary["days"], "generated_at": self.clock()})

    async def models(self, request: web.Request) -> web.Response:
        self._allow(request)
        stats = self.scorer.stats() if self.scorer is not None else {}
        return _json({"served": self.scorer is not None and self.scorer.version > 0,
                      "snapshots": bool(self.settings.model_secret), **stats,
                      "generated_at": self.clock()})

    async def pipeline(self, request: web.Request) -> web.Response:
        self._allow(request)

        async def status() -> dict[str, Any]:
            return (await collect_status(self.settings)).as_dict()

        async def letters() -> list[dict[str, Any]]:
            try:
                records = await read_topic(self.settings, self.settings.topics.deadletter)
            except LogError:  # no dead-letter topic yet: none
                records = []
            return deadletter_reasons(records)

        try:
            found = await self.status.get("status", status)
            reasons = await self.reports.get("deadletters", letters)
        except (StreamprocError, OSError) as exc:
            raise _unavailable(str(exc)[:300]) from None
        return _json({**found, "deadletters": reasons,
                      "deadletters_total": sum(r["count"] for r in reasons),
                      "generated_at": self.clock()})
