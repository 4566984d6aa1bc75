"""Say what a field needs when an event breaks its schema: the dead-letter reason's text.

fastjsonschema reports the first rule broken in its own words (``data.ts must be longer than or
equal to 20 characters``), which tells a producer what failed, not what to send. Here each rule
becomes the field's name, what it needs (with an example where a format is involved) and what
was sent.

>>> import fastjsonschema
>>> from streamproc.events.schemas import load_event_schemas
>>> validate = load_event_schemas()["search"].validate
>>> try:
...     validate({"event_id": "e1", "type": "search", "customer_id": "c1",
...               "ts": "2026-03-01T10:00:00", "query": "shoes"})
... except fastjsonschema.JsonSchemaValueException as exc:
...     print(explain_violation(exc))
`ts` needs a time zone, e.g. `2026-03-01T10:00:00Z`; got '2026-03-01T10:00:00'
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import fastjsonschema

TS_EXAMPLE = "2026-03-01T10:00:00Z"
# What a value matching each pattern of the event schemas looks like, for people.
_PATTERNS = {
    "^[A-Za-z0-9._:@-]{1,128}$": "1 to 128 letters, digits or . _ : @ - (no spaces)",
    "^[A-Za-z0-9._:@-]{1,64}$": "1 to 64 letters, digits or . _ : @ - (no spaces)",
    "^[A-Z]{2}$": "a two-letter ISO 3166 country code in capitals, e.g. GB",
    "^[A-Z]{3}$": "a three-letter ISO 4217 currency code in capitals, e.g. EUR",
    "^[A-Za-z0-9_+/-]{1,64}$": "an IANA time zone name, e.g. Europe/London",
    "^[a-z][a-z0-9_]{0,63}$": "a lower-case name of letters, digits and _ starting with a "
                              "letter, e.g. homepage_hero",
}
_TYPES = {"string": "a string", "number": "a number", "integer": "a whole number",
          "boolean": "true or false", "object": "an object", "array": "a list", "null": "null"}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _is_time(definition: dict[str, Any]) -> bool:
    return str(definition.get("pattern", "")).startswith("^[0-9]{4}-[0-9]{2}-[0-9]{2}T")


def _time_needs(field: str, value: Any) -> str:
    """What a date-time field needs, judged from what was sent."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is None:
            return f"`{field}` needs a time zone, e.g. `{TS_EXAMPLE}`; got {_short(value)}"
    return (f"`{field}` needs an ISO 8601 date-time with a T and a zone (Z or +hh:mm), at most "
            f"microseconds, e.g. `{TS_EXAMPLE}` or `2026-03-01T11:00:00+01:00`; "
            f"got {_short(value)}")


def explain_violation(exc: fastjsonschema.JsonSchemaValueException) -> str:
    """One line: the field, what it needs, what was sent."""
    name = exc.name or "data"
    field = name.removeprefix("data").lstrip(".") or "the event"
    value, rule = exc.value, exc.rule
    definition: dict[str, Any] = exc.definition or {}
    subject = f"`{field}`" if field != "the event" else field
    if _is_time(definition) and rule in {"minLength", "maxLength", "pattern"}:
        return _time_needs(field, value)
    if rule == "required" and isinstance(value, dict):
        missing = [k for k in definition.get("required", []) if k not in value]
        where = "" if field == "the event" else f" in `{field}`"
        return f"missing {', '.join(f'`{k}`' for k in missing)}{where}"
    if rule == "additionalProperties" and isinstance(value, dict):
        known = list(definition.get("properties", {}))
        extra = [k for k in value if k not in known]
        return (f"{subject}: unknown field{'s' if len(extra) > 1 else ''} "
                f"{', '.join(f'`{k}`' for k in extra)}; expected {', '.join(known)}")
    if rule == "enum":
        return (f"{subject} must be one of {', '.join(map(str, definition.get('enum', [])))}; "
                f"got {_short(value)}")
    if rule == "const":
        return f"{subject} must be {definition.get('const')!r}; got {_short(value)}"
    if rule == "type":
        wanted = definition.get("type")
        names = [_TYPES.get(str(t), str(t))
                 for t in (wanted if isinstance(wanted, list) else [wanted])]
        return f"{subject} must be {' or '.join(names)}; got {_kind(value)} ({_short(value)})"
    if rule in {"minLength", "maxLength", "pattern"} and definition.get("pattern") in _PATTERNS:
        return f"{subject} must be {_PATTERNS[definition['pattern']]}; got {_short(value)}"
    if rule == "minLength":
        return (f"{subject} must be at least {definition.get('minLength')} character(s); "
                f"got {_short(value)}")
    if rule == "maxLength":
        return (f"{subject} must be at most {definition.get('maxLength')} characters; "
                f"got {len(value) if isinstance(value, str) else _short(value)}")
    if rule in {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}:
        bound = definition.get(rule)
        words = {"minimum": "at least", "maximum": "at most", "exclusiveMinimum": "more than",
                 "exclusiveMaximum": "less than"}[rule]
        return f"{subject} must be {words} {bound}; got {_short(value)}"
    if rule in {"minItems", "maxItems"}:
        bound = definition.get(rule)
        words = "at least" if rule == "minItems" else "at most"
        count = len(value) if isinstance(value, list) else _short(value)
        return f"{subject} must hold {words} {bound} item(s); got {count}"
    if rule in {"minProperties", "maxProperties"}:
        bound = definition.get(rule)
        words = "at least" if rule == "minProperties" else "at most"
        count = len(value) if isinstance(value, dict) else _short(value)
        return f"{subject} must hold {words} {bound} key(s); got {count}"
    text = exc.message.removeprefix(name).strip()
    return f"{subject} {text}; got {_short(value)}"
