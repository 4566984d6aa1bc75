"""Events received over HTTP: parsed, completed, checked against the topics' own schemas.

A body is one event (a JSON object) or a JSON array of up to :data:`MAX_BATCH` of them. Each
event is checked exactly as a worker will check it: the same compiled JSON Schema
(:mod:`streamproc.events.schemas`), then the worker's own decoder
(:class:`~streamproc.events.codec.Decoder`: size, type, topic, date, key), so nothing the API
accepts is dead-lettered by a worker for being malformed. What is wrong is located: the index
of the event in the batch and the field (``product.price``), with the schema's message.

Before checking, an event is completed: a missing ``event_id`` gets one (``api-<uuid>``), and
``ts`` is settled against the API's receive time (:mod:`.clock`). Three types are refused here:
``decision_served`` (the API's own record of a served decision), ``erase`` (erasure is an
admin endpoint: ``DELETE /v1/customers/{id}``) and ``profile_merge`` (the workers' own, after an
``identify``: docs/identity.md).

>>> from streamproc.settings import Settings
>>> intake = Intake(Settings())
>>> good = {"event_id": "e1", "type": "search", "customer_id": "c1",
...         "ts": "2026-03-01T10:00:00Z", "query": "boots"}
>>> bad = {"type": "search", "customer_id": "c1", "ts": "2026-03-01T10:00:00Z", "query": 7}
>>> checked = intake.check([good, bad], received_ms=1_772_359_200_000)
>>> [c.event_id for c in checked.valid], [(p.index, p.field) for p in checked.problems]
(['e1'], [(1, 'query')])
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import fastjsonschema
import orjson

from streamproc.api.clock import settle_ts
from streamproc.decisions.engine import SERVED
from streamproc.errors import DecodeError
from streamproc.events.codec import Decoder, RawMessage
from streamproc.events.schemas import EventSchema, load_event_schemas
from streamproc.settings import Settings

MAX_BATCH = 500
# Types a client may not send to POST /v1/events, and why.
REFUSED = {
    SERVED: "decision_served is written by the API itself when it serves a decision",
    "erase": "erasure needs the admin token: DELETE /v1/customers/{id}",
    "profile_merge": "profile_merge is written by the workers when an identify event merges a "
                     "profile; send identify",
}


class BatchTooLargeError(ValueError):
    """More events than :data:`MAX_BATCH` in one request."""


@dataclass(frozen=True)
class Problem:
    index: int
    field: str  # dotted path in the event ("" for the event itself)
    message: str
    event_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "event_id": self.event_id, "field": self.field,
                "message": self.message}


@dataclass(frozen=True)
class Checked:
    """A valid event ready to produce: where it goes and its bytes."""

    index: int
    event_id: str
    customer_id: str
    topic: str
    value: bytes
    note: str | None = None  # what the API changed (its ts)


@dataclass
class Batch:
    valid: list[Checked] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def rejected(self) -> list[int]:
        return sorted({p.index for p in self.problems})


def parse_body(body: bytes) -> list[Any]:
    """The events of a request body (raises ValueError with a reason, BatchTooLargeError)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the body is not valid JSON: {exc}") from None
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, list):
        raise ValueError("send one event (a JSON object) or a JSON array of events")
    if not data:
        raise ValueError("the array holds no event")
    if len(data) > MAX_BATCH:
        raise BatchTooLargeError(f"{len(data)} events in one request; at most {MAX_BATCH}")
    return data


def _field(exc: fastjsonschema.JsonSchemaValueException) -> str:
    path = [str(p) for p in (exc.path or [])]
    return ".".join(path[1:]) if path and path[0] == "data" else ".".join(path)


class Intake:
    def __init__(self, settings: Settings, schemas: dict[str, EventSchema] | None = None,
                 refused: dict[str, str] | None = None) -> None:
        self.schemas = schemas if schemas is not None else load_event_schemas()
        self.decoder = Decoder(settings, self.schemas)
        self.topics = {"browsing": settings.topics.browsing,
                       "purchases": settings.topics.purchases,
                       "profiles": settings.topics.profiles,
                       "feedback": settings.topics.feedback}
        self.tolerance_ms = settings.api_clock_tolerance_s * 1000
        self.refused = REFUSED if refused is None else refused

    def check(self, items: Sequence[Any], received_ms: int,
              only_type: str | None = None) -> Batch:
        """Every item checked; ``only_type``: the one type this endpoint takes (filled in
        when absent)."""
        batch = Batch()
        for index, item in enumerate(items):
            found = self._check_one(index, item, received_ms, only_type)
            if isinstance(found, Checked):
                batch.valid.append(found)
            else:
                batch.problems.extend(found)
        return batch

    def _check_one(self, index: int, item: Any, received_ms: int,
                   only_type: str | None) -> Checked | list[Problem]:
        if not isinstance(item, dict):
            return [Problem(index, "", "an event must be a JSON object")]
        event = dict(item)
        raw_id = event.get("event_id")
        event_id = raw_id if isinstance(raw_id, str) else None
        type_name = event.get("type")
        if only_type is not None:
            if type_name is None:
                event["type"] = type_name = only_type
            elif type_name != only_type:
                return [Problem(index, "type", f"this endpoint takes {only_type} events only",
                                event_id)]
        if not isinstance(type_name, str) or type_name not in self.schemas:
            known = ", ".join(t for t in sorted(self.schemas) if t not in self.refused)
            return [Problem(index, "type", f"unknown event type {str(type_name)[:64]!r}; "
                                           f"known: {known}", event_id)]
        if type_name in self.refused:
            return [Problem(index, "type", self.refused[type_name], event_id)]
        if "event_id" not in event:
            event["event_id"] = event_id = f"api-{uuid.uuid4().hex}"
        event["ts"], note = settle_ts(event.get("ts"), received_ms, self.tolerance_ms)
        schema = self.schemas[type_name]
        try:
            schema.validate(event)
        except fastjsonschema.JsonSchemaValueException as exc:
            return [Problem(index, _field(exc), str(exc.message).replace("data.", "", 1)[:300],
                            event_id)]
        # The worker's own decoder: what it would dead-letter is refused here.
        value = orjson.dumps(event)
        customer_id = event["customer_id"]
        topic = self.topics[schema.topic]
        try:
            self.decoder.decode(RawMessage(topic, 0, 0, customer_id.encode(), value))
        except DecodeError as exc:
            where = "ts" if "ts " in exc.message else ""
            return [Problem(index, where, f"{exc.reason}: {exc.message}"[:300], event_id)]
        return Checked(index, event["event_id"], customer_id, topic, value, note)
