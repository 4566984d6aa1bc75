"""Load the JSON Schemas under ``schemas/`` and compile one validator per event type.

Layout (``schemas/`` at the repository root, shipped in the wheel as ``streamproc/_schemas``):

- ``events/common.schema.json``: shared ``$defs`` (envelope fields, product, context ...);
- ``events/<type>.schema.json``: one per event type, ``"x-topic"`` naming the input topic
  (``browsing``, ``purchases``, ``profiles``, ``feedback``) the type belongs to; the one
  exception, ``product.schema.json`` (``"x-topic": "products"``), is the product feed, keyed
  by product id and read by the learner, not a customer's event (:func:`load_product_schema`);
- ``decision.schema.json``: the decision record;
- ``examples/<name>.json``: one valid example per schema.

References name a file relative to the referring file, as in
``{"$ref": "common.schema.json#/$defs/name"}`` (``events/common.schema.json#/...`` from the decision
schema); they are inlined here
before compiling with fastjsonschema (which then needs no resolver and no network).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

from streamproc.errors import ConfigError

Validator = Callable[[Any], Any]
# The x-topic of the product feed (not a customer's event).
PRODUCTS = "products"


def schema_dir() -> Path:
    """The schemas folder: packaged in the wheel, or ``schemas/`` beside the package."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_schemas", here.parent / "schemas"):
        if (candidate / "events").is_dir():
            return candidate
    raise ConfigError(f"cannot find the schemas folder beside {here}; reinstall streamproc")


def _read(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a schema must be a JSON object")
    return data


def inline_refs(node: Any, folder: Path, seen: tuple[str, ...] = ()) -> Any:
    """Replace every ``{"$ref": "file.json#/$defs/x"}`` with the referenced definition."""
    if isinstance(node, list):
        return [inline_refs(item, folder, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        if ref in seen:
            raise ConfigError(f"circular $ref {ref} in {folder}")
        file_part, _, pointer = ref.partition("#")
        if not file_part:
            raise ConfigError(
                f"$ref {ref} in {folder}: name the file, as in common.schema.json#/..."
            )
        target: Any = _read(folder / file_part)
        for part in filter(None, pointer.split("/")):
            if not isinstance(target, dict) or part not in target:
                raise ConfigError(f"unresolvable $ref {ref} in {folder}")
            target = target[part]
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return inline_refs({**target, **rest}, (folder / file_part).parent, (*seen, ref))
    return {k: inline_refs(v, folder, seen) for k, v in node.items() if k != "$defs"}


@dataclass(frozen=True)
class EventSchema:
    type: str
    topic: str  # logical input topic: browsing, purchases, profiles or feedback
    schema: dict[str, Any]
    validate: Validator


@cache
def load_event_schemas(folder: Path | None = None) -> dict[str, EventSchema]:
    """Every event type's compiled schema, by type name."""
    events = (folder or schema_dir()) / "events"
    out: dict[str, EventSchema] = {}
    for path in sorted(events.glob("*.schema.json")):
        if path.name == "common.schema.json":
            continue
        raw = _read(path)
        type_name = path.name.removesuffix(".schema.json")
        topic = raw.get("x-topic")
        if topic == PRODUCTS:
            continue  # the product feed: load_product_schema
        if topic not in {"browsing", "purchases", "profiles", "feedback"}:
            raise ConfigError(f"{path}: x-topic must name an input topic, got {topic!r}")
        schema = inline_refs(raw, events)
        out[type_name] = EventSchema(type_name, topic, schema, fastjsonschema.compile(schema))
    if not out:
        raise ConfigError(f"no event schemas found in {events}")
    return out


@cache
def load_product_schema(folder: Path | None = None) -> EventSchema:
    """The product feed's schema (``events/product.schema.json``), compiled.

    >>> check = load_product_schema().validate
    >>> check({"event_id": "f1", "type": "product", "ts": "2026-01-01T00:00:00Z",
    ...        "product_id": "p1", "category": "shoes", "price": 9.5, "in_stock": False})["price"]
    9.5
    """
    events = (folder or schema_dir()) / "events"
    schema = inline_refs(_read(events / "product.schema.json"), events)
    return EventSchema("product", PRODUCTS, schema, fastjsonschema.compile(schema))


@cache
def load_decision_validator(folder: Path | None = None) -> Validator:
    base = folder or schema_dir()
    schema = inline_refs(_read(base / "decision.schema.json"), base)
    validate: Validator = fastjsonschema.compile(schema)
    return validate
