"""Custom segments written without code: load, check and compile a rules file.

A rules file (YAML, or JSON when it ends in ``.json``; schema ``schemas/segment-rules.schema.json``,
example ``schemas/examples/segment-rules.yaml``) lists named conditions on the profile:

- ``all`` / ``any``: a non-empty list of conditions; ``not``: one condition;
- ``field``: ``{field: purchases.total, op: ">=", value: 500}``. Ops: ``== != < <= > >=``
  (one value; strings compare with strings, numbers with numbers, anything else is false),
  ``in`` / ``not_in`` (a list), ``contains`` (the field is a list holding the value, a text
  containing it or a map with that key), ``exists`` / ``missing`` (no value). A missing or null
  field makes every comparison false, ``!=`` and ``not_in`` included;
- ``count``: ``{event: product_view, category: shoes, within_days: 7, at_least: 3}`` reads the
  profile's daily ``activity`` counters (``product_view:shoes`` per UTC day). The window is the
  last ``within_days`` calendar days including today's: an event less than ``within_days - 1``
  days old always counts, one ``within_days`` days old or more never does. Days after
  ``now_ms`` (events that arrived out of order) count as recent.

:func:`load_rules` checks everything (:mod:`.rulecheck`) and raises one
:class:`~streamproc.errors.ConfigError` listing every problem; then each rule is compiled once
into nested closures, so evaluating one reads the profile and nothing else.

>>> rules = parse_rules({"segments": [{"name": "big", "when":
...     {"field": "purchases.total", "op": ">=", "value": 500}}]}, event_types={"purchase"})
>>> rules.evaluate({"purchases": {"total": 620.0}}, 0), rules.evaluate({}, 0)
({'big': True}, {'big': False})
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import yaml

from streamproc.days import DAY_MS, local_time
from streamproc.errors import ConfigError
from streamproc.segments.places import line_map, place_problems
from streamproc.segments.profilepath import MISSING, getter, split
from streamproc.segments.rulecheck import check_rules
from streamproc.segments.sensitive import SensitivePolicy
from streamproc.state.profile import Profile

log = logging.getLogger(__name__)

Predicate = Callable[[Profile, int], bool]

_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    test: Predicate
    # The parts of the profile its condition reads (:func:`condition_reads`), "day" for the
    # event day of a count; None: read on every event.
    reads: frozenset[str] | None = None


class RuleSet:
    """Compiled rules, evaluated in file order; ``sensitive_uses``: the sensitive data the
    file allows, as (where, attribute, category, reason)."""

    def __init__(self, rules: Iterable[Rule] = (),
                 sensitive_uses: tuple[tuple[str, str, str, str], ...] = ()) -> None:
        self.rules = tuple(rules)
        self.sensitive_uses = sensitive_uses

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"RuleSet({', '.join(r.name for r in self.rules)})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rules)

    def evaluate(self, profile: Profile, now_ms: int,
                 only: Iterable[Rule] | None = None) -> dict[str, bool]:
        """Membership of every rule (or of the rules ``only``); a rule that fails on malformed
        data is False (logged)."""
        out: dict[str, bool] = {}
        for rule in self.rules if only is None else only:
            try:
                out[rule.name] = rule.test(profile, now_ms)
            except Exception:  # a profile of an unexpected shape must not stop the worker
                log.warning("segment rule %s failed on customer %s", rule.name,
                            profile.get("customer_id"), exc_info=True)
                out[rule.name] = False
        return out


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def moment(p: Profile, ts_ms: int) -> dict[str, Any]:
    """The ``moment.*`` fields of conditions: the event's local hour (0-23), weekday (monday
    to sunday) and whether it is the weekend, in the customer's timezone (UTC without one).

    >>> moment({"attributes": {"timezone": "Europe/Paris"}}, 11 * 3_600_000)  # 1 Jan 1970
    {'local_hour': 12, 'weekday': 'thursday', 'weekend': False}
    """
    now = local_time(p, ts_ms)
    weekday = WEEKDAYS[date.fromordinal(now.day).weekday()]
    return {"local_hour": now.minute // 60, "weekday": weekday,
            "weekend": weekday in WEEKDAYS[5:]}


def _reader(path: str) -> Callable[[Profile, int], Any]:
    """``path`` read from the profile, or, under ``moment.``, from the event's local time."""
    if path.startswith("moment."):
        key = path.removeprefix("moment.")
        return lambda p, now: moment(p, now)[key]
    read = getter(path)
    return lambda p, now: read(p)


def _field(path: str, op: str, value: Any) -> Predicate:
    read = _reader(path)
    kind = _kind(value)
    if op == "exists":
        return lambda p, now: read(p, now) is not MISSING
    if op == "missing":
        return lambda p, now: read(p, now) is MISSING
    if op in ("==", "!="):
        equal = op == "=="

        def compare(p: Profile, now: int) -> bool:
            actual = read(p, now)
            if actual is MISSING:
                return False
            return (_kind(actual) == kind and actual == value) is equal

        return compare
    if op in _ORDER:
        order = _ORDER[op]

        def ordered(p: Profile, now: int) -> bool:
            actual = read(p, now)
            return actual is not MISSING and _kind(actual) == kind and order(actual, value)

        return ordered
    if op in ("in", "not_in"):
        wanted = frozenset((_kind(v), v) for v in value)
        inside = op == "in"

        def member(p: Profile, now: int) -> bool:
            actual = read(p, now)
            if actual is MISSING:
                return False
            k = _kind(actual)
            return (k is not None and (k, actual) in wanted) is inside

        return member

    def contains(p: Profile, now: int) -> bool:
        actual = read(p, now)
        if isinstance(actual, str):
            return kind == "string" and value in actual
        if isinstance(actual, Mapping):
            return kind == "string" and value in actual
        if isinstance(actual, list):
            return any(_kind(a) == kind and a == value for a in actual)
        return False

    return contains


def _count(spec: Mapping[str, Any]) -> Predicate:
    key = f"{spec['event']}:{spec['category']}" if "category" in spec else spec["event"]
    within = int(spec["within_days"])
    low, high = spec.get("at_least"), spec.get("at_most")

    def count(p: Profile, now_ms: int) -> bool:
        activity = p.get("activity")
        days = activity.get(key) if isinstance(activity, Mapping) else None
        n = 0
        if days:
            first = now_ms // DAY_MS - within + 1
            n = sum(c for d, c in days.items() if int(d) >= first)
        return (low is None or n >= low) and (high is None or n <= high)

    return count


def _all(tests: tuple[Predicate, ...]) -> Predicate:
    def every(p: Profile, now: int) -> bool:
        return all(t(p, now) for t in tests)

    return every


def _any(tests: tuple[Predicate, ...]) -> Predicate:
    def some(p: Profile, now: int) -> bool:
        return any(t(p, now) for t in tests)

    return some


def compile_condition(node: Mapping[str, Any]) -> Predicate:
    """A closure for a condition already accepted by :func:`~.rulecheck.check_rules`."""
    if "all" in node:
        return _all(tuple(compile_condition(c) for c in node["all"]))
    if "any" in node:
        return _any(tuple(compile_condition(c) for c in node["any"]))
    if "not" in node:
        inner = compile_condition(node["not"])
        return lambda p, now: not inner(p, now)
    if "count" in node:
        return _count(node["count"])
    return _field(node["field"], node["op"], node.get("value"))


def condition_reads(node: Mapping[str, Any]) -> frozenset[str]:
    """The top-level parts of the profile a condition reads: a field's first name (its
    ``segments``), a count's ``activity`` and the event ``day`` its window ends on.

    >>> sorted(condition_reads({"all": [{"field": "purchases.total", "op": ">", "value": 1},
    ...     {"not": {"count": {"event": "search", "within_days": 7, "at_least": 2}}}]}))
    ['activity', 'day', 'purchases']
    """
    if "all" in node or "any" in node:
        return frozenset().union(*(condition_reads(c) for c in node.get("all") or node["any"]))
    if "not" in node:
        return condition_reads(node["not"])
    if "count" in node:
        return frozenset({"activity", "day"})
    return frozenset({split(node["field"])[0]})


def _event_types() -> frozenset[str]:
    from streamproc.events.schemas import load_event_schemas

    return frozenset(load_event_schemas())


def parse_rules(
    data: Any,
    *,
    activity_days: int = 30,
    event_types: Collection[str] | None = None,
    source: str = "segment rules",
    text: bytes | None = None,
) -> RuleSet:
    """Check and compile a parsed document; raises ConfigError listing every problem.

    ``event_types`` defaults to the types with a schema under ``schemas/events``. ``text``, the
    file the document was read from, gives each problem its line.
    """
    types = _event_types() if event_types is None else event_types
    policy = SensitivePolicy.of(data)
    problems = check_rules(data, activity_days=activity_days, event_types=types,
                           sensitive=policy)
    lines = line_map(text) if text is not None else {}
    if problems:
        if text is not None:  # read from a file: say where in it, for the person editing it
            problems = place_problems(problems, data, lines, "name")
        listed = "\n".join(f"  {p}" for p in problems)
        raise ConfigError(f"{source}: {len(problems)} problem{'s' if len(problems) > 1 else ''}"
                          f" in the segment rules:\n{listed}")
    return RuleSet(
        (Rule(r["name"], r.get("description", ""), compile_condition(r["when"]),
              condition_reads(r["when"]))
         for r in data["segments"]),
        policy.uses(data, lines, "name"),
    )


def read_document(path: Path, what: str = "the segment rules") -> Any:
    """The parsed file: JSON if it ends in ``.json``, YAML otherwise."""
    return parse_document(path, read_bytes(path, what))


def read_bytes(path: Path, what: str = "the segment rules") -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror}") from None


def parse_document(path: Path, raw: bytes) -> Any:
    """The parsed text of ``path``: JSON if it ends in ``.json``, YAML otherwise."""
    try:
        if path.suffix.lower() == ".json":
            return orjson.loads(raw)
        return yaml.safe_load(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None


def load_rules(
    path: str | Path, *, activity_days: int = 30, event_types: Collection[str] | None = None
) -> RuleSet:
    """Read, check and compile a rules file; raises ConfigError listing every problem."""
    path = Path(path)
    raw = read_bytes(path)
    return parse_rules(parse_document(path, raw), activity_days=activity_days,
                       event_types=event_types, source=str(path), text=raw)
