"""The OpenAPI 3.1 description of the HTTP API, served at ``/openapi.json``.

Written by hand (the routes are few); ``tests/unit/test_api_server.py`` checks that its paths and
methods are exactly the server's routes. Event bodies refer to the JSON Schemas under
``schemas/events/`` rather than copying them.
"""

from __future__ import annotations

from typing import Any

_ERROR = {"description": "what is wrong", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}
_KEY: list[dict[str, list[str]]] = [{"writeKey": []}]
_ADMIN: list[dict[str, list[str]]] = [{"adminToken": []}]
_CID = {"name": "customer_id", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:@-]{1,128}$"}}


def _events_op(summary: str, what: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": _KEY,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "oneOf": [{"$ref": "#/components/schemas/Event"},
                      {"type": "array", "minItems": 1, "maxItems": 500,
                       "items": {"$ref": "#/components/schemas/Event"}}]}}}},
        "responses": {
            "202": {"description": f"every {what} is in Kafka", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}},
            "400": {"description": "some events are invalid (rejected, located); the others "
                                   "are in Kafka (accepted)", "content": {"application/json": {
                                       "schema": {"$ref": "#/components/schemas/Accepted"}}}},
            "401": _ERROR, "403": _ERROR, "413": _ERROR, "429": _ERROR,
            "503": {"description": "Kafka did not confirm some events (failed): send them again",
                    "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/Accepted"}}}},
        },
    }


_DECIDE_PARAMS = [
    {"name": "customer_id", "in": "query", "required": True, "schema": {"type": "string"}},
    {"name": "slot", "in": "query", "required": True, "schema": {"type": "string"},
     "description": "a slot of the decision catalogue, e.g. homepage_hero"},
    {"name": "request_id", "in": "query", "required": False, "schema": {
        "type": "string", "pattern": "^[A-Za-z0-9._:@-]{1,60}$"},
     "description": "the same id on a retry gives the same decision id, recorded once"},
    {"name": "channel", "in": "query", "required": False, "schema": {"type": "string"}},
]
_DECISION = {"200": {"description": "a decision (the slot's neutral action with the reason when "
                                    "none could be made from the profile)",
                     "content": {"application/json": {"schema": {
                         "$ref": "#/components/schemas/Decide"}}}},
             "400": _ERROR, "401": _ERROR, "403": _ERROR, "429": _ERROR}

_READ: list[dict[str, list[str]]] = [{"readToken": []}, {"adminToken": []}]
_DAYS = {"name": "days", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 366, "default": 7},
         "description": "the latest N days that have counters"}
_BY = {"name": "by", "in": "query", "required": False, "schema": {"type": "string",
                                                                   "default": "all"},
       "description": "one segmentation: rfm, lifecycle, value_tier, journey, cluster ..."}


def _read_op(summary: str, answer: str, parameters: list[dict[str, Any]] | None = None
             ) -> dict[str, Any]:
    """A dashboard data endpoint: a read token (or the admin token) when one is configured,
    open on a loopback address otherwise (docs/api.md, "The dashboard")."""
    return {"get": {"summary": summary, "security": _READ, "parameters": parameters or [],
                    "responses": {"200": {"description": answer}, "400": _ERROR,
                                  "401": _ERROR, "403": _ERROR, "503": _ERROR}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "streamproc HTTP API", "version": "1",
             "description": "Events in, a decision in milliseconds out. See docs/api.md."},
    "paths": {
        "/v1/events": {"post": _events_op("Send one event or an array of up to 500", "event")},
        "/v1/feedback": {"post": _events_op("Send feedback on decisions (impression, open, "
                                            "click, conversion ...)", "feedback event")},
        "/v1/decide": {
            "get": {"summary": "A decision for one slot", "security": _KEY,
                    "parameters": _DECIDE_PARAMS, "responses": _DECISION},
            "post": {"summary": "A decision for one slot, with the page and device context",
                     "security": _KEY,
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/DecideRequest"}}}},
                     "responses": _DECISION},
        },
        "/v1/decisions/{customer_id}": {"get": {
            "summary": "The customer's latest unexpired decision per slot", "security": _KEY,
            "parameters": [_CID],
            "responses": {"200": {"description": "by slot"}, "400": _ERROR, "401": _ERROR,
                          "403": _ERROR, "503": _ERROR}}},
        "/v1/customers/{customer_id}": {
            "get": {"summary": "Everything stored about the customer (right of access); "
                               "?human=true gives times and days as ISO 8601 UTC, and "
                               "attribute sources and compact lists spelled out",
                    "security": _ADMIN, "parameters": [_CID, {
                        "name": "human", "in": "query", "required": False,
                        "schema": {"type": "boolean", "default": False}}],
                    "responses": {"200": {"description": "the profile export"},
                                  "401": _ERROR, "403": _ERROR, "404": _ERROR, "503": _ERROR}},
            "delete": {"summary": "Erase the customer (right to erasure)",
                       "security": _ADMIN, "parameters": [_CID],
                       "responses": {"200": {"description": "erased; tombstones sent"},
                                     "401": _ERROR, "403": _ERROR, "503": _ERROR}},
        },
        "/livez": {"get": {"summary": "The process answers",
                           "responses": {"200": {"description": "live"}}}},
        "/readyz": {"get": {"summary": "Kafka producer connected and Redis answering",
                            "responses": {"200": {"description": "ready"},
                                          "503": {"description": "not ready, and why"}}}},
        "/metrics": {"get": {
            "summary": "The API's counters in Prometheus's text format: decides by exposure "
                       "state, pending exposures confirmed or failed", "security": _ADMIN,
            "responses": {"200": {"description": "Prometheus text format 0.0.4"},
                          "401": _ERROR, "403": _ERROR}}},
        "/openapi.json": {"get": {"summary": "This document",
                                  "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        "/v1/streamproc.js": {"get": {
            "summary": "The JavaScript snippet for web pages (docs/api.md)",
            "responses": {"200": {"description": "application/javascript"}}}},
        "/demo": {"get": {"summary": "Redirects to /demo/",
                          "responses": {"302": {"description": "to /demo/"}}}},
        "/demo/": {"get": {"summary": "The demo shop, which uses the snippet",
                           "responses": {"200": {"description": "text/html"}}}},
        "/demo/{name}": {"get": {
            "summary": "A page, style sheet or script of the demo shop",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the file"}, "404": _ERROR}}},
        "/v1/kpis": _read_op(
            "The KPI counters, as `streamproc kpis --json`",
            "per segment (of `by`), arm and action; per day and arm; per day and segment; NPS; "
            "retention; segment sizes and each day's moves", [_DAYS, _BY]),
        "/v1/kpis/experiments": _read_op(
            "Experiment results with uplift over control, as `streamproc report --json`",
            "rows per experiment, arm and segment with 95% intervals, or status 'not enough "
            "data yet' and the customers still needed; at most 30 s old",
            [{"name": "by", "in": "query", "required": False, "schema": {"type": "string"},
              "description": "a dotted path of the decision record, e.g. segments.rfm"},
             {"name": "experiment", "in": "query", "required": False,
              "schema": {"type": "string"}}]),
        "/v1/kpis/bandit": _read_op(
            "The learning bandit served: posterior mean and share of traffic per action",
            "per action and per context", [_DAYS]),
        "/v1/kpis/models": _read_op("The served models: intent AUC, drifts, snapshot version "
                                    "and age", "the figures of the workers' /metrics"),
        "/v1/kpis/pipeline": _read_op(
            "Workers, events/s, consumer lag (as `streamproc status --json`) and dead letters "
            "by reason", "the status and the dead letters counted by reason"),
        "/dashboard": {"get": {"summary": "Redirects to /dashboard/",
                               "responses": {"302": {"description": "to /dashboard/"}}}},
        "/dashboard/": {"get": {"summary": "The dashboard page (its data needs the read token)",
                                "responses": {"200": {"description": "text/html"}}}},
        "/dashboard/{name}": {"get": {
            "summary": "A script or style sheet of the dashboard (ECharts vendored)",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the file"}, "404": _ERROR}}},
    },
    "components": {
        "securitySchemes": {
            "writeKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "adminToken": {"type": "http", "scheme": "bearer"},
            "readToken": {"type": "http", "scheme": "bearer",
                          "description": "STREAMPROC_API_READ_TOKEN"},
        },
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"},
                "problems": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}},
            }},
            "Problem": {"type": "object", "properties": {
                "index": {"type": "integer"}, "event_id": {"type": ["string", "null"]},
                "field": {"type": "string"}, "message": {"type": "string"}}},
            "Event": {"type": "object", "description": "An event as in schemas/events/ "
                      "(<type>.schema.json); event_id and ts may be left out: the API fills "
                      "them in", "required": ["type", "customer_id"]},
            "Accepted": {"type": "object", "required": ["accepted", "received_at"],
                         "properties": {
                             "accepted": {"type": "array", "items": {"type": "string"},
                                          "description": "ids of the events now in Kafka"},
                             "received_at": {"type": "string"},
                             "adjusted": {"type": "array", "items": {"type": "object"},
                                          "description": "events whose ts the API replaced"},
                             "rejected": {"type": "array", "items": {
                                 "$ref": "#/components/schemas/Problem"}},
                             "failed": {"type": "array", "items": {"type": "object"}},
                             "error": {"type": "string"}}},
            "DecideRequest": {"type": "object", "required": ["customer_id", "slot"],
                              "properties": {
                                  "customer_id": {"type": "string"}, "slot": {"type": "string"},
                                  "request_id": {"type": "string"},
                                  "channel": {"type": "string"},
                                  "page": {"type": "object", "description": "as in "
                                           "slot_request.schema.json"},
                                  "context": {"type": "object", "description": "session_id, "
                                              "device, locale ... as in common.schema.json"}}},
            "Decide": {"type": "object", "required": ["decision", "exposure"], "properties": {
                "decision": {"type": "object",
                             "description": "a decision record (schemas/decision.schema.json)"},
                "exposure": {"type": "string",
                             "enum": ["recorded", "pending", "already", "none"],
                             "description": "recorded: Kafka has the decision_served event; "
                                            "pending: sent, not yet confirmed when the answer "
                                            "went (STREAMPROC_API_EXPOSURE_WAIT_MS); "
                                            "already: a retry of a recorded decide; none: a "
                                            "neutral fallback, nothing to record"}}},
        },
    },
}
