"""`streamproc tail`: one compact line per decision, the reasons on demand, JSON for programs."""

from __future__ import annotations

from typing import Any

import orjson

from streamproc.tail import format_decision, format_record, short_reason

BANDIT_REASON = ("bandit (thompson-v1) in context homepage_hero:active: running_shoes_10pct has "
                 "a posterior success rate of 0.625 over 14 outcomes; picked with probability "
                 "0.712 among 3 actions")


def decision(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "decision_id": "f4aee14edc6358e98008488f5d45d0e3", "customer_id": "cust-42",
        "ts": "2026-03-01T10:01:00.000Z", "decided_at": "2026-03-01T10:01:00.031Z",
        "trigger": {"type": "slot_request", "name": "slot_request", "event_id": "e-12"},
        "slot": "homepage_hero", "channel": "web",
        "action": {"id": "running_shoes_10pct", "kind": "offer",
                   "title": "10% off running shoes", "params": {"discount_pct": 10}},
        "personalised": True,
        "reasons": ["trigger slot_request: homepage_hero requested on a home page",
                    "3 eligible for homepage_hero: running_shoes_10pct, hot_intent_bundle, x",
                    "chosen by thompson-v1 (propensity 0.71) for homepage_hero:active",
                    BANDIT_REASON],
        "segments": {"lifecycle": "active"}, "scores": {"orders": 3},
        "experiment": {"id": "hero-2026", "arm": "bandit"}, "propensity": 0.712,
        "policy": "thompson-v1", "context": "homepage_hero:active",
        "candidates": ["running_shoes_10pct", "hot_intent_bundle", "x"],
        "expires_at": "2026-03-01T11:01:00.000Z", "latency_ms": 31,
    }
    record.update(changes)
    return record


def test_a_decision_is_one_short_line_with_what_matters() -> None:
    line = format_decision(decision())
    assert "\n" not in line and len(line) <= 150, line
    assert line.split() == ["10:01:00", "cust-42", "homepage_hero", "running_shoes_10pct",
                            "thompson-v1/bandit", "p=0.71", "posterior", "0.625", "over", "14",
                            "outcomes,", "1", "of", "3", "actions"]


def test_a_message_shows_its_channel_and_a_decision_outside_experiments_its_policy() -> None:
    line = format_decision(decision(slot=None, channel="email", experiment=None,
                                    policy="cascade", propensity=1.0,
                                    reasons=["cascade step sms after 24 h"]))
    assert line.split()[2:6] == ["email", "running_shoes_10pct", "cascade", "p=1.00"]


def test_why_lists_every_reason_under_the_line() -> None:
    lines = format_decision(decision(), why=True).splitlines()
    assert lines[0] == format_decision(decision())
    assert [x.strip() for x in lines[1:]] == decision()["reasons"]
    assert all(x.startswith("    ") for x in lines[1:])


def test_long_reasons_are_cut_and_the_neutral_one_says_no_more_than_needed() -> None:
    assert short_reason("a" * 200).endswith("…") and len(short_reason("a" * 200)) == 60
    assert short_reason(BANDIT_REASON) == "posterior 0.625 over 14 outcomes, 1 of 3 actions"
    assert short_reason("no eligible action for product_recs: neutral popular_products") == \
        "no eligible action"


def test_odd_records_do_not_break_the_line() -> None:
    assert format_decision({}).split()[:2] == ["?", "?"]
    assert format_record("decisions", b"k", None) == "tombstone for b'k'"
    assert format_record("decisions", b"k", b"[1]") == "[1]"
    assert format_record("decisions", b"k", orjson.dumps(decision()), why=True).count("\n") == 4
