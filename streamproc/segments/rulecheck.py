"""Check a parsed rules document: the JSON Schema, then what a schema cannot say.

Every problem found is listed, each with its location (``segments[1].when.all[0].count``). The
schema (``schemas/segment-rules.schema.json``) is applied node by node: the document, each rule,
each condition by its kind; within a node, key by key (:func:`schema_problems`), so one pass
reports every missing, unknown and wrong key, not the first. Semantic checks follow on the nodes the
schema accepted: duplicate names, unknown event types, count windows longer than the activity
kept, ``at_least`` above ``at_most``, op/value mismatches, unknown profile fields, unknown
segments under ``segments.``, (YAML's trap) lists mixing booleans and strings, and sensitive
attributes (health, religion, debt ...) the file does not allow (:mod:`.sensitive`).

>>> check_rules({"segments": [{"name": "x", "when": {"count": {"event": "purchase",
...     "within_days": 45, "at_least": 1}}}]}, activity_days=30, event_types={"purchase"})
['segments[0].when.count.within_days: 45 is more than the 30 days of activity kept']
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import fastjsonschema
import orjson

from streamproc.errors import ConfigError
from streamproc.events.schemas import inline_refs, schema_dir
from streamproc.segments.builtin import CUSTOM_PREFIX, MEMBER, NOT_MEMBER, SEGMENTATIONS
from streamproc.segments.profilepath import check_path, split
from streamproc.segments.sensitive import SensitivePolicy, allowance_problems

SCHEMA_FILE = "segment-rules.schema.json"
KINDS = ("all", "any", "not", "count")  # and "field"
MAX_DEPTH = 8
MAX_CONDITIONS = 10_000  # per file: YAML aliases can make a small file a huge tree

SCALAR_OPS = frozenset({"==", "!=", "contains"})
ORDER_OPS = frozenset({"<", "<=", ">", ">="})
LIST_OPS = frozenset({"in", "not_in"})
NO_VALUE_OPS = frozenset({"exists", "missing"})

Validator = Callable[[Any], Any]


@cache
def schema_pieces(schema_file: str = SCHEMA_FILE) -> dict[str, dict[str, Any]]:
    """The inlined schemas of a checker: ``document`` and one per ``$defs`` entry (for the
    rules: ``rule`` and one per condition kind)."""
    folder = schema_dir()
    try:
        raw = orjson.loads((folder / schema_file).read_bytes())
        pieces = {"document": raw, **raw["$defs"]}
        return {name: inline_refs(piece, folder) for name, piece in pieces.items()}
    except (OSError, KeyError, orjson.JSONDecodeError) as exc:  # a broken install
        raise ConfigError(f"{folder / schema_file}: unusable: {exc}") from None


_compiled: dict[bytes, Validator] = {}


def _validator(schema: dict[str, Any]) -> Validator:
    key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    found = _compiled.get(key)
    if found is None:
        found = _compiled[key] = fastjsonschema.compile(schema)
    return found


# Keywords whose meaning spans several keys or items: a node with one is checked whole.
_WHOLE = frozenset({"anyOf", "oneOf", "allOf", "not", "if", "dependencies",
                    "patternProperties", "$ref"})


def schema_problems(schema: dict[str, Any], data: Any, loc: str) -> list[str]:
    """Every schema problem of ``data`` at ``loc``: objects key by key and lists item by item,
    so a missing key, an unknown one and a wrong value elsewhere are all reported at once;
    a leaf (or a node with combinators) reports its first problem.

    >>> schema = {"type": "object", "additionalProperties": False, "required": ["id", "kind"],
    ...           "properties": {"id": {"type": "string"}, "kind": {"enum": ["a", "b"]},
    ...                          "n": {"type": "integer"}}}
    >>> for p in schema_problems(schema, {"kind": "c", "n": "1", "x": 0}, "actions[0]"):
    ...     print(p)
    actions[0]: missing 'id'
    actions[0]: unknown key 'x'; expected id, kind, n
    actions[0].kind: must be one of ['a', 'b'], got 'c'
    actions[0].n: must be integer, got '1'
    """
    if _WHOLE & schema.keys():
        return _first_problem(schema, data, loc)
    if schema.get("type") == "object" and isinstance(data, dict):
        problems = []
        properties: dict[str, Any] = schema.get("properties", {})
        missing = [k for k in schema.get("required", ()) if k not in data]
        if missing:
            problems.append(f"{loc or 'top level'}: missing {', '.join(map(repr, missing))}")
        if schema.get("additionalProperties") is False:
            extra = [k for k in data if k not in properties]
            if extra:
                problems.append(f"{loc or 'top level'}: unknown key"
                                f"{'s' if len(extra) > 1 else ''} "
                                f"{', '.join(map(repr, extra))}; expected {', '.join(properties)}")
        shell = {k: v for k, v in schema.items() if k not in {"properties", "required"}
                 and not (k == "additionalProperties" and v is False)}
        problems += _first_problem(shell, data, loc)
        for key, sub in properties.items():
            if key in data and isinstance(sub, dict):
                problems += schema_problems(sub, data[key], f"{loc}.{key}" if loc else key)
        return problems
    if schema.get("type") == "array" and isinstance(data, list) and isinstance(
            schema.get("items"), dict):
        problems = _first_problem({k: v for k, v in schema.items() if k != "items"}, data, loc)
        for i, item in enumerate(data):
            problems += schema_problems(schema["items"], item, f"{loc}[{i}]")
        return problems
    return _first_problem(schema, data, loc)


def _first_problem(schema: dict[str, Any], data: Any, loc: str) -> list[str]:
    try:
        _validator(schema)(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        return [describe_schema_error(exc, loc)]
    return []


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe_schema_error(exc: fastjsonschema.JsonSchemaValueException, loc: str) -> str:
    """One located, readable line for a schema violation found at ``loc``."""
    name = exc.name or "data"
    where = (loc + name[len("data"):]) or "top level"
    value, definition = exc.value, exc.definition or {}
    if exc.rule == "additionalProperties" and isinstance(value, dict):
        known = list(definition.get("properties", {}))
        extra = [k for k in value if k not in known]
        return (f"{where}: unknown key{'s' if len(extra) > 1 else ''} "
                f"{', '.join(map(repr, extra))}; expected {', '.join(known)}")
    if exc.rule == "required" and isinstance(value, dict):
        missing = [k for k in definition.get("required", []) if k not in value]
        return f"{where}: missing {', '.join(map(repr, missing))}"
    text = exc.message[len(name):].strip() if exc.message.startswith(name) else exc.message
    return f"{where}: {text}, got {_short(value)}"


@dataclass
class _Check:
    activity_days: int
    event_types: Collection[str]
    names: set[str] | None  # custom segments that exist; None: any name is accepted
    sensitive: SensitivePolicy = field(default_factory=SensitivePolicy)
    problems: list[str] = field(default_factory=list)
    conditions: int = 0

    def sensitive_use(self, path: str, loc: str) -> None:
        problem = self.sensitive.problem(path, loc)
        if problem:
            self.problems.append(problem)

    def schema(self, kind: str, data: Any, loc: str) -> bool:
        found = schema_problems(schema_pieces()[kind], data, loc)
        self.problems += found
        return not found

    def condition(self, node: Any, loc: str, depth: int) -> None:
        self.conditions += 1
        if self.conditions == MAX_CONDITIONS + 1:
            self.problems.append(f"{loc}: more than {MAX_CONDITIONS} conditions in the file")
        if self.conditions > MAX_CONDITIONS:
            return
        if depth > MAX_DEPTH:
            self.problems.append(f"{loc}: conditions nest deeper than {MAX_DEPTH} levels")
            return
        if not isinstance(node, dict):
            self.problems.append(f"{loc}: a condition must be a mapping, got {_short(node)}")
            return
        kinds = [k for k in KINDS if k in node] + (["field"] if "field" in node else [])
        if len(kinds) != 1:
            self.problems.append(
                f"{loc}: a condition needs exactly one of all, any, not, count or field "
                f"(with op and value), got {', '.join(map(repr, node)) or 'nothing'}"
            )
            return
        kind = kinds[0]
        before = len(self.problems)
        if not self.schema(kind, node, loc):
            found = self.problems[before:]
            if kind == "field" and isinstance(node["field"], str) and not any(
                    p.startswith(f"{loc}.field:") for p in found):  # in the same pass
                problem = check_path(node["field"])
                if problem:
                    self.problems.append(f"{loc}.field: {problem}")
            return
        if kind in ("all", "any"):
            for i, child in enumerate(node[kind]):
                self.condition(child, f"{loc}.{kind}[{i}]", depth + 1)
        elif kind == "not":
            self.condition(node["not"], f"{loc}.not", depth + 1)
        elif kind == "count":
            self.count(node["count"], f"{loc}.count")
        else:
            self.field(node, loc)

    def count(self, c: dict[str, Any], loc: str) -> None:
        self.sensitive_use(f"activity.{c['event']}" + (f":{c['category']}" if "category" in c
                                                         else ""), loc)
        if c["event"] not in self.event_types:
            self.problems.append(f"{loc}.event: unknown event type {c['event']!r}; known: "
                                 f"{', '.join(sorted(self.event_types))}")
        if c["within_days"] > self.activity_days:
            self.problems.append(f"{loc}.within_days: {c['within_days']} is more than the "
                                 f"{self.activity_days} days of activity kept")
        low, high = c.get("at_least"), c.get("at_most")
        if low is None and high is None:
            self.problems.append(f"{loc}: give at_least, at_most or both")
        elif low is not None and high is not None and low > high:
            self.problems.append(f"{loc}: at_least {low} is more than at_most {high}: "
                                 "never true")

    def field(self, node: dict[str, Any], loc: str) -> None:
        path, op = node["field"], node["op"]
        problem = check_path(path)
        if problem:
            self.problems.append(f"{loc}.field: {problem}")
        has_value, value = "value" in node, node.get("value")
        # contains on a map tests a key: {field: affinities.categories, op: contains,
        # value: pregnancy} reads affinities.categories.pregnancy.
        self.sensitive_use(f"{path}.{value}" if op == "contains" and isinstance(value, str)
                           else path, f"{loc}.field")
        if op in NO_VALUE_OPS:
            if has_value:
                self.problems.append(f"{loc}.value: {op!r} takes no value")
            return
        if not has_value:
            self.problems.append(f"{loc}: {op!r} needs a value")
            return
        if op in LIST_OPS and not isinstance(value, list):
            self.problems.append(f"{loc}.value: {op!r} needs a list of values, "
                                 f"got {_short(value)}")
            return
        if op in SCALAR_OPS and isinstance(value, list):
            hint = "; use 'in' for a list" if op == "==" else ""
            self.problems.append(f"{loc}.value: {op!r} compares with one value, "
                                 f"got a list{hint}")
            return
        if op in ORDER_OPS and (isinstance(value, (bool, list))):
            self.problems.append(f"{loc}.value: {op!r} needs a number or a string, "
                                 f"got {_short(value)}")
            return
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, bool) for v in values) and any(isinstance(v, str) for v in values):
            self.problems.append(
                f"{loc}.value: mixes booleans and strings; YAML reads unquoted yes, no, on, "
                "off, true and false as booleans: quote them (e.g. 'NO' for Norway)"
            )
        if op != "contains" and problem is None:
            self.segment_values(path, values, loc)

    def segment_values(self, path: str, values: list[Any], loc: str) -> None:
        parts = split(path)
        if parts[0] != "segments" or len(parts) != 2:
            return
        key = parts[1]
        if key.startswith(CUSTOM_PREFIX):
            if self.names is not None and key[len(CUSTOM_PREFIX):] not in self.names:
                self.problems.append(f"{loc}.field: no rule named "
                                     f"{key[len(CUSTOM_PREFIX):]!r} in this file")
            known: tuple[str, ...] | None = (MEMBER, NOT_MEMBER)
        elif key in SEGMENTATIONS:
            known = SEGMENTATIONS[key]
        else:
            self.problems.append(f"{loc}.field: unknown segmentation "
                                 f"{key!r}; known: {', '.join(SEGMENTATIONS)}, custom.<name>")
            return
        if known is None:
            return
        for v in values:
            if v not in known:
                self.problems.append(f"{loc}.value: {key} has no segment {_short(v)}; "
                                     f"known: {', '.join(known)}")


def check_rules(data: Any, *, activity_days: int, event_types: Collection[str],
                sensitive: SensitivePolicy | None = None) -> list[str]:
    """Every problem of a parsed rules document, located; empty when it is valid.
    ``sensitive``: the file's policy (:meth:`SensitivePolicy.of`), given to learn the allowed
    uses it met."""
    if data is None:
        return ["top level: the file is empty; expected a mapping with a 'segments' list"]
    segments = data.get("segments") if isinstance(data, dict) else None
    names = {r["name"] for r in segments or () if isinstance(r, dict)
             and isinstance(r.get("name"), str)} if isinstance(segments, list) else set()
    check = _Check(activity_days, event_types, names, sensitive or SensitivePolicy.of(data))
    # An unknown top-level key does not stop the rules from being checked in the same pass.
    if not check.schema("document", data, "") and not isinstance(segments, list):
        return check.problems
    check.problems += allowance_problems(data)
    first: dict[str, str] = {}
    for i, rule in enumerate(segments or ()):
        loc = f"segments[{i}]"
        if check.schema("rule", rule, loc):
            if rule["name"] in first:
                check.problems.append(f"{loc}.name: {rule['name']!r} is already the name of "
                                      f"{first[rule['name']]}")
            else:
                first[rule["name"]] = loc
        if isinstance(rule, dict) and "when" in rule:  # checked even when the name is wrong
            check.condition(rule["when"], f"{loc}.when", 1)
    return check.problems


def check_condition(node: Any, loc: str, *, activity_days: int,
                    event_types: Collection[str],
                    sensitive: SensitivePolicy | None = None) -> list[str]:
    """Every problem of one condition found outside a rules file (the decision catalogue's
    eligibility), located under ``loc``; ``segments.custom.<name>`` accepts any name there.
    Sensitive attributes are refused unless ``sensitive`` (the file's policy) allows them.

    >>> check_condition({"field": "cart.valu", "op": ">", "value": 0}, "actions[2].when",
    ...                 activity_days=30, event_types=())
    ["actions[2].when.field: unknown field cart.'valu'; known: items, updated_ms, value"]
    """
    check = _Check(activity_days, event_types, None, sensitive or SensitivePolicy())
    check.condition(node, loc, 1)
    return check.problems
