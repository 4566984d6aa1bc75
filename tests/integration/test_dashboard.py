"""The dashboard on the real stack: events through a worker, then the JSON behind the charts
(``/v1/kpis...`` of ``streamproc serve``) equals a recount from the topics and what the commands
print (`kpis --json`, `report --json`); and the page, in a real headless Chromium (Debian's
``chromium`` through Playwright, as the shop's test), asks for the read token, draws every chart
without a console error, and shows the numbers of the JSON. The screenshot is kept in
``test-artefacts/dashboard.png``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis

from streamproc.days import DAY_MS
from streamproc.decisions.bandit import POLICY
from streamproc.decisions.decision_log import read_topic
from streamproc.decisions.kpis import ts_ms_of
from streamproc.state.counters import read_counters
from streamproc.state.store import RedisStore

from .conftest import Env
from .polling import until
from .streams import (
    Truth,
    alive,
    build_stream,
    forget_counters,
    forget_run,
    stream_chunk,
    wait_complete,
)
from .test_api import start_api
from .test_kpis import OUTCOMES, _iso, recount, unique
from .test_shop import ARTEFACTS, browser, open_page  # noqa: F401 (the browser fixture)

pytestmark = pytest.mark.integration

READ = "it-read-token-1"
AUTH = {"Authorization": f"Bearer {READ}"}
FAST_GROUP = {"STREAMPROC_SESSION_TIMEOUT_S": "6"}
CHARTS = ("chart-sizes", "chart-moves", "chart-rates", "chart-revenue", "chart-segment-days",
          "chart-cluster-days", "chart-uplift", "chart-control", "chart-nps", "chart-retention",
          "chart-bandit", "chart-models", "chart-pipeline", "chart-quality")


async def drive(env: Env, redis: aioredis.Redis, run: str, customers: int, events: int
                ) -> tuple[dict[str, Truth], int]:
    """A worker applies a simulated stream (producer duplicates in it); feedback on a third of
    its decisions, surveys and one unreadable event follow. Returns the truth and the number of
    surveys once the KPI counters equal the recount from the topics."""
    settings = env.settings
    stream, truth, _ = build_stream(run, customers, events, tag="db")
    worker = env.start_worker()
    await stream_chunk(env, stream)
    await wait_complete(env, redis, [worker], truth, timeout=120)
    # Every customer's home page asks for its hero slot (the experiment's slot): its arms,
    # control included, get customers.
    last_ms = max(ts_ms_of(e["ts"]) for _, e in stream)
    slots = [{"event_id": f"db{run}-h{i}", "type": "slot_request", "customer_id": cid,
              "ts": _iso(last_ms + 60_000 + i), "channel": "web", "slot": "homepage_hero",
              "page": {"url": "https://shop.example/", "page_type": "home"}}
             for i, cid in enumerate(sorted(truth))]
    await env.produce_events(settings.topics.browsing, slots)
    asked = {e["event_id"] for e in slots}

    async def answered() -> bool:
        records = await read_topic(settings, settings.topics.decisions)
        return asked <= {(r.get("trigger") or {}).get("event_id") for r in records if r}

    async with asyncio.timeout(90):
        while not await answered():
            alive(env, worker)
            await asyncio.sleep(0.5)
    decisions = unique(await read_topic(settings, settings.topics.decisions), "decision_id")
    answers = [{"event_id": f"db{run}-f{i}", "type": "feedback", "customer_id": d["customer_id"],
                "decision_id": d["decision_id"], "outcome": OUTCOMES[i % len(OUTCOMES)],
                "ts": _iso(ts_ms_of(d["ts"]) + 1000)} for i, d in enumerate(decisions[::3])]
    # Emails opened again and again, up to a day after they were sent, with no impression
    # reported: each decision's open counts once, on its own day and segments.
    answers += [{"event_id": f"db{run}-o{i}-{n}", "type": "feedback",
                 "customer_id": d["customer_id"], "decision_id": d["decision_id"],
                 "outcome": "open", "ts": _iso(ts_ms_of(d["ts"]) + 2000 + n * DAY_MS // 2)}
                for i, d in enumerate(decisions[1::6]) for n in range(3)]
    outcomes = Counter(a["outcome"] for a in answers)
    assert outcomes["open"] > outcomes["impression"]  # counted raw, the open rate was > 100 %
    surveys = [{"event_id": f"db{run}-s{i}", "type": "survey", "customer_id": cid,
                "ts": _iso(ts_ms_of(decisions[-1]["ts"])), "score": (3 * i) % 11}
               for i, cid in enumerate(sorted(truth)[:12])]
    await env.produce_events(settings.topics.feedback, answers + surveys)
    await env.produce(settings.topics.browsing, [(f"db{run}-bad".encode(), b"{not json")])
    window_ms = settings.attribution_hours * 3_600_000
    deadline = time.monotonic() + 90
    while True:
        alive(env, worker)
        decisions = unique(await read_topic(settings, settings.topics.decisions), "decision_id")
        feedback = [e for e in unique(await read_topic(settings, settings.topics.feedback),
                                      "event_id") if e.get("type") == "feedback"]
        purchases = unique(await read_topic(settings, settings.topics.purchases), "event_id")
        want = recount(decisions, feedback, purchases, window_ms)
        counters = await read_counters(redis, settings.app_id)
        got = {day: Counter({f: n for f, n in counts.items() if "|-|-|" not in f})
               for day, counts in counters.days.items()}
        responses = sum(c.get("all:all|-|-|responses", 0) for c in counters.days.values())
        letters = await read_topic(settings, settings.topics.deadletter)
        if got == want and responses == len(surveys) and letters:
            return truth, len(surveys)
        assert time.monotonic() < deadline, "the KPI counters never equalled the recount"
        await asyncio.sleep(0.5)


async def get(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
              ) -> Any:
    async with http.get(url, headers=headers if headers is not None else AUTH) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def without(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in keys}


async def test_the_json_behind_the_charts_equals_the_commands_and_the_topics(
        stack_env: Env, test_redis: aioredis.Redis) -> None:
    env = stack_env
    env.env.update(FAST_GROUP)
    settings = env.settings
    run = uuid.uuid4().hex[:8]
    truth: dict[str, Truth] = {}
    try:
        truth, surveys = await drive(env, test_redis, run, 30, 900)
        url, _ = await start_api(env, STREAMPROC_API_READ_TOKEN=READ)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/v1/kpis") as resp:
                assert resp.status == 401  # the token is set: nothing without it
            kpis = await get(http, f"{url}/v1/kpis?days=366&by=all")
            cli = env.cli("kpis", "--days", "366", "--by", "all", "--json")
            assert cli.returncode == 0, cli.stderr
            assert without(kpis, "generated_at") == orjson.loads(cli.stdout)
            by_rfm = await get(http, f"{url}/v1/kpis?days=366&by=rfm")
            cli = env.cli("kpis", "--days", "366", "--by", "rfm", "--json")
            assert without(by_rfm, "generated_at") == orjson.loads(cli.stdout)
            assert sum(r["decisions"] for r in kpis["rows"]) == len(unique(
                await read_topic(settings, settings.topics.decisions), "decision_id")) > 50
            assert kpis["nps"][0]["responses"] == surveys
            # Every rate of every row, day and segment is a share: at most 100 %.
            rates = [r[k] for summary in (kpis, by_rfm)
                     for part in ("rows", "daily", "daily_segments") for r in summary[part]
                     for k in ("open_rate", "click_rate", "conversion") if r[k] is not None]
            assert rates and max(rates) <= 1
            assert any(r["open_rate"] for r in kpis["rows"] if r["open_rate"] is not None)

            # Segment moves: each move record of the segments topic once, by its day.
            records = await read_topic(settings, settings.topics.segments)
            seen = {(r["customer_id"], r["segmentation"], r["from"], r["to"], r["ts"])
                    for r in records if isinstance(r, dict)}
            moves: Counter[tuple[str, str, str, str]] = Counter()
            for _cid, segmentation, before, after, ts in seen:
                moves[(_day(ts), segmentation, before or "-", after or "-")] += 1
            shown = {(m["day"], m["segmentation"], m["from"], m["to"]): m["customers"]
                     for m in kpis["segments"]["moves"]}
            assert shown == dict(moves) and sum(moves.values()) > 3 * len(truth)
            # Segment sizes: the customers' segments now, from their profiles.
            store = RedisStore(test_redis)
            sizes: Counter[tuple[str, str]] = Counter()
            for cid in truth:
                found = await store.read_profile(cid)
                assert found is not None
                for segmentation, segment in found["profile"]["segments"].items():
                    sizes[(segmentation, str(segment))] += 1
            assert {(s["segmentation"], s["segment"]): s["customers"]
                    for s in kpis["segments"]["sizes"]} == dict(sizes)

            # Experiments: what `report --json` prints, read from the same topics.
            report = await get(http, f"{url}/v1/kpis/experiments?by=segments.rfm")
            cli = env.cli("report", "--by", "segments.rfm", "--json")
            assert cli.returncode == 0, cli.stderr
            assert without(report, "generated_at", "by", "max_age_s") == orjson.loads(cli.stdout)
            assert report["rows"] and {r["status"] for r in report["rows"]} <= {
                "control", "ok", "not enough data yet", "no control", "-"}

            bandit = await get(http, f"{url}/v1/kpis/bandit?days=366")
            # The bandit's decisions: an experiment's bandit arm, and its policy outside them.
            bandit_rows = [r for r in kpis["rows"]
                           if r["arm"].rpartition(":")[2] in ("bandit", POLICY)]
            assert sum(a["decisions"] for a in bandit["actions"]) == sum(
                r["decisions"] for r in bandit_rows) > 0
            assert abs(sum(a["share"] for a in bandit["actions"]) - 1) < 1e-3

            # Data quality: every decision once, in the band of its data_quality, with the mean.
            scores = [d["data_quality"] for d in unique(
                await read_topic(settings, settings.topics.decisions), "decision_id")]
            [quality] = kpis["quality"]
            bands = Counter(min(4, int(q * 5)) for q in scores)
            assert quality["segment"] == "all" and quality["decisions"] == len(scores)
            assert quality["bands"] == [bands[b] for b in range(5)] and bands[0] < len(scores)
            assert quality["mean"] == pytest.approx(sum(scores) / len(scores), abs=1e-3)

            # The worker is alive: a heartbeat within 15 s. On a loaded machine one can come
            # late, so the page is asked again (its status is cached 5 s) until it shows one.
            async def worker_alive() -> dict[str, Any] | None:
                found = await get(http, f"{url}/v1/kpis/pipeline")
                return found if found["workers_alive"] == 1 else None

            pipeline = await until("the pipeline shows the running worker", worker_alive, 45)
            letters = [r for r in await read_topic(settings, settings.topics.deadletter) if r]
            assert pipeline["deadletters_total"] == len(letters) >= 1
            assert pipeline["lag"] >= 0
            models = await get(http, f"{url}/v1/kpis/models")
            assert {"intent_auc", "drifts_total", "model_version", "snapshot_age_s"} <= set(models)
    finally:
        await forget_run(test_redis, truth, f"*db{run}-*")
        await forget_counters(test_redis, settings.app_id)


def _day(iso: str) -> str:
    return _iso(ts_ms_of(iso))[:10]


def _int(n: float) -> str:
    return f"{round(n):,}"


def headline(rows: list[dict[str, Any]], nps: list[dict[str, Any]]) -> dict[str, str]:
    """The headline figures as the page must show them, from the JSON's rows."""
    t: Counter[str] = Counter()
    for r in rows:
        for k in ("decisions", "customers", "impressions", "opens", "clicks", "buyers"):
            t[k] += r[k]
    revenue = round(sum(r["revenue"] for r in rows), 2)

    def pct(num: float, den: float) -> str:
        return f"{100 * num / den:.1f}%" if den else "–"

    score = next((r["nps"] for r in nps if r["segment"] == "all"), None)
    return {"decisions": _int(t["decisions"]), "customers": _int(t["customers"]),
            "open_rate": pct(t["opens"], t["impressions"]),
            "click_rate": pct(t["clicks"], t["impressions"]),
            "conversion": pct(t["buyers"], t["customers"]), "revenue": f"{revenue:,.2f}",
            "revenue_per_customer": f"{revenue / t['customers']:,.2f}" if t["customers"] else "–",
            "nps": "–" if score is None else f"{score:.1f}"}


async def test_the_dashboard_in_chromium_draws_every_chart_with_the_json_numbers(
        stack_env: Env, test_redis: aioredis.Redis, browser: Any) -> None:  # noqa: F811
    env = stack_env
    env.env.update(FAST_GROUP)
    run = uuid.uuid4().hex[:8]
    truth: dict[str, Truth] = {}
    try:
        truth, _ = await drive(env, test_redis, run, 80, 1600)
        url, _ = await start_api(env, STREAMPROC_API_READ_TOKEN=READ)
        context, page, errors = await open_page(browser)
        await page.set_viewport_size({"width": 1440, "height": 900})
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        await page.goto(f"{url}/dashboard/")
        # No token yet: the page asks for it (the 401s of the first refresh are expected).
        # The box shows at the first 401, while the refresh's later requests still run: their
        # 401s are awaited (the refresh ends) before the console is cleared.
        await page.wait_for_selector("#token-box:not([hidden])")
        await page.wait_for_function("Number(document.body.dataset.refreshed) >= 1")
        console.clear()
        await page.fill("#token", READ)
        await page.click("#token-form button")
        await page.wait_for_function("Number(document.body.dataset.refreshed) >= 2",
                                     timeout=90_000)
        assert await page.locator("#error").is_hidden(), await page.inner_text("#error")
        assert errors == [] and console == []

        async with aiohttp.ClientSession() as http:
            kpis = await get(http, f"{url}/v1/kpis?days=7&by=all")
            clusters = await get(http, f"{url}/v1/kpis?days=7&by=cluster")
        want = headline(kpis["rows"], kpis["nps"])
        shown = {k: await page.inner_text(f"[data-kpi={k}]") for k in want}
        assert shown == want
        for rate in ("open_rate", "click_rate", "conversion"):
            assert 0 < float(shown[rate].rstrip("%")) <= 100, shown
        # The bars of "Rates per segment", as drawn (percent).
        bars = await page.evaluate(
            "echarts.getInstanceByDom(document.getElementById('chart-rates')).getOption()"
            ".series.map((s) => [s.name, s.data])")
        drawn_rates = [v for _, data in bars for v in data if v is not None]
        assert {name for name, _ in bars} == {"open rate", "click rate", "conversion"}
        assert drawn_rates and max(drawn_rates) <= 100, bars
        assert int(want["decisions"].replace(",", "")) > 50

        # Every chart drew its data (marks in its svg); one without data says so, and only
        # where its JSON has none.
        async with aiohttp.ClientSession() as http:
            report = await get(http, f"{url}/v1/kpis/experiments")
            bandit = await get(http, f"{url}/v1/kpis/bandit?days=7")
        no_data = {
            "chart-cluster-days": not any(r["customers"] for r in clusters["daily_segments"]),
            "chart-nps": not kpis["nps"],
            "chart-control": not any(r["status"] == "control" for r in report["rows"]),
            "chart-bandit": not bandit["actions"],
            "chart-quality": not kpis["quality"],
        }
        drawn = 0
        for chart in CHARTS:
            empty = await page.get_attribute(f"#{chart}", "data-empty")
            marks = await page.locator(f"#{chart} svg path").count()
            if empty is not None:
                assert no_data.get(chart), f"{chart} shows no data ({empty}) but has some"
                continue
            assert marks > 0, chart
            drawn += 1
        assert drawn >= len(CHARTS) - 2, no_data
        sizes = await page.eval_on_selector_all("#chart-sizes svg text",
                                                "els => els.map(e => e.textContent)")
        biggest = max((s for s in kpis["segments"]["sizes"] if s["segmentation"] == "rfm"),
                      key=lambda s: s["customers"])
        assert biggest["segment"] in sizes and str(biggest["customers"]) in sizes
        ARTEFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTEFACTS / "dashboard.png"), full_page=True)
        await context.close()
    finally:
        await forget_run(test_redis, truth, f"*db{run}-*")
        await forget_counters(test_redis, env.settings.app_id)
