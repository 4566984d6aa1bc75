"""The HTTP API's parts without a server: clocks, intake, keys, the decider and the worker's side
of a served decision (decision_served applied once)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from streamproc.api.access import AdminToken, RateLimiter, WriteKeys, check_open_access
from streamproc.api.clock import settle_ts
from streamproc.api.deciding import Decided, Decider, DecideRequest, DecideRequestError
from streamproc.api.intake import MAX_BATCH, BatchTooLargeError, Intake, parse_body
from streamproc.decisions import exposure
from streamproc.decisions.kpis import arm_of
from streamproc.decisions.record import iso_ms
from streamproc.errors import ConfigError
from streamproc.events.codec import Decoder
from streamproc.events.schemas import load_decision_validator, load_event_schemas
from streamproc.processor import Processor, default_engine
from streamproc.settings import Settings
from streamproc.state.memory import MemoryStore
from streamproc.state.profile import upgrade_profile

from .helpers import SETTINGS, Partition, event

NOW = 1_772_359_200_000  # 2026-03-01T10:00:00Z
TOLERANCE = 300_000


# -- clock ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("ts", "kept"), [
    ("2026-03-01T10:04:59.999Z", True),
    ("2026-03-01T09:55:00Z", True),
    ("2026-03-01T11:00:00+01:00", True),  # the same instant in another zone
    ("2026-03-01T10:05:00.001Z", False),
    ("1999-01-01T00:00:00Z", False),
    ("2100-01-01T00:00:00Z", False),
])
def test_a_client_ts_is_kept_only_within_the_tolerance(ts: str, kept: bool) -> None:
    settled, note = settle_ts(ts, NOW, TOLERANCE)
    assert (settled == ts) is kept and (note is None) is kept
    if not kept:
        assert settled == iso_ms(NOW) and "replaced" in note


def test_a_ts_that_is_no_time_is_left_for_the_schema_to_reject() -> None:
    assert settle_ts("yesterday", NOW, TOLERANCE) == ("yesterday", None)
    assert settle_ts(12, NOW, TOLERANCE) == (12, None)


# -- intake -----------------------------------------------------------------------------------

def product_view(**fields):
    return {"type": "product_view", "customer_id": "c1", "ts": "2026-03-01T10:00:00Z",
            "product": {"product_id": "p1", "category": "shoes", "price": 9.5}, **fields}


def test_problems_are_located_by_index_and_field() -> None:
    intake = Intake(SETTINGS)
    bad_price = product_view(product={"product_id": "p1", "category": "shoes", "price": -1})
    batch = intake.check([product_view(event_id="ok-1"), bad_price, "nope",
                          product_view(colour="red")], NOW)
    assert [c.event_id for c in batch.valid] == ["ok-1"]
    found = {(p.index, p.field) for p in batch.problems}
    assert found == {(1, "product.price"), (2, ""), (3, "")}
    assert "colour" in next(p.message for p in batch.problems if p.index == 3)
    assert batch.rejected == [1, 2, 3]


def test_what_is_accepted_is_what_a_worker_decodes() -> None:
    intake = Intake(SETTINGS)
    checked = intake.check([product_view(ts="2025-01-01T00:00:00Z")], NOW).valid[0]
    assert checked.event_id.startswith("api-") and checked.note and "replaced" in checked.note
    assert checked.topic == SETTINGS.topics.browsing
    event_ = Decoder(SETTINGS).decode(
        Partition().message(orjson.loads(checked.value)))
    assert event_.ts_ms == NOW and event_.customer_id == "c1"


@pytest.mark.parametrize(("body", "why"), [
    ({"type": "erase", "customer_id": "c1"}, "admin token"),
    ({"type": "decision_served", "customer_id": "c1"}, "the API itself"),
    ({"type": "telepathy", "customer_id": "c1"}, "unknown event type"),
    ({"customer_id": "c1"}, "unknown event type"),
])
def test_refused_and_unknown_types_say_why(body, why) -> None:
    problem, = Intake(SETTINGS).check([body], NOW).problems
    assert problem.field == "type" and why in problem.message


def test_an_event_too_large_for_the_worker_is_refused_here() -> None:
    intake = Intake(Settings(max_event_bytes=512))
    problem, = intake.check([product_view(event_id="big", context={"user_agent": "x" * 500})],
                            NOW).problems
    assert "too_large" in problem.message and problem.event_id == "big"


def test_feedback_endpoint_takes_feedback_only() -> None:
    intake = Intake(SETTINGS)
    ok = intake.check([{"customer_id": "c1", "decision_id": "d1", "outcome": "click"}], NOW,
                      only_type="feedback")
    assert ok.valid[0].topic == SETTINGS.topics.feedback
    wrong = intake.check([product_view()], NOW, only_type="feedback")
    assert wrong.problems[0].message == "this endpoint takes feedback events only"


def test_bodies() -> None:
    assert parse_body(b'{"a": 1}') == [{"a": 1}]
    for body in (b"", b"[]", b"7", b"{oops"):
        with pytest.raises(ValueError):
            parse_body(body)
    with pytest.raises(BatchTooLargeError):
        parse_body(orjson.dumps([{}] * (MAX_BATCH + 1)))


# -- access -----------------------------------------------------------------------------------

def test_keys_and_token() -> None:
    keys = WriteKeys(Settings(api_keys="shop=shop-key-1,app=app-key-22").api_write_keys())
    assert (keys.site("shop-key-1"), keys.site("app-key-22")) == ("shop", "app")
    assert keys.site("shop-key-") is None and keys.site("") is None and keys.site("é") is None
    token = AdminToken("admin-token-1")
    assert token.allows("Bearer admin-token-1") and token.allows("bearer admin-token-1")
    assert not token.allows("admin-token-1") and not token.allows("Bearer admin-token-2")
    assert not AdminToken("").enabled and not AdminToken("").allows("Bearer ")


@pytest.mark.parametrize("value", ["shop", "shop=short", "=longenoughkey", "a=samekey1,b=samekey1"])
def test_malformed_keys_are_a_config_error_without_the_key(value: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"STREAMPROC_API_KEYS": value})
    assert "samekey1" not in str(exc.value) and "longenoughkey" not in str(exc.value)


def test_open_endpoints_only_on_loopback() -> None:
    for host in ("127.0.0.1", "::1", "localhost"):
        check_open_access(host, {})
    check_open_access("0.0.0.0", {"k" * 8: "shop"})
    with pytest.raises(ConfigError, match="loopback"):
        check_open_access("0.0.0.0", {})


def test_rate_limits_are_per_name_and_bounded() -> None:
    t = [0.0]
    limiter = RateLimiter(1, clock=lambda: t[0], max_buckets=2)
    assert limiter.allow("a") and not limiter.allow("a") and limiter.allow("b")
    limiter.allow("c")  # "a" is forgotten: at most 2 names are kept
    assert len(limiter._buckets) == 2
    assert RateLimiter(0).allow("x")


# -- the decider and the worker's side --------------------------------------------------------

def decider() -> Decider:
    return Decider(default_engine(SETTINGS))


def test_decide_requests_are_checked_as_slot_requests() -> None:
    d = decider()
    with pytest.raises(DecideRequestError) as exc:
        d.request({"customer_id": "c1", "slot": "nowhere"}, NOW)
    problem = exc.value.problems[0]
    assert problem.field == "slot" and "homepage_hero" in problem.message
    with pytest.raises(DecideRequestError) as exc:
        d.request({"customer_id": "bad id!", "slot": "homepage_hero"}, NOW)
    assert exc.value.problems[0].field == "customer_id"
    with pytest.raises(DecideRequestError) as exc:
        d.request({"customer_id": "c1", "slot": "homepage_hero",
                   "page": {"page_type": "spaceship"}}, NOW)
    assert exc.value.problems[0].field == "page.page_type"
    with pytest.raises(DecideRequestError):
        d.request({"customer_id": "c1", "slot": "homepage_hero", "request_id": "x" * 61}, NOW)


def test_the_neutral_fallback_is_a_valid_decision_record() -> None:
    d = decider()
    req = d.request({"customer_id": "c1", "slot": "cart_drawer"}, NOW)
    record = d.neutral(req, "deadline of 50 ms passed", NOW + 51)
    load_decision_validator()(record)
    assert record["action"]["id"] == "free_delivery_banner"
    assert "deadline of 50 ms passed: neutral free_delivery_banner" in record["reasons"]


async def consenting_customer(cid: str) -> tuple[Processor, MemoryStore, Partition]:
    proc = Processor(SETTINGS, MemoryStore(), clock_ms=lambda: NOW)
    part = Partition()
    await proc.process([
        part.message(event("consent_update", cid, purpose="personalisation", granted=True)),
        *[part.message(event("product_view", cid, minute=m)) for m in range(8)],
    ])
    return proc, proc.store, part  # type: ignore[return-value]


async def personalised_decide(d: Decider) -> tuple[
        Processor, MemoryStore, Partition, dict[str, Any], DecideRequest, Decided]:
    """A decide for the first customer outside the hero experiment's control group."""
    for n in range(20):
        proc, store, part = await consenting_customer(f"c{n}")
        found = await store.read_profile(f"c{n}")
        assert found is not None
        p = upgrade_profile(found["profile"])
        req = d.request({"customer_id": f"c{n}", "slot": "homepage_hero",
                         "request_id": "pv-1"}, NOW)
        decided = d.decide(req, copy.deepcopy(p), NOW + 3)
        assert decided is not None
        if decided.record["personalised"]:
            return proc, store, part, p, req, decided
    raise AssertionError("no customer of 20 outside the control group")


async def test_a_served_decision_reaches_the_profile_once_through_the_worker() -> None:
    d = decider()
    proc, store, part, p, req, decided = await personalised_decide(d)
    cid = req.customer_id
    record, served = decided.record, decided.event
    load_event_schemas()["decision_served"].validate(served)
    load_decision_validator()(record)
    assert record["personalised"] and record["decision_id"] == d.decision_id(req)

    result = await proc.process([part.message(served)])
    assert result.applied == 1
    published = [orjson.loads(v) for _, v in result.decisions]
    assert [r["decision_id"] for r in published] == [record["decision_id"]]
    trigger = published[0]["trigger"]
    assert (trigger["topic"], trigger["event_id"]) == (SETTINGS.topics.browsing, req.event_id)
    after = (await store.read_profile(cid))["profile"]  # type: ignore[index]
    action = record["action"]["id"]
    assert after["decisions"]["seen"][action][1] == "homepage_hero"
    assert exposure.find(after, record["decision_id"]) is not None

    # The same decide retried: same decision id, same served event id: dropped as a duplicate.
    again = d.decide(d.request({"customer_id": cid, "slot": "homepage_hero",
                                "request_id": "pv-1"}, NOW + 500), copy.deepcopy(p), NOW + 501)
    assert again is not None and again.event["event_id"] == served["event_id"]
    result = await proc.process([part.message(again.event)])
    assert (result.applied, result.duplicates) == (0, 1)
    final = (await store.read_profile(cid))["profile"]  # type: ignore[index]
    assert final["decisions"] == after["decisions"]
    assert sum(1 for e in final["decisions"]["recent"]
               if e[0] == record["decision_id"][:12]) == 1


def served_counts(store: MemoryStore, row: str) -> dict[str, int]:
    """The all:all KPI counters of a decision's row (decisions, customers, ...)."""
    out: dict[str, int] = {}
    for counts in store.kpis.values():
        for name, n in counts.items():
            segment, _, _, kpi = name.split("|") if name.count("|") == 3 else ("", "", "", "")
            if segment == "all:all" and row in name and n:
                out[kpi] = out.get(kpi, 0) + n
    return out


async def test_a_served_decision_is_counted_in_the_kpis_once() -> None:
    """The worker counts a decision served over HTTP as it counts its own, on the decision's
    row; the same event redelivered, a producer duplicate and the same decision served again
    under another event id (past the duplicate window) add nothing."""
    d = decider()
    proc, store, part, _, _, decided = await personalised_decide(d)
    record, served = decided.record, decided.event
    row = f"|{arm_of(record)}|{record['action']['id']}|"
    before = copy.deepcopy(store.kpis)
    message = part.message(served)
    await proc.process([message])
    assert served_counts(store, row) == {"decisions": 1, "customers": 1}
    assert sum(n for counts in store.kpis.values() for f, n in counts.items()
               if f.startswith("all:all|") and f.endswith("|decisions")) == sum(
        n for counts in before.values() for f, n in counts.items()
        if f.startswith("all:all|") and f.endswith("|decisions")) + 1
    counted = copy.deepcopy(store.kpis)
    await proc.process([message])  # redelivered
    await proc.process([part.message(served)])  # a producer duplicate: the same event id
    await proc.process([part.message({**served, "event_id": "served-again"})])
    assert store.kpis == counted
    # A click on it and a purchase after it count on its row.
    await proc.process([
        part.message(event("feedback", req_cid := record["customer_id"], minute=1,
                           decision_id=record["decision_id"], outcome="click")),
        part.message(event("purchase", req_cid, minute=2, amount=20.0)),
    ])
    got = served_counts(store, row)
    assert (got["clicks"], got["impressions"], got["purchases"], got["buyers"],
            got["revenue_cents"]) == (1, 1, 1, 1, 2000)
