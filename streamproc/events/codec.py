"""Turn raw Kafka messages into validated events, and failures into dead-letter records.

Decoding never raises anything but :class:`DecodeError`: whatever bytes arrive, the caller gets
either an :class:`Event` or a reason to dead-letter the message.

>>> from streamproc.settings import Settings
>>> decoder = Decoder(Settings())
>>> raw = b'{"event_id":"e1","type":"search","customer_id":"c1",' \\
...       b'"ts":"2026-01-02T03:04:05Z","query":"red shoes"}'
>>> event = decoder.decode(RawMessage("streamproc.browsing", 0, 7, b"c1", raw))
>>> event.type, event.ts_ms
('search', 1767323045000)
>>> try:
...     decoder.decode(RawMessage("streamproc.browsing", 0, 8, b"c1", b"{oops"))
... except DecodeError as exc:
...     print(exc.reason)
invalid_json
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import fastjsonschema
import orjson

from streamproc.errors import DecodeError
from streamproc.events.schemas import EventSchema, load_event_schemas
from streamproc.events.violations import TS_EXAMPLE, explain_violation
from streamproc.settings import Settings
from streamproc.state.keys import CUSTOMER_ID

# How much of an oversized message is kept in its dead-letter record: the record must itself fit
# in a Kafka message, so the full original cannot always travel; its size and sha256 do.
DEADLETTER_PREVIEW_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One consumed Kafka message, as the worker saw it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None

    @property
    def source(self) -> str:
        return f"{self.topic}:{self.partition}"


@dataclass(slots=True)
class Event:
    """A decoded, schema-valid input event with where it came from."""

    type: str
    customer_id: str
    event_id: str
    ts_ms: int
    data: dict[str, Any]
    message: RawMessage = field(repr=False)


def parse_ts(ts: str) -> int:
    """ISO-8601 with a zone to epoch milliseconds (raises ValueError)."""
    return int(datetime.fromisoformat(ts).timestamp() * 1000)


class Decoder:
    def __init__(self, settings: Settings, schemas: dict[str, EventSchema] | None = None) -> None:
        self.max_bytes = settings.max_event_bytes
        self.max_future_skew_ms = settings.max_future_skew_s * 1000
        self.schemas = schemas if schemas is not None else load_event_schemas()
        topics = settings.topics
        self.logical_topic = {
            topics.browsing: "browsing",
            topics.purchases: "purchases",
            topics.profiles: "profiles",
            topics.feedback: "feedback",
        }

    def decode(self, msg: RawMessage) -> Event:
        """The event of ``msg``, or DecodeError with the reason (and the customer's id when
        the message names a valid one, for the dead letter's key)."""
        named: list[Any] = []
        try:
            return self._decode(msg, named)
        except DecodeError as exc:
            if named and isinstance(named[0], str) and CUSTOMER_ID.fullmatch(named[0]):
                exc.customer_id = named[0]
            raise

    def _decode(self, msg: RawMessage, named: list[Any]) -> Event:
        value = msg.value
        if value is None:
            raise DecodeError("empty_message", "message has no value (tombstones are not events)")
        if len(value) > self.max_bytes:
            raise DecodeError(
                "too_large",
                f"message is {len(value)} bytes, over the limit of {self.max_bytes} "
                "(STREAMPROC_MAX_EVENT_BYTES)",
            )
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise DecodeError("invalid_json", f"not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise DecodeError("schema_violation", "an event must be a JSON object")
        named.append(data.get("customer_id"))  # checked by decode
        type_name = data.get("type")
        schema = self.schemas.get(type_name) if isinstance(type_name, str) else None
        if schema is None:
            raise DecodeError(
                "unknown_type",
                f"unknown event type {str(type_name)[:64]!r}; "
                f"known: {', '.join(sorted(self.schemas))}",
            )
        expected = self.logical_topic.get(msg.topic)
        if schema.topic != expected:
            raise DecodeError(
                "wrong_topic",
                f"a {schema.type} event belongs on the {schema.topic} topic, not {msg.topic}",
            )
        try:
            schema.validate(data)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise DecodeError("schema_violation",
                              f"{schema.type}: {explain_violation(exc)}"[:500]) from None
        except fastjsonschema.JsonSchemaException as exc:
            raise DecodeError("schema_violation", f"{schema.type}: {exc}"[:500]) from None
        try:
            ts_ms = parse_ts(data["ts"])
        except (ValueError, OverflowError) as exc:
            raise DecodeError("schema_violation",
                              f"{schema.type}: `ts` {data['ts']!r} is not a real date-time "
                              f"({exc}); e.g. `{TS_EXAMPLE}`") from None
        future = future_by_ms(ts_ms, msg.timestamp_ms, self.max_future_skew_ms)
        if future:
            raise DecodeError(
                "future_timestamp",
                f"{schema.type}: `ts` {data['ts']!r} is {future / 1000:,.0f} s after the Kafka "
                f"record's timestamp ({iso(msg.timestamp_ms)}), over the "
                f"{self.max_future_skew_ms // 1000} s allowed (STREAMPROC_MAX_FUTURE_SKEW_S): "
                "send the time the event happened, in UTC or with its zone, from a clock "
                "that is set right",
            )
        customer_id = data["customer_id"]
        if msg.key != customer_id.encode():
            shown = "none" if msg.key is None else repr(msg.key[:140])
            raise DecodeError(
                "key_mismatch",
                f"the message key must equal customer_id {customer_id!r}, got {shown}: "
                "key every message by customer so a customer's events stay in order",
            )
        return Event(schema.type, customer_id, data["event_id"], ts_ms, data, msg)


def future_by_ms(ts_ms: int, record_ts_ms: int | None, max_skew_ms: int) -> int:
    """How far an event time is ahead of its record's timestamp beyond the skew allowed (0:
    not too far). Event time drives shared watermarks (timers, labels): one event dated in
    2099 would move them for every customer of its partition. Kafka sets every record's
    timestamp (the producer's clock, bounded by the broker, or the broker's); without one
    (-1, None) nothing is checked, nor with ``max_skew_ms`` 0 (no bound).

    >>> future_by_ms(1_000_000, 900_000, 300_000), future_by_ms(1_500_000, 900_000, 300_000)
    (0, 300000)
    >>> future_by_ms(4_102_444_800_000, None, 300_000)
    0
    """
    if record_ts_ms is None or record_ts_ms <= 0 or max_skew_ms <= 0:
        return 0
    return max(0, ts_ms - record_ts_ms - max_skew_ms)


def iso(ts_ms: int | None) -> str:
    """Epoch milliseconds as ISO-8601 UTC, for messages."""
    if ts_ms is None:
        return "none"
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def encode(record: Any) -> bytes:
    return bytes(orjson.dumps(record))


def _bytes_field(raw: bytes | None) -> dict[str, Any] | None:
    """Text when the bytes are UTF-8, base64 otherwise, so the original is always recoverable."""
    if raw is None:
        return None
    try:
        return {"encoding": "utf-8", "data": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"encoding": "base64", "data": base64.b64encode(raw).decode("ascii")}


def deadletter_key(msg: RawMessage, customer_id: str | None = None) -> bytes:
    """The key of ``msg``'s dead letter: the customer it is about when known (the event's
    ``customer_id``, else a message key that is a valid customer id), so that an erasure's
    tombstone on the compacted dead-letter topic reaches it; else a key of its own made of
    where it was read (``~`` is in no customer id), which compaction never merges with another.

    >>> m = RawMessage("streamproc.browsing", 3, 17, b"cust-42", b"{")
    >>> deadletter_key(m), deadletter_key(m, "cust-7")
    (b'cust-42', b'cust-7')
    >>> deadletter_key(RawMessage("streamproc.browsing", 3, 17, b"not a customer", b"{"))
    b'~streamproc.browsing:3:17'
    """
    if customer_id is not None and CUSTOMER_ID.fullmatch(customer_id):
        return customer_id.encode()
    key = msg.key
    if key is not None and CUSTOMER_ID.fullmatch(key.decode("utf-8", "replace")):
        return key
    return f"~{msg.topic}:{msg.partition}:{msg.offset}".encode()


def deadletter_record(msg: RawMessage, reason: str, error: str, failed_at_ms: int) -> bytes:
    """The dead-letter record of a message: its error, where it came from and its bytes."""
    value = msg.value
    truncated = value is not None and len(value) > DEADLETTER_PREVIEW_BYTES
    record = {
        "reason": reason,
        "error": error,
        "source": {
            "topic": msg.topic,
            "partition": msg.partition,
            "offset": msg.offset,
            "timestamp_ms": msg.timestamp_ms,
        },
        "failed_at_ms": failed_at_ms,
        "key": _bytes_field(msg.key),
        "value": _bytes_field(value[:DEADLETTER_PREVIEW_BYTES] if truncated and value else value),
        "value_size": None if value is None else len(value),
        "value_sha256": None if value is None else hashlib.sha256(value).hexdigest(),
        "value_truncated": truncated,
    }
    return bytes(orjson.dumps(record))
