"""KPIs counted by the stream equal a recount from the topics, after a worker was killed with
SIGKILL mid-stream (so batches were redelivered to its successor) and with producer duplicates
in the input: every decision, feedback event and attributed purchase counted exactly once.

The recount reads the decisions, feedback and purchases topics (each decision id and event id
once) and counts independently of the worker: decisions per day x segment x arm x action,
customers reached, feedback on each decision's row, purchases attributed to the customer's
latest decision within the window (streamproc.decisions.kpis.attribute, the batch twin of the
stream's rule), buyers; and NPS totals from the surveys sent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import orjson
import pytest
import redis.asyncio as aioredis

from streamproc.decisions.decision_log import read_topic
from streamproc.decisions.kpis import ts_ms_of
from streamproc.state.counters import read_counters
from streamproc.state.store import RedisStore

from .conftest import Env
from .kpi_recount import recount, unique
from .streams import (
    alive,
    build_stream,
    forget_counters,
    forget_run,
    stream_chunk,
    wait_complete,
)

pytestmark = [pytest.mark.integration, pytest.mark.core]

CUSTOMERS = 40
EVENTS = 1500
FAST_GROUP = {"STREAMPROC_SESSION_TIMEOUT_S": "6"}
OUTCOMES = ("impression", "open", "click", "conversion")


async def test_kpis_in_redis_equal_a_recount_from_the_topics(stack_env: Env,
                                                             test_redis: aioredis.Redis) -> None:
    env = stack_env
    env.env.update(FAST_GROUP)
    settings = env.settings
    run = uuid.uuid4().hex[:8]
    stream, truth, _ = build_stream(run, CUSTOMERS, EVENTS, tag="kp")
    try:
        first = env.start_worker()
        half = len(stream) // 2
        await stream_chunk(env, stream[:half])
        await env.consume_until(settings.topics.decisions, lambda r: len(r) >= 50, timeout=90)
        alive(env, first)
        first.kill()  # SIGKILL: what it applied past its last commit is read again
        first.wait()
        second = env.start_worker()
        await stream_chunk(env, stream[half:])
        await wait_complete(env, test_redis, [second], truth, timeout=120)

        # Feedback on a share of the decisions, one event id each, a producer retry included;
        # and NPS surveys from some customers.
        decisions = unique(await read_topic(settings, settings.topics.decisions),
                           "decision_id")
        answers = []
        for i, d in enumerate(decisions[::3]):
            outcome = OUTCOMES[i % len(OUTCOMES)]
            ts = ts_ms_of(d["ts"]) + 1000
            answers.append({"event_id": f"kp{run}-f{i}", "type": "feedback",
                            "customer_id": d["customer_id"], "decision_id": d["decision_id"],
                            "outcome": outcome, "ts": _iso(ts)})
        answers.append(answers[0])
        surveys = [{"event_id": f"kp{run}-s{i}", "type": "survey", "customer_id": cid,
                    "ts": _iso(ts_ms_of(decisions[-1]["ts"])), "score": i % 11}
                   for i, cid in enumerate(sorted(truth)[:22])]
        await env.produce_events(settings.topics.feedback, answers + surveys)

        # Until the counters equal the recount (they only move with the worker's writes).
        window_ms = settings.attribution_hours * 3_600_000
        deadline = time.monotonic() + 60
        while True:
            alive(env, second)
            decisions = unique(await read_topic(settings, settings.topics.decisions),
                               "decision_id")
            feedback = [e for e in unique(await read_topic(settings, settings.topics.feedback),
                                          "event_id") if e.get("type") == "feedback"]
            purchases = unique(await read_topic(settings, settings.topics.purchases),
                               "event_id")
            want = recount(decisions, feedback, purchases, window_ms)
            counters = await read_counters(test_redis, settings.app_id)
            got = {day: Counter({f: n for f, n in counts.items() if "|-|-|" not in f})
                   for day, counts in counters.days.items()}
            nps: Counter[str] = Counter()
            for counts in counters.days.values():
                nps.update({f: n for f, n in counts.items() if f.startswith("all:all|-|-|")})
            if got == want and nps["all:all|-|-|responses"] == len(surveys):
                break
            if time.monotonic() > deadline:
                diff = {(day, f): (got.get(day, Counter())[f], want.get(day, Counter())[f])
                        for day in set(got) | set(want)
                        for f in set(got.get(day, {})) | set(want.get(day, {}))
                        if got.get(day, Counter())[f] != want.get(day, Counter())[f]}
                raw = await read_topic(settings, settings.topics.decisions)
                variants: dict[str, set[bytes]] = {}
                for r in raw:
                    if isinstance(r, dict):
                        body = {k: v for k, v in r.items() if k not in {"decided_at",
                                                                         "latency_ms"}}
                        variants.setdefault(r["decision_id"], set()).add(orjson.dumps(body))
                differing = {d: v for d, v in variants.items() if len(v) > 1}
                # Decisions the counting remembered (their ids' first 12 digits) that are not
                # on the topic: a decision counted but never published, or the reverse.
                published = {d["decision_id"][:12] for d in decisions}
                store = RedisStore(test_redis)
                unpublished = {}
                for cid in truth:
                    found = await store.read_profile(cid)
                    exp = ((found or {}).get("profile", {}).get("kpi") or {}).get("exp", [])
                    missing = [e for e in exp if e[0] not in published]
                    if missing:
                        unpublished[cid] = missing
                pytest.fail(f"counters differ from the recount (field: got, want): "
                            f"{dict(list(diff.items())[:20])} ({len(diff)} fields); NPS {nps}; "
                            f"decision ids published with different records: {differing}; "
                            f"counted, not on the topic: {unpublished}")
            await asyncio.sleep(0.5)

        totals: Counter[str] = Counter()
        for counts in want.values():
            for f, n in counts.items():
                if f.startswith("all:all|"):
                    totals[f.rsplit("|", 1)[1]] += n
        # The run exercised every counter, so the equality above says something about each.
        assert totals["decisions"] == len(decisions) > 100
        assert all(totals[k] > 0 for k in ("customers", "impressions", "opens", "clicks",
                                           "conversions", "purchases", "revenue_cents",
                                           "buyers")), totals
        assert nps["all:all|-|-|promoters"] == sum(1 for s in surveys if s["score"] >= 9)
        assert nps["all:all|-|-|detractors"] == sum(1 for s in surveys if s["score"] <= 6)
        # Every customer who bought is in exactly one retention cohort.
        cohort_sizes = sum(counts.get("all:all|0", 0) for counts in counters.cohorts.values())
        assert cohort_sizes == sum(1 for t in truth.values() if t.orders > 0)

        # The CLI prints the same numbers.
        result = env.cli("kpis", "--days", "400", "--json")
        assert result.returncode == 0, result.stderr
        summary = orjson.loads(result.stdout)
        assert sum(r["decisions"] for r in summary["rows"]) == totals["decisions"]
        assert sum(r["purchases"] for r in summary["rows"]) == totals["purchases"]
    finally:
        await forget_run(test_redis, truth, f"*kp{run}-*")
        await forget_counters(test_redis, settings.app_id)


def _iso(ts_ms: int) -> str:
    from streamproc.decisions.record import iso_ms

    return iso_ms(ts_ms)
