from __future__ import annotations

import base64
import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamproc.errors import DecodeError
from streamproc.events.codec import Decoder, RawMessage, deadletter_record
from streamproc.settings import Settings

from .helpers import SETTINGS, Partition, event

DECODER = Decoder(SETTINGS)


def reason_of(msg: RawMessage) -> str:
    with pytest.raises(DecodeError) as info:
        DECODER.decode(msg)
    assert info.value.message  # every failure says why, for a person
    return info.value.reason


def test_valid_event_decodes_with_event_time():
    msg = Partition().message(event("search", customer="cust-9", query="red boots"))
    ev = DECODER.decode(msg)
    assert (ev.type, ev.customer_id, ev.data["query"]) == ("search", "cust-9", "red boots")
    assert ev.ts_ms == 1772359200000  # 2026-03-01T10:00:00Z


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "invalid_json"),
        (b"\xff\xfe\x00", "invalid_json"),
        (b"[1, 2]", "schema_violation"),
        (orjson.dumps({"type": "teleport", "customer_id": "c1"}), "unknown_type"),
        (orjson.dumps({"customer_id": "c1"}), "unknown_type"),
        (orjson.dumps({"type": {"nested": 1}}), "unknown_type"),
        (orjson.dumps({**event("search"), "query": 5}), "schema_violation"),
        (orjson.dumps({**event("search"), "surprise": True}), "schema_violation"),
        (orjson.dumps({**event("search"), "ts": "2026-03-01T10:00:00"}), "schema_violation"),
        (orjson.dumps({**event("search"), "ts": "2026-13-01T10:00:00Z"}), "schema_violation"),
        (orjson.dumps({**event("search"), "customer_id": "a{b}"}), "schema_violation"),
        (orjson.dumps({**event("search"), "customer_id": "x" * 129}), "schema_violation"),
    ],
)
def test_bad_input_is_rejected_with_its_reason(value, reason):
    assert reason_of(RawMessage(SETTINGS.topics.browsing, 0, 0, b"c1", value)) == reason


def test_oversized_message_is_rejected_before_parsing():
    decoder = Decoder(Settings(max_event_bytes=1024))
    body = event("search", query="x" * 500)
    body["context"] = {"user_agent": "y" * 512}
    with pytest.raises(DecodeError) as info:
        decoder.decode(Partition().message(body))
    assert info.value.reason == "too_large" and "1024" in info.value.message


def test_event_on_the_wrong_topic_is_rejected():
    msg = Partition().message(event("purchase"), topic=SETTINGS.topics.browsing)
    assert reason_of(msg) == "wrong_topic"


@pytest.mark.parametrize("key", [None, b"someone-else"])
def test_key_must_be_the_customer(key):
    body = event("search", customer="c1")
    msg = RawMessage(SETTINGS.topics.browsing, 0, 0, key, orjson.dumps(body))
    assert reason_of(msg) == "key_mismatch"


def test_tombstone_is_rejected():
    assert reason_of(RawMessage(SETTINGS.topics.browsing, 0, 0, b"c1", None)) == "empty_message"


def test_deadletter_record_keeps_source_and_original_bytes():
    raw = b"\x00\xffbinary"
    msg = RawMessage("streamproc.browsing", 3, 41, b"c1", raw, 1000)
    record = orjson.loads(deadletter_record(msg, "invalid_json", "boom", 2000))
    assert record["source"] == {"topic": "streamproc.browsing", "partition": 3, "offset": 41,
                                "timestamp_ms": 1000}
    assert (record["reason"], record["error"]) == ("invalid_json", "boom")
    assert record["value"]["encoding"] == "base64"
    assert base64.b64decode(record["value"]["data"]) == raw
    assert record["key"] == {"encoding": "utf-8", "data": "c1"}
    assert record["value_size"] == len(raw) and not record["value_truncated"]


def test_deadletter_record_of_a_huge_message_is_truncated_but_identified():
    raw = b"a" * 100_000
    record = orjson.loads(deadletter_record(
        RawMessage("t", 0, 0, None, raw), "too_large", "big", 0))
    assert record["value_truncated"] and record["value_size"] == 100_000
    assert len(record["value"]["data"]) < 20_000 and len(record["value_sha256"]) == 64


# Anything at all may arrive on a topic: bytes, JSON of the wrong shape, valid events with one
# field replaced by hostile values. Decoding either returns an event or raises DecodeError.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
hostile_text = st.sampled_from(
    ["", " ", "\x00", "{", "}", "*", "../../etc/passwd", "'; DROP TABLE x; --", "\u202e",
     "a" * 5000, "é", "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace")]
) | st.text()


def _dumps(value: object) -> bytes:
    # The stdlib encoder, not orjson: it writes integers of any size, which a producer may send.
    return json.dumps(value).encode()


def _mutated(draw_type: str, field: str, value: object) -> bytes:
    body = event(draw_type)
    body[field] = value
    return _dumps(body)


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        json_values.map(_dumps),
        st.builds(
            _mutated,
            st.sampled_from(["page_view", "search", "purchase", "cart_add", "consent_update"]),
            st.sampled_from(["customer_id", "event_id", "ts", "type", "lines", "product",
                             "quantity", "amount", "attributes", "context", "purpose"]),
            json_values | hostile_text,
        ),
    ),
    key=st.none() | st.binary(max_size=20),
    topic=st.sampled_from(list(SETTINGS.topics.inputs) + ["elsewhere"]),
)
def test_no_exception_but_decode_error_escapes(payload, key, topic):
    msg = RawMessage(topic, 0, 0, key, payload)
    try:
        ev = DECODER.decode(msg)
    except DecodeError as exc:
        assert exc.reason in {"invalid_json", "schema_violation", "too_large", "unknown_type",
                              "wrong_topic", "key_mismatch", "empty_message"}
        record = orjson.loads(deadletter_record(msg, exc.reason, exc.message, 0))
        assert record["value_size"] == len(payload)
    else:
        assert ev.customer_id.encode() == key


def message_of(body: dict) -> str:
    with pytest.raises(DecodeError) as info:
        DECODER.decode(RawMessage(SETTINGS.topics.browsing, 0, 0, b"c1", orjson.dumps(body)))
    assert info.value.reason == "schema_violation"
    return info.value.message


@pytest.mark.parametrize(("change", "expected"), [
    ({"ts": "2026-03-01T10:00:00"},
     "search: `ts` needs a time zone, e.g. `2026-03-01T10:00:00Z`; got '2026-03-01T10:00:00'"),
    ({"ts": "2026-03-01T10:00:00.123"}, "search: `ts` needs a time zone"),
    ({"ts": "2026-03-01 10:00:00+0100"}, "with a T and a zone (Z or +hh:mm)"),
    ({"ts": "yesterday"}, "`ts` needs an ISO 8601 date-time"),
    ({"ts": "2026-13-01T10:00:00Z"}, "search: `ts` '2026-13-01T10:00:00Z' is not a real "
                                     "date-time"),
    ({"customer_id": "a b"}, "`customer_id` must be 1 to 128 letters, digits or . _ : @ -"),
    ({"customer_id": "x" * 129}, "`customer_id` must be 1 to 128 letters"),
    ({"channel": "phone"}, "`channel` must be one of web, app, store, crm, email, sms, "
                           "call_centre; got 'phone'"),
    ({"query": 5}, "`query` must be a string; got a number (5)"),
    ({"surprise": True}, "unknown field `surprise`; expected "),
    ({"context": {"device": "fridge"}}, "`context.device` must be one of desktop"),
])
def test_schema_violations_say_what_the_field_needs(change, expected):
    message = message_of({**event("search", customer="c1"), **change})
    assert expected in message
    assert "must be longer than or equal to" not in message and "data." not in message


def test_a_missing_field_is_named():
    body = event("search", customer="c1")
    del body["query"]
    assert message_of(body) == "search: missing `query`"
