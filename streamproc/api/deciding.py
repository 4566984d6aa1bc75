"""A decision for one slot, from a copy of the customer's profile, by the worker's own engine.

The API reads the profile the worker wrote, and asks the same
:class:`~streamproc.decisions.engine.Engine` (same catalogue file, same learning bandit from the
model snapshot) as if a ``slot_request`` event had just arrived. It never writes the profile:
the decision travels back as a ``decision_served`` event (:func:`served_event`) on the
customer's partition, and the worker that owns the customer records the exposure (history,
freshness, caps) once, keeps the decision as the latest for the slot and publishes it
(:meth:`~streamproc.decisions.engine.Engine.served`).

When no decision can be made from the profile (unknown customer, Redis down, deadline passed,
Kafka unable to take the exposure) the answer is the slot's neutral action with the reason
(:meth:`Decider.neutral`): never an error page.

Ids: a decide's triggering event id is ``api:<slot>:<request_id>`` (a random id without
``request_id``), so a retried decide (same ``request_id``) has the same decision id and the same
``decision_served`` event id, which the worker's duplicate window drops.

>>> from streamproc.settings import Settings
>>> from streamproc.processor import default_engine
>>> decider = Decider(default_engine(Settings()))
>>> req = decider.request({"customer_id": "c1", "slot": "homepage_hero", "request_id": "r1"},
...                       received_ms=1_772_359_200_000)
>>> req.event_id
'api:homepage_hero:r1'
>>> record = decider.neutral(req, "unknown customer: no profile yet", 1_772_359_200_004)
>>> record["action"]["id"], record["personalised"], record["latency_ms"]
('bestsellers_hero', False, 4)
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import fastjsonschema

from streamproc.api.intake import Problem
from streamproc.decisions import exposure
from streamproc.decisions.catalogue import NONE_ACTION, SLOT_REQUEST, Catalogue
from streamproc.decisions.engine import (
    CASCADE_POLICY,
    NEUTRAL_POLICY,
    REUSE_POLICY,
    SERVED,
    Engine,
)
from streamproc.decisions.record import Source, action_shown, decision_id, iso_ms
from streamproc.events.schemas import load_event_schemas
from streamproc.state.profile import Profile
from streamproc.state.regions import RegionContexts, region_surroundings

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,60}$")
API_TOPIC = "api"  # the trigger's place until the worker gives it the served event's
FALLBACK = "api_fallback"  # the trigger name of the neutral answers made without the engine


class DecideRequestError(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class DecideRequest:
    customer_id: str
    slot: str
    event_id: str
    received_ms: int
    data: dict[str, Any]  # the slot_request event the engine sees


@dataclass(frozen=True)
class Decided:
    record: dict[str, Any]
    event: dict[str, Any]  # the decision_served event to produce


class Decider:
    def __init__(self, engine: Engine,
                 model_versions: Callable[[], Mapping[str, str]] = dict,
                 regions: RegionContexts | None = None) -> None:
        self.engine = engine
        self.model_versions = model_versions
        # The regions' context, as the workers see it (the server refreshes it).
        self.regions = regions or RegionContexts(0)
        self.validate = load_event_schemas()["slot_request"].validate

    def request(self, params: Mapping[str, Any], received_ms: int) -> DecideRequest:
        """A decide request from query parameters or a JSON body, checked as a ``slot_request``
        event (the same schema), with the slot checked against the catalogue."""
        problems = []
        request_id = params.get("request_id")
        if request_id is not None and (not isinstance(request_id, str)
                                       or not REQUEST_ID.match(request_id)):
            problems.append(Problem(0, "request_id", "1 to 60 letters, digits or . _ : @ -"))
        unknown = sorted(set(params) - {"customer_id", "slot", "request_id", "page", "context",
                                        "channel"})
        if unknown:
            problems.append(Problem(0, unknown[0], f"unknown parameter(s): {', '.join(unknown)}"))
        slot = params.get("slot")
        cat = self.engine.current()
        if isinstance(slot, str) and REQUEST_ID.match(slot) and slot not in cat.slots:
            problems.append(Problem(0, "slot", f"unknown slot {slot!r}; the catalogue has: "
                                               f"{', '.join(cat.slots)}"))
        if problems:
            raise DecideRequestError(problems)
        event_id = f"api:{slot}:{request_id or uuid.uuid4().hex}"
        data: dict[str, Any] = {"event_id": event_id, "type": SLOT_REQUEST,
                                "customer_id": params.get("customer_id"),
                                "ts": iso_ms(received_ms), "slot": slot}
        for name in ("page", "context", "channel"):
            if params.get(name) is not None:
                data[name] = params[name]
        try:
            self.validate(data)
        except fastjsonschema.JsonSchemaValueException as exc:
            path = [str(p) for p in (exc.path or [])][1:]
            field = ".".join(path) or next(
                (f for f in ("customer_id", "slot") if f in str(exc.message)), "")
            raise DecideRequestError([Problem(0, field, str(exc.message).replace(
                "data.", "", 1)[:300])]) from None
        return DecideRequest(data["customer_id"], slot, event_id, received_ms, data)  # type: ignore[arg-type]

    def decision_id(self, req: DecideRequest) -> str:
        return decision_id(req.customer_id, req.event_id, self._trigger_id(self.engine.current()))

    @staticmethod
    def _trigger_id(cat: Catalogue) -> str:
        return next((t.id for t in cat.triggers if t.event == SLOT_REQUEST), FALLBACK)

    def _source(self, req: DecideRequest) -> Source:
        return Source(SLOT_REQUEST, req.event_id, req.customer_id, req.data["ts"],
                      req.received_ms, API_TOPIC, 0, 0, req.received_ms)

    def decide(self, req: DecideRequest, p: Profile, now_ms: int) -> Decided | None:
        """The engine's decision for the slot from ``p`` (changed: pass a copy you may lose),
        and the event that has the worker record it; None when the catalogue has no
        ``slot_request`` trigger that fires for this customer."""
        cat = self.engine.current()
        names = {t.id for t in cat.triggers if t.event == SLOT_REQUEST}
        with region_surroundings(p, self.regions.contexts):
            outcome = self.engine.decide(p, self._source(req), req.data, [], now_ms,
                                         self.model_versions())
        record = next((r for r in outcome.records
                       if r["slot"] == req.slot and r["trigger"]["name"] in names), None)
        if record is None:
            return None
        learning = any(le.decision_id == record["decision_id"] for le in outcome.lessons)
        return Decided(record, served_event(cat, record, learning))

    def neutral(self, req: DecideRequest, reason: str, now_ms: int) -> dict[str, Any]:
        """The slot's neutral action, with the reason no personalised decision was made."""
        cat = self.engine.current()
        slot = cat.slots[req.slot]
        action = cat.action(slot.neutral)
        return {
            "decision_id": decision_id(req.customer_id, req.event_id, FALLBACK),
            "customer_id": req.customer_id,
            "ts": req.data["ts"],
            "decided_at": iso_ms(now_ms),
            "trigger": {"type": SLOT_REQUEST, "name": FALLBACK, "event_id": req.event_id,
                        "topic": API_TOPIC, "partition": 0, "offset": 0},
            "slot": slot.id,
            "channel": slot.channel,
            "action": action_shown(action, dict(action.params)),
            "personalised": False,
            "reasons": [f"{slot.id} requested over HTTP", f"{reason}: neutral {slot.neutral}"],
            "segments": {},
            "scores": {},
            "experiment": None,
            "propensity": 1.0,
            "policy": NEUTRAL_POLICY,
            "context": None,
            "candidates": [],
            "expires_at": iso_ms(req.received_ms + slot.expires_ms),
            "model_versions": {"catalogue": cat.version},
            "latency_ms": max(0, now_ms - req.received_ms),
        }


def served_event(cat: Catalogue, record: Mapping[str, Any], learning: bool) -> dict[str, Any]:
    """The ``decision_served`` event of an engine decision: what the worker records, as the
    engine recorded it on the API's copy of the profile (``Engine._decide_one``)."""
    slot = cat.slots[record["slot"]]
    policy = record["policy"]
    picked = policy not in (NEUTRAL_POLICY, REUSE_POLICY, CASCADE_POLICY)
    experiment = record.get("experiment")
    return {
        "event_id": f"served-{record['decision_id']}",
        "type": SERVED,
        "customer_id": record["customer_id"],
        "ts": record["ts"],
        "exposure": {
            "action_id": record["action"]["id"],
            "slot": slot.id,
            "context": record.get("context") or "",
            "arm": experiment["arm"] if experiment else "",
            "propensity": record["propensity"],
            "flags": (exposure.LEARNING if learning else 0) if picked else None,
            "personalised": bool(record["personalised"]) and policy != REUSE_POLICY,
            "capped": (slot.is_message or slot.channel in cat.caps)
            and record["action"]["id"] != NONE_ACTION.id,
        },
        "decision": dict(record),
    }
