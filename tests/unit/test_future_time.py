"""Bounded event time: an event dated well after its Kafka record is dead-lettered
(``future_timestamp``), and neither the timers' nor the learner's watermark moves on it."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from streamproc.decisions.record import iso_ms
from streamproc.errors import DecodeError
from streamproc.events.codec import Decoder, RawMessage
from streamproc.learning.learner import Learner
from streamproc.learning.observations import score_record
from streamproc.processor import Processor, default_engine
from streamproc.state.memory import MemoryStore

from .helpers import SETTINGS, event

SETTINGS_0 = dataclasses.replace(SETTINGS, timer_lateness_seconds=0)
MIN, HOUR = 60_000, 3_600_000
T0 = 1_772_366_400_000  # 2026-03-01T12:00:00Z
Y2099 = 4_102_444_800_000  # 2100-01-01T00:00:00Z, the last instant of 2099 and a bit
Y9999 = 253_402_300_799_000  # 9999-12-31T23:59:59Z


class Log:
    """One browsing partition whose records are stamped by the producer's clock ``now``."""

    def __init__(self) -> None:
        self.offset = 0

    def message(self, body: dict[str, Any], now_ms: int, topic: str | None = None) -> RawMessage:
        self.offset += 1
        topic = topic or (SETTINGS.topics.profiles if body["type"] == "consent_update"
                          else SETTINGS.topics.browsing)
        return RawMessage(topic, 0, self.offset, body["customer_id"].encode(),
                          orjson.dumps(body), now_ms)


def at(type_: str, ts_ms: int, customer: str, **fields: Any) -> dict[str, Any]:
    return event(type_, customer=customer, ts=iso_ms(ts_ms), **fields)


@pytest.mark.parametrize("future", [Y2099, Y9999])
def test_an_event_dated_after_its_record_is_dead_lettered_with_what_to_fix(future: int) -> None:
    msg = Log().message(at("page_view", future, "c1"), T0)
    with pytest.raises(DecodeError) as info:
        Decoder(SETTINGS).decode(msg)
    assert info.value.reason == "future_timestamp"
    assert "STREAMPROC_MAX_FUTURE_SKEW_S" in info.value.message
    assert "2026-03-01T12:00:00.000Z" in info.value.message  # the record's time, to compare


def test_the_skew_allowed_is_a_setting_and_the_edge_passes() -> None:
    decoder = Decoder(dataclasses.replace(SETTINGS, max_future_skew_s=60))
    log = Log()
    assert decoder.decode(log.message(at("page_view", T0 + MIN, "c1"), T0)).ts_ms == T0 + MIN
    with pytest.raises(DecodeError):
        decoder.decode(log.message(at("page_view", T0 + MIN + 1000, "c1"), T0))
    # Late events (a replay, a backlog) are fine: only the future is bounded.
    assert decoder.decode(log.message(at("page_view", T0 - 30 * HOUR, "c1"), T0)).ts_ms


@pytest.mark.parametrize("future", [Y2099, Y9999])
async def test_a_future_page_view_fires_nobody_s_timer_early(future: int) -> None:
    store = MemoryStore()
    proc = Processor(SETTINGS_0, store, clock_ms=lambda: T0, engine=default_engine(SETTINGS_0))
    log = Log()
    consent = at("consent_update", T0 - MIN, "cart", purpose="email", granted=True)
    cart = at("cart_add", T0, "cart")
    first = await proc.process([log.message(consent, T0), log.message(cart, T0)])
    assert not first.deadletters
    # Two minutes after the cart, someone's clock says 2099 (or 9999).
    result = await proc.process([log.message(at("page_view", future, "wrong-clock"),
                                             T0 + 2 * MIN)])
    assert [orjson.loads(v)["reason"] for _, v in result.deadletters] == ["future_timestamp"]
    assert result.timers_fired == 0 and result.decisions == []
    assert await store.read_profile("wrong-clock") is None
    # The cart fires at its own time, an hour of real event time later, and not before.
    early = await proc.process([log.message(at("page_view", T0 + 30 * MIN, "t"), T0 + 30 * MIN)])
    assert early.timers_fired == 0
    late = await proc.process([log.message(at("page_view", T0 + 61 * MIN, "t"), T0 + 61 * MIN)])
    fired = [orjson.loads(v) for _, v in late.decisions]
    assert [(d["trigger"]["name"], d["ts"]) for d in fired
            if d["trigger"]["type"] == "timer"] == [("cart_abandoned", iso_ms(T0 + 60 * MIN))]


def test_the_learner_skips_an_observation_dated_after_its_record() -> None:
    learner = Learner(SETTINGS)
    trigger = {"topic": SETTINGS.topics.browsing, "partition": 0, "offset": 1}
    ok = orjson.dumps(score_record("c1", "e1", T0, {"x": 1.0}, 0.5, 1, trigger))
    bad = orjson.dumps(score_record("c2", "e2", Y9999, {"x": 1.0}, 0.5, 1,
                                    {**trigger, "offset": 2}))
    learner.apply(0, ok, T0 + 1000)
    watermark = learner.state.join.watermark
    learner.apply(1, bad, T0 + 2000)
    assert learner.state.join.watermark == watermark
    assert learner.stats()["future"] == 1 and learner.state.observations == 1
