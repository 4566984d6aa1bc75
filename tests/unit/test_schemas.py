"""The JSON Schemas under ``schemas/``: examples validate, hostile or malformed events do not.

The schemas are the contract between producers and workers, so besides "the examples pass" these
tests pin the conventions every schema must keep (closed objects, bounded strings, a description
on every property) and the inputs a worker must never accept (ids that could escape a Redis key,
timestamps without a zone).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
import pytest

from streamproc.events.schemas import (
    inline_refs,
    load_decision_validator,
    load_event_schemas,
    load_product_schema,
    schema_dir,
)

SCHEMAS = schema_dir()
EXAMPLES = SCHEMAS / "examples"
EVENT_TYPES = sorted(load_event_schemas())
ENVELOPE_REQUIRED = ["event_id", "type", "customer_id", "ts"]

EXPECTED_TOPICS = {
    "page_view": "browsing",
    "product_view": "browsing",
    "search": "browsing",
    "cart_add": "browsing",
    "cart_remove": "browsing",
    "checkout": "browsing",
    "slot_request": "browsing",
    "decision_served": "browsing",
    "purchase": "purchases",
    "profile_update": "profiles",
    "erase": "profiles",
    "consent_update": "profiles",
    "context_update": "profiles",
    "identify": "profiles",
    "unlink": "profiles",
    "profile_merge": "profiles",
    "feedback": "feedback",
    "survey": "feedback",
}

HOSTILE_IDS = [
    "a b",
    "x{y}",
    "../etc",
    "",
    "a" * 200,
    "a" * 129,
    "cust\n",
    "cust\x00",
    "kü",
    "a/b",
    "*",
    "a,b",
    12345,
    None,
]

BAD_TIMESTAMPS = [
    "2025-03-14T09:26:53",  # no zone
    "2025-03-14T09:26:53.123",  # no zone
    "2025-03-14 09:26:53Z",  # space instead of T
    "2025-03-14T09:26:53Z\n",  # trailing newline ($ must not match before it)
    "2025-03-14T09:26:53+0100",  # offset without colon
    "2025-03-14T09:26:53.1234567Z",  # more than microseconds
    "2025-03-14",
    "1710408413",
    "",
    1710408413,
]


def example(name: str) -> dict[str, Any]:
    return orjson.loads((EXAMPLES / f"{name}.json").read_bytes())


def rejects(validate: Any, data: Any) -> bool:
    try:
        validate(data)
    except fastjsonschema.JsonSchemaException:
        return True
    return False


def wrong_type(value: Any) -> Any:
    """A value of a different JSON type than ``value``."""
    if isinstance(value, bool):
        return "true"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return 12345
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return {"0": value}
    return "null"


# -- the files ------------------------------------------------------------------------------------


def schema_files() -> list[Path]:
    return sorted(SCHEMAS.rglob("*.schema.json"))


def test_expected_event_types_are_defined() -> None:
    assert {t: s.topic for t, s in load_event_schemas().items()} == EXPECTED_TOPICS


@pytest.mark.parametrize("path", schema_files(), ids=lambda p: p.name)
def test_schema_file_is_json_with_title_and_description(path: Path) -> None:
    data = orjson.loads(path.read_bytes())
    assert isinstance(data, dict)
    assert isinstance(data.get("title"), str) and data["title"]
    assert isinstance(data.get("description"), str) and data["description"]
    assert "draft-07" in data.get("$schema", "")


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.name)
def test_example_file_is_json_object(path: Path) -> None:
    assert isinstance(orjson.loads(path.read_bytes()), dict)


def test_every_schema_has_an_example_and_every_example_a_schema() -> None:
    examples = {p.stem for p in EXAMPLES.glob("*.json")}
    assert examples == set(EVENT_TYPES) | {"decision", "product"}


def test_refs_always_name_a_file() -> None:
    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    for path in schema_files():
        for ref in refs(orjson.loads(path.read_bytes())):
            assert not ref.startswith("#"), f"{path.name}: {ref} must name the file"
            # Shared definitions: the events' common ones, the decision record's, and the rules'
            # (the conditions' language, also the catalogue's) and the catalogue's own.
            assert ref.partition("#")[0].endswith((
                "common.schema.json", "decision.schema.json", "segment-rules.schema.json",
                "catalogue.schema.json")), (path.name, ref)
            assert (path.parent / ref.partition("#")[0]).is_file(), (path.name, ref)


# -- conventions every compiled (inlined) schema keeps ---------------------------------------------


def compiled_schemas() -> list[tuple[str, dict[str, Any]]]:
    out = [(t, s.schema) for t, s in load_event_schemas().items()]
    out.append(("product", load_product_schema().schema))
    decision = orjson.loads((SCHEMAS / "decision.schema.json").read_bytes())
    out.append(("decision", inline_refs(decision, SCHEMAS)))
    return out


def walk(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from walk(item, f"{path}/{i}")


@pytest.mark.parametrize(("name", "schema"), compiled_schemas(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_schema_conventions(name: str, schema: dict[str, Any]) -> None:
    assert "$ref" not in orjson.dumps(schema).decode(), "every $ref must be inlined"
    for path, node in walk(schema):
        if path.endswith("/properties") or path.endswith("/enum") or path.endswith("/const"):
            continue
        types = node.get("type")
        types = types if isinstance(types, list) else [types]
        if "string" in types and "const" not in node and "enum" not in node:
            assert "maxLength" in node, f"{name} {path}: every string needs a maxLength"
        if "object" in types and "properties" in node:
            assert node.get("additionalProperties") is False, f"{name} {path}: close the object"
        if "object" in types and "properties" not in node:
            # the free-form maps: bounded in size and key length, values typed
            assert isinstance(node.get("additionalProperties"), dict), f"{name} {path}"
            assert "maxProperties" in node and "propertyNames" in node, f"{name} {path}"
        if path.endswith("/properties") is False and "properties" in node:
            for prop, sub in node["properties"].items():
                assert isinstance(sub.get("description"), str) and sub["description"], (
                    f"{name} {path}/properties/{prop}: needs a description"
                )


# -- examples are valid ----------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_event_example_validates(event_type: str) -> None:
    data = example(event_type)
    assert data["type"] == event_type
    load_event_schemas()[event_type].validate(data)


def test_product_example_validates_and_bad_feeds_do_not() -> None:
    check = load_product_schema().validate
    data = example("product")
    assert check(data)["in_stock"] is True
    minimal = {k: v for k, v in data.items() if k in load_product_schema().schema["required"]}
    check(minimal)
    for bad in ({"in_stock": "yes"}, {"product_id": "a b"}, {"margin": 3}, {"customer_id": "c"}):
        with pytest.raises(fastjsonschema.JsonSchemaException):
            check(data | bad)


def test_decision_example_validates() -> None:
    load_decision_validator()(example("decision"))


def test_minimal_events_validate() -> None:
    """Only the required fields: the optional envelope parts really are optional."""
    for event_type, schema in load_event_schemas().items():
        data = example(event_type)
        required = set(schema.schema["required"])
        minimal = {k: v for k, v in data.items() if k in required}
        schema.validate(minimal)


# -- invalid events are rejected -------------------------------------------------------------------


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_required_fields_are_required(event_type: str) -> None:
    schema = load_event_schemas()[event_type]
    assert schema.schema["required"][:4] == ENVELOPE_REQUIRED
    for field in schema.schema["required"]:
        data = example(event_type)
        del data[field]
        assert rejects(schema.validate, data), f"{event_type} without {field} passed"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_wrong_types_are_rejected(event_type: str) -> None:
    validate = load_event_schemas()[event_type].validate
    for field, value in example(event_type).items():
        data = example(event_type)
        data[field] = wrong_type(value)
        assert rejects(validate, data), f"{event_type}.{field}={data[field]!r} passed"
        data[field] = None
        assert rejects(validate, data), f"{event_type}.{field}=null passed"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_extra_properties_are_rejected(event_type: str) -> None:
    validate = load_event_schemas()[event_type].validate
    data = example(event_type)
    data["surprise"] = 1
    assert rejects(validate, data)
    for field, value in example(event_type).items():
        if isinstance(value, dict) and field != "extra":
            data = example(event_type)
            data[field]["surprise"] = 1
            assert rejects(validate, data), f"{event_type}.{field} accepted an extra property"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_type_must_match_the_schema(event_type: str) -> None:
    validate = load_event_schemas()[event_type].validate
    other = next(t for t in EVENT_TYPES if t != event_type)
    assert rejects(validate, {**example(event_type), "type": other})


@pytest.mark.parametrize("event_type", EVENT_TYPES)
@pytest.mark.parametrize("ts", BAD_TIMESTAMPS)
def test_timestamps_need_a_zone(event_type: str, ts: Any) -> None:
    validate = load_event_schemas()[event_type].validate
    assert rejects(validate, {**example(event_type), "ts": ts})


@pytest.mark.parametrize("ts", ["2025-03-14T09:26:53Z", "2025-03-14T09:26:53.5+05:30",
                                "2025-03-14T09:26:53.123456-08:00"])
def test_timestamps_with_a_zone_pass(ts: str) -> None:
    load_event_schemas()["page_view"].validate({**example("page_view"), "ts": ts})


@pytest.mark.parametrize("event_type", EVENT_TYPES)
@pytest.mark.parametrize("bad_id", HOSTILE_IDS, ids=repr)
def test_hostile_ids_are_rejected(event_type: str, bad_id: Any) -> None:
    validate = load_event_schemas()[event_type].validate
    assert rejects(validate, {**example(event_type), "customer_id": bad_id})
    assert rejects(validate, {**example(event_type), "event_id": bad_id})


@pytest.mark.parametrize(
    ("event_type", "mutate"),
    [
        ("page_view", lambda d: d.update(page_type="landing")),
        ("page_view", lambda d: d.update(url="h" * 2049)),
        ("page_view", lambda d: d.update(channel="fax")),
        ("page_view", lambda d: d["context"].update(device="watch")),
        ("page_view", lambda d: d["context"].update(country="gb")),
        ("page_view", lambda d: d["context"].update(user_agent="u" * 513)),
        ("product_view", lambda d: d["product"].update(price=-1)),
        ("product_view", lambda d: d["product"].update(product_id="a b")),
        ("product_view", lambda d: d["product"].pop("category")),
        ("search", lambda d: d.update(query="")),
        ("search", lambda d: d.update(query="q" * 513)),
        ("search", lambda d: d.update(results_count=-1)),
        ("search", lambda d: d.update(results_count=1.5)),
        ("cart_add", lambda d: d.update(quantity=0)),
        ("cart_add", lambda d: d.update(quantity=1001)),
        ("cart_add", lambda d: d.update(quantity=True)),
        ("cart_remove", lambda d: d.update(quantity=0)),
        ("checkout", lambda d: d.update(step="confirm")),
        ("checkout", lambda d: d.update(cart_value=-0.01)),
        ("purchase", lambda d: d.update(lines=[])),
        ("purchase", lambda d: d.update(lines=d["lines"] * 251)),
        ("purchase", lambda d: d.update(currency="eur")),
        ("purchase", lambda d: d.update(order_id="../x")),
        ("purchase", lambda d: d["lines"][0].update(quantity=0)),
        ("purchase", lambda d: d["lines"][0].update(quantity=10001)),
        ("purchase", lambda d: d["lines"][0].update(unit_price=-1)),
        ("purchase", lambda d: d["lines"][0].update(colour="red")),
        ("profile_update", lambda d: d.update(attributes={})),
        ("profile_update", lambda d: d["attributes"].update(age_band="30-40")),
        ("profile_update", lambda d: d["attributes"].update(timezone="Europe/London; rm")),
        ("profile_update", lambda d: d["attributes"].update(height=180)),
        ("profile_update", lambda d: d["attributes"]["extra"].update(k=None)),
        ("profile_update", lambda d: d["attributes"]["extra"].update(k=[1])),
        ("profile_update", lambda d: d["attributes"]["extra"].update(k="v" * 257)),
        ("profile_update", lambda d: d["attributes"]["extra"].update({"k" * 65: 1})),
        ("profile_update",
         lambda d: d["attributes"]["extra"].update({f"k{i}": i for i in range(50)})),
        ("consent_update", lambda d: d.update(purpose="everything")),
        ("consent_update", lambda d: d.update(granted="false")),
        ("consent_update", lambda d: d.update(granted=0)),
        ("feedback", lambda d: d.update(outcome="liked")),
        ("feedback", lambda d: d.update(revenue=-5)),
        ("feedback", lambda d: d.update(decision_id="x{y}")),
    ],
)
def test_field_rules(event_type: str, mutate: Any) -> None:
    data = copy.deepcopy(example(event_type))
    mutate(data)
    assert rejects(load_event_schemas()[event_type].validate, data)


def test_extra_attributes_allow_string_number_boolean() -> None:
    data = example("profile_update")
    data["attributes"] = {"extra": {f"k{i}": [i, "s", True, 1.5][i % 4] for i in range(50)}}
    load_event_schemas()["profile_update"].validate(data)


# -- decision record -------------------------------------------------------------------------------


DECISION_REQUIRED = [
    "decision_id", "customer_id", "ts", "decided_at", "trigger", "slot", "channel", "action",
    "personalised", "reasons", "segments", "scores", "experiment", "propensity", "expires_at",
    "model_versions", "latency_ms", "policy",
]


@pytest.mark.parametrize("field", DECISION_REQUIRED)
def test_decision_required_fields(field: str) -> None:
    data = example("decision")
    del data[field]
    assert rejects(load_decision_validator(), data)


def test_decision_nullable_fields() -> None:
    validate = load_decision_validator()
    validate({**example("decision"), "experiment": None, "expires_at": None, "slot": None})
    for field in DECISION_REQUIRED:
        if field in {"experiment", "expires_at", "slot"}:
            continue
        assert rejects(validate, {**example("decision"), field: None}), field


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(surprise=1),
        lambda d: d.update(customer_id="a b"),
        lambda d: d.update(ts="2025-03-14T09:28:02"),
        lambda d: d.update(decided_at="2025-03-14T09:28:02"),
        lambda d: d.update(expires_at="tomorrow"),
        lambda d: d.update(channel="store"),
        lambda d: d.update(slot="s" * 65),
        lambda d: d.update(propensity=1.01),
        lambda d: d.update(propensity=-0.1),
        lambda d: d.update(latency_ms=-1),
        lambda d: d.update(reasons=[]),
        lambda d: d.update(reasons=["r"] * 21),
        lambda d: d.update(reasons=["r" * 301]),
        lambda d: d.update(segments={"rfm": 1}),
        lambda d: d.update(scores={"x": "high"}),
        lambda d: d.update(model_versions={"m": 7}),
        lambda d: d.update(experiment={"id": "e"}),
        lambda d: d.update(experiment={"id": "e", "arm": "a", "x": 1}),
        lambda d: d["trigger"].update(partition=-1),
        lambda d: d["trigger"].update(offset=-1),
        lambda d: d["trigger"].update(offset=1.5),
        lambda d: d["trigger"].update(topic="bad topic"),
        lambda d: d["trigger"].pop("event_id"),
        lambda d: d["trigger"].update(extra=1),
        lambda d: d["action"].update(kind="coupon"),
        lambda d: d["action"].update(id="a" * 65),
        lambda d: d["action"].update(title="t" * 201),
        lambda d: d["action"].update(params={"p": None}),
        lambda d: d["action"].update(params={"p": {"nested": 1}}),
        lambda d: d["action"].update(extra=1),
    ],
)
def test_decision_rules(mutate: Any) -> None:
    data = copy.deepcopy(example("decision"))
    mutate(data)
    assert rejects(load_decision_validator(), data)
