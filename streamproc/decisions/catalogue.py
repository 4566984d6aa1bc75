"""The decision catalogue: slots, actions, triggers, caps and experiments, checked and compiled.

A catalogue file (YAML, or JSON when it ends in ``.json``; schema
``schemas/catalogue.schema.json``, the shipped default ``schemas/examples/catalogue.yaml``) is
checked in full before anything is used: the schema node by node (the document, each slot,
action, trigger, cap and experiment), then what a schema cannot say (unknown slots, neutral
defaults that are not neutral, conditions, profile paths, dates, experiments). Every problem is
listed with its location (``actions[3].when.field``) in one :class:`ConfigError`. Conditions are
the segment rules' language (:mod:`streamproc.segments.rules`), compiled once.

>>> cat = load_catalogue(default_catalogue_path())
>>> cat.slots["cart_drawer"].neutral, [a.id for a in cat.candidates("cart_drawer")]
('free_delivery_banner', ['cart_reminder', 'free_delivery_nudge'])
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streamproc.days import DAY_MS, HOUR_MS
from streamproc.decisions.experiments import validate_experiment
from streamproc.decisions.trust import fields_read, gates
from streamproc.errors import ConfigError
from streamproc.events.schemas import schema_dir
from streamproc.segments.builtin import CUSTOM_PREFIX, SEGMENTATIONS
from streamproc.segments.places import line_map, place_problems
from streamproc.segments.profilepath import check_path
from streamproc.segments.rulecheck import check_condition, schema_pieces, schema_problems
from streamproc.segments.rulefile import WatchedFile
from streamproc.segments.rules import Predicate, compile_condition, parse_document, read_bytes
from streamproc.segments.sensitive import SensitivePolicy, allowance_problems, describe_uses
from streamproc.settings import TRUST_SOURCES

SCHEMA_FILE = "catalogue.schema.json"
MESSAGE_CHANNELS = frozenset({"email", "sms", "push", "call_centre"})
CHANNELS = ("web", "app", "email", "sms", "push", "call_centre")
NONE_ID = "none"  # the built-in "deliberately nothing" action
DEFAULT_FRESHNESS_HOURS = 24.0
DEFAULT_EXPIRES_MINUTES = 60
DEFAULT_HISTORY = 6
DEFAULT_CONTEXT = "lifecycle"
SLOT_REQUEST = "slot_request"
# The time-driven lifecycle moves' timer (streamproc.decisions.timers): no trigger may take its id.
LIFECYCLE_TIMER = "lifecycle"
# Profile sections that hold what the customer browsed, opened or clicked: an action whose
# params_from reads one of them shows the customer they were watched ("you looked at X").
TRACKING_SECTIONS = frozenset({"session", "activity", "affinities", "categories", "counts",
                               "engagement"})


@dataclass(frozen=True)
class RevealLimit:
    """At most ``max`` decisions that reveal tracking per customer in any ``per_days`` days."""

    max: int = 1
    per_days: float = 7.0

    @property
    def window_ms(self) -> int:
        return int(self.per_days * DAY_MS)


DEFAULT_REVEAL_LIMIT = RevealLimit()


@dataclass(frozen=True)
class Slot:
    id: str
    channel: str
    neutral: str
    expires_ms: int
    policy: str = "bandit"  # who picks: the bucketed "bandit" or the "contextual" policy
    reward: str = "click"  # what the learning policies learn from: click, conversion, revenue

    @property
    def is_message(self) -> bool:
        return self.channel in MESSAGE_CHANNELS


@dataclass(frozen=True)
class Action:
    id: str
    kind: str
    title: str = ""
    slots: tuple[str, ...] = ()
    neutral: bool = False
    when: Predicate | None = None
    exclude: Predicate | None = None
    consent: tuple[str, ...] = ()
    valid_from_ms: int | None = None
    valid_until_ms: int | None = None
    freshness_ms: int = int(DEFAULT_FRESHNESS_HOURS * HOUR_MS)
    requires: tuple[str, ...] = ()
    max_age_ms: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    params_from: Mapping[str, str] = field(default_factory=dict)
    reveals_tracking: bool = False
    reveal_limit: RevealLimit = DEFAULT_REVEAL_LIMIT
    # The profile fields its when, requires and params_from read (streamproc.decisions.trust),
    # and (field, least trusted source) for those its min_trust covers.
    reads: tuple[str, ...] = ()
    trust: tuple[tuple[str, str], ...] = ()


NONE_ACTION = Action(NONE_ID, "none", "Nothing: deliberately no action")


@dataclass(frozen=True)
class After:
    """A timer trigger: ``minutes`` of event time after the last ``event``, unless one of the
    ``unless`` event types came in between (streamproc.decisions.timers)."""

    event: str
    minutes: float
    unless: tuple[str, ...] = ()

    @property
    def ms(self) -> int:
        return int(self.minutes * 60_000)


@dataclass(frozen=True)
class Hop:
    """A step of a channel cascade: ``slot``, ``after_hours`` after the previous step when no
    decision of the cascade was opened, clicked or converted and the customer did not buy."""

    slot: str
    after_hours: float

    @property
    def ms(self) -> int:
        return int(self.after_hours * HOUR_MS)


@dataclass(frozen=True)
class Trigger:
    id: str
    event: str | None = None
    segment_entry: tuple[str, str] | None = None
    slots: tuple[str, ...] = ()
    when: Predicate | None = None
    after: After | None = None
    cascade: tuple[Hop, ...] = ()


@dataclass(frozen=True)
class Cap:
    per_day: int | None = None
    quiet_hours: tuple[int, int] | None = None  # minutes after local midnight: [start, end)


@dataclass(frozen=True)
class Catalogue:
    slots: Mapping[str, Slot]
    actions: Mapping[str, Action]  # in file order, which is the chooser's candidate order
    triggers: tuple[Trigger, ...]
    caps: Mapping[str, Cap]
    experiments: tuple[dict[str, Any], ...]
    context: str
    history: int
    version: str  # a digest of the document: which catalogue a decision was made under
    # Sensitive attributes the file allows: (where, attribute, category, reason).
    sensitive_uses: tuple[tuple[str, str, str, str], ...] = ()

    def action(self, action_id: str) -> Action:
        return NONE_ACTION if action_id == NONE_ID else self.actions[action_id]

    def candidates(self, slot: str) -> list[Action]:
        """The personalised actions that may fill ``slot``, in catalogue order."""
        return [a for a in self.actions.values() if not a.neutral and slot in a.slots]

    def experiment_for(self, slot: str) -> dict[str, Any] | None:
        return next((e for e in self.experiments if slot in e["slots"]), None)


def default_catalogue_path() -> Path:
    return schema_dir() / "examples" / "catalogue.yaml"


def parse_time_ms(text: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 date or time (UTC without an offset).

    >>> parse_time_ms("1970-01-02"), parse_time_ms("1970-01-01T01:00:00+01:00")
    (86400000, 0)
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def reveals_tracking(action: Mapping[str, Any]) -> bool:
    """Whether an action (as written in the file) reveals tracking: its ``reveals_tracking``,
    else whether its ``params_from`` reads what the customer browsed (:data:`TRACKING_SECTIONS`).

    >>> reveals_tracking({"params_from": {"last_seen": "session.products.0"}})
    True
    >>> reveals_tracking({"params_from": {"value": "cart.value"}}), reveals_tracking({})
    (False, False)
    """
    if "reveals_tracking" in action:
        return bool(action["reveals_tracking"])
    return any(path.split(".")[0] in TRACKING_SECTIONS
               for path in (action.get("params_from") or {}).values())


def _reveal_limit(spec: Mapping[str, Any] | None) -> RevealLimit:
    return RevealLimit(spec["max"], float(spec["per_days"])) if spec else DEFAULT_REVEAL_LIMIT


@dataclass
class _Check:
    activity_days: int
    event_types: Collection[str]
    sensitive: SensitivePolicy = field(default_factory=SensitivePolicy)
    problems: list[str] = field(default_factory=list)

    def schema(self, kind: str, data: Any, loc: str) -> bool:
        found = schema_problems(schema_pieces(SCHEMA_FILE)[kind], data, loc)
        self.problems += found
        return not found

    def items(self, data: dict[str, Any], key: str, kind: str,
              also: Callable[[str, dict[str, Any]], None] | None = None,
              ) -> list[tuple[str, dict[str, Any]]]:
        """The items of a list that pass their schema, with their location; ids unique.

        ``also`` checks what it can of an item that fails its schema, so that one pass reports
        those problems too."""
        good: list[tuple[str, dict[str, Any]]] = []
        first: dict[str, str] = {}
        listed = data.get(key)
        for i, item in enumerate(listed if isinstance(listed, list) else ()):
            loc = f"{key}[{i}]"
            if not self.schema(kind, item, loc):
                if also is not None and isinstance(item, dict):
                    also(loc, item)
                continue
            if item["id"] in first:
                self.problems.append(f"{loc}.id: {item['id']!r} is already the id of "
                                     f"{first[item['id']]}")
                continue
            first[item["id"]] = loc
            good.append((loc, item))
        return good

    def condition(self, node: Any, loc: str) -> None:
        self.problems.extend(check_condition(node, loc, activity_days=self.activity_days,
                                             event_types=self.event_types,
                                             sensitive=self.sensitive))

    def path(self, path: str, loc: str, allow_event: bool = False) -> None:
        problem = self.sensitive.problem(path, loc)
        if problem:
            self.problems.append(problem)
        if allow_event and path.startswith("event."):
            return
        problem = check_path(path)
        if problem:
            self.problems.append(f"{loc}: {problem}")

    def moment(self, item: dict[str, Any], key: str, loc: str) -> int | None:
        if key not in item:
            return None
        try:
            return parse_time_ms(item[key])
        except ValueError:
            self.problems.append(f"{loc}.{key}: {item[key]!r} is not an ISO 8601 date or time "
                                 "(e.g. 2026-01-31 or 2026-01-31T18:00:00+01:00)")
            return None

    def slot_refs(self, slots: list[str], known: Mapping[str, Any], loc: str) -> None:
        for s in slots:
            if s not in known:
                self.problems.append(f"{loc}: unknown slot {s!r}; known: {', '.join(known)}")


def _check_action(check: _Check, loc: str, a: dict[str, Any], slots: Mapping[str, Any]) -> None:
    check.slot_refs(a["slots"], slots, f"{loc}.slots")
    if a.get("neutral"):
        personal: list[str] = [k for k in ("when", "exclude", "consent", "requires",
                                           "params_from", "reveal_limit", "min_trust")
                               if k in a]
        if a.get("reveals_tracking"):
            personal.append("reveals_tracking")
        if personal:
            check.problems.append(f"{loc}: a neutral action is the same for everyone; remove "
                                  f"{', '.join(personal)}")
    for key in ("when", "exclude"):
        if key in a:
            check.condition(a[key], f"{loc}.{key}")
    for i, path in enumerate(a.get("requires", ())):
        check.path(path, f"{loc}.requires[{i}]")
    for name, path in a.get("params_from", {}).items():
        check.path(path, f"{loc}.params_from.{name}", allow_event=True)
    _check_min_trust(check, loc, a)
    if "reveal_limit" in a and not a.get("neutral") and not reveals_tracking(a):
        check.problems.append(f"{loc}.reveal_limit: the action does not reveal tracking (its "
                              "params_from reads no browsing history); set reveals_tracking: "
                              "true, or remove reveal_limit")
    start, end = check.moment(a, "valid_from", loc), check.moment(a, "valid_until", loc)
    if start is not None and end is not None and start >= end:
        check.problems.append(f"{loc}: valid_from {a['valid_from']} is not before valid_until "
                              f"{a['valid_until']}: never valid")


def _check_min_trust(check: _Check, loc: str, a: dict[str, Any]) -> None:
    """An action's ``min_trust``: known sources, and paths the action reads."""
    wanted = a.get("min_trust")
    if wanted is None:
        return
    named = {"": wanted} if isinstance(wanted, str) else dict(wanted)
    read = fields_read(a)
    for path, source in named.items():
        where = f"{loc}.min_trust" + (f".{path}" if path else "")
        if source not in TRUST_SOURCES:
            check.problems.append(f"{where}: unknown source {source!r}; known: "
                                  f"{', '.join(TRUST_SOURCES)}")
        if path and not any(r == path or r.startswith(path + ".") for r in read):
            check.problems.append(f"{where}: the action reads nothing under {path} (its when, "
                                  f"requires and params_from read: {', '.join(read) or 'nothing'})")
    if not read:
        check.problems.append(f"{loc}.min_trust: the action reads no profile field (when, "
                              "requires, params_from): nothing to trust; remove min_trust")


def _check_trigger(check: _Check, loc: str, t: dict[str, Any], slots: Mapping[str, Any]) -> None:
    kinds = [k for k in ("event", "segment_entry", "after") if k in t]
    if len(kinds) != 1:
        check.problems.append(f"{loc}: give exactly one of event, segment_entry or after"
                              + (f" (it has {' and '.join(kinds)})" if kinds else ""))
        return
    if "event" in t and t["event"] not in check.event_types:
        check.problems.append(f"{loc}.event: unknown event type {t['event']!r}; known: "
                              f"{', '.join(sorted(check.event_types))}")
    if "after" in t:
        after = t["after"]
        for where, name in [("event", after["event"]),
                            *(("unless", u) for u in after.get("unless", ()))]:
            if name not in check.event_types:
                check.problems.append(f"{loc}.after.{where}: unknown event type {name!r}; "
                                      f"known: {', '.join(sorted(check.event_types))}")
        if t.get("id") == LIFECYCLE_TIMER:
            check.problems.append(f"{loc}.id: {t['id']!r} is reserved for streamproc's own "
                                  "timers; choose another id")
    for i, hop in enumerate(t.get("cascade") or ()):
        check.slot_refs([hop["slot"]], slots, f"{loc}.cascade[{i}].slot")
        if hop["slot"] in slots and slots[hop["slot"]].get("channel") not in MESSAGE_CHANNELS:
            check.problems.append(f"{loc}.cascade[{i}].slot: {hop['slot']!r} is not a message "
                                  "channel; a cascade follows up messages (email, sms, push, "
                                  "call_centre)")
    if "segment_entry" in t:
        entry = t["segment_entry"]
        name, segment = entry["segmentation"], entry["segment"]
        problem = check.sensitive.problem(f"segments.{name}.{segment}", f"{loc}.segment_entry")
        if problem:  # entering custom.diabetics reveals what the rule is about
            check.problems.append(problem)
        if not name.startswith(CUSTOM_PREFIX) and name not in SEGMENTATIONS:
            check.problems.append(f"{loc}.segment_entry.segmentation: unknown segmentation "
                                  f"{name!r}; known: {', '.join(SEGMENTATIONS)}, custom.<name>")
        elif SEGMENTATIONS.get(name) and segment not in (SEGMENTATIONS[name] or ()):
            check.problems.append(f"{loc}.segment_entry.segment: {name} has no segment "
                                  f"{segment!r}; known: {', '.join(SEGMENTATIONS[name] or ())}")
    if t.get("event") == SLOT_REQUEST:
        if "slots" in t:
            check.problems.append(f"{loc}.slots: a slot_request names its slot itself; "
                                  "remove slots")
    elif "slots" not in t:
        check.problems.append(f"{loc}: missing 'slots' (where the decision goes)")
    else:
        check.slot_refs(t["slots"], slots, f"{loc}.slots")
    if "when" in t:
        check.condition(t["when"], f"{loc}.when")


def check_catalogue(data: Any, *, activity_days: int = 30,
                    event_types: Collection[str] | None = None) -> list[str]:
    """Every problem of a parsed catalogue, located; empty when it is valid."""
    return _checked(data, activity_days, event_types).problems


def _checked(data: Any, activity_days: int, event_types: Collection[str] | None) -> _Check:
    """The check of a parsed catalogue: its problems, and the sensitive data it allows."""
    if event_types is None:
        from streamproc.events.schemas import load_event_schemas

        event_types = frozenset(load_event_schemas())
    check = _Check(activity_days, event_types, SensitivePolicy.of(data))
    if data is None:
        check.problems.append("top level: the file is empty; expected slots, actions and "
                              "triggers")
    else:
        if isinstance(data, dict) and "consent" in data:
            # Catalogues before consent became a setting: the processor must know the
            # defaults too (it stops profiling without consent), so they are set once.
            check.problems.append("consent: consent defaults are the setting STREAMPROC_"
                                  "CONSENT_DEFAULTS now (e.g. personalisation=granted, for what "
                                  "consent.opt_out listed); remove this section")
            data = {k: v for k, v in data.items() if k != "consent"}
        _check_document(check, data)
    return check


def _check_document(check: _Check, data: Any) -> None:
    # A document with an unknown or broken top-level key still has its items checked: every
    # problem in one pass.
    if not check.schema("document", data, "") and not isinstance(data, dict):
        return
    check.problems += allowance_problems(data)

    def conditions(loc: str, item: dict[str, Any]) -> None:  # of an item failing its schema
        for key in ("when", "exclude"):
            if key in item:
                check.condition(item[key], f"{loc}.{key}")

    slots = dict(check.items(data, "slots", "slot"))
    # A slot with another mistake still exists for what refers to it: one problem, one line.
    listed = data.get("slots")
    slot_ids = {s["id"]: s for s in (listed if isinstance(listed, list) else ())
                if isinstance(s, dict) and isinstance(s.get("id"), str)}
    actions = check.items(data, "actions", "action", conditions)
    # As for slots: a slot's neutral default with a mistake of its own still exists.
    listed = data.get("actions")
    action_ids = {a["id"]: a for a in (listed if isinstance(listed, list) else ())
                  if isinstance(a, dict) and isinstance(a.get("id"), str)}
    for loc, a in actions:
        if a["id"] == NONE_ID:
            check.problems.append(f"{loc}.id: {NONE_ID!r} is the built-in empty action; give "
                                  "the action another id")
    for loc, a in actions:
        _check_action(check, loc, a, slot_ids)
    for loc, s in slots.items():
        neutral = s["neutral"]
        if neutral == NONE_ID:
            continue
        default = action_ids.get(neutral)
        if default is None:
            check.problems.append(f"{loc}.neutral: unknown action {neutral!r}")
        elif not default.get("neutral"):
            check.problems.append(f"{loc}.neutral: {neutral!r} is personalised; mark a "
                                  "non-personalised action neutral: true, or use none")
        elif s["id"] not in (default.get("slots") or ()):
            check.problems.append(f"{loc}.neutral: {neutral!r} does not list the slot "
                                  f"{s['id']!r} in its slots")
    for loc, t in check.items(data, "triggers", "trigger", conditions):
        _check_trigger(check, loc, t, slot_ids)
    caps = data.get("caps")
    for channel, cap in (caps if isinstance(caps, dict) else {}).items():
        loc = f"caps.{channel}"
        if channel not in CHANNELS:
            check.problems.append(f"{loc}: unknown channel; known: {', '.join(CHANNELS)}")
        elif check.schema("cap", cap, loc) and "quiet_hours" in cap:
            start, end = cap["quiet_hours"]
            if start == end:
                check.problems.append(f"{loc}.quiet_hours: start and end are both {start}; "
                                      "remove quiet_hours for none")
    for loc, e in check.items(data, "experiments", "experiment"):
        check.slot_refs(e["slots"], slot_ids, f"{loc}.slots")
        check.problems.extend(f"{loc}: {p}" for p in validate_experiment(e))
    if isinstance(data.get("context"), str) and not data["context"].startswith(CUSTOM_PREFIX) and (
            data["context"] not in SEGMENTATIONS):
        check.problems.append(f"context: unknown segmentation {data['context']!r}; known: "
                              f"{', '.join(SEGMENTATIONS)}, custom.<name>")


def _compile(data: dict[str, Any], version: str,
             sensitive_uses: tuple[tuple[str, str, str, str], ...] = ()) -> Catalogue:
    slots = {s["id"]: Slot(s["id"], s["channel"], s["neutral"],
                           s.get("expires_minutes", DEFAULT_EXPIRES_MINUTES) * 60_000,
                           s.get("policy", "bandit"), s.get("reward", "click"))
             for s in data["slots"]}
    actions = {}
    for a in data["actions"]:
        max_age = a.get("max_data_age_hours")
        actions[a["id"]] = Action(
            a["id"], a["kind"], a.get("title", ""), tuple(a["slots"]), bool(a.get("neutral")),
            compile_condition(a["when"]) if "when" in a else None,
            compile_condition(a["exclude"]) if "exclude" in a else None,
            tuple(a.get("consent", ())),
            parse_time_ms(a["valid_from"]) if "valid_from" in a else None,
            parse_time_ms(a["valid_until"]) if "valid_until" in a else None,
            int(a.get("freshness_hours", DEFAULT_FRESHNESS_HOURS) * HOUR_MS),
            tuple(a.get("requires", ())),
            int(max_age * HOUR_MS) if max_age is not None else None,
            dict(a.get("params", {})), dict(a.get("params_from", {})),
            reveals_tracking(a), _reveal_limit(a.get("reveal_limit") or data.get("reveal_limit")),
            fields_read(a), gates(a),
        )
    triggers = tuple(
        Trigger(t["id"], t.get("event"),
                (t["segment_entry"]["segmentation"], t["segment_entry"]["segment"])
                if "segment_entry" in t else None,
                tuple(t.get("slots", ())),
                compile_condition(t["when"]) if "when" in t else None,
                After(t["after"]["event"], float(t["after"]["minutes"]),
                      tuple(t["after"].get("unless", ()))) if "after" in t else None,
                tuple(Hop(h["slot"], float(h["after_hours"])) for h in t.get("cascade") or ()))
        for t in data["triggers"]
    )
    caps = {}
    for channel, c in (data.get("caps") or {}).items():
        quiet = c.get("quiet_hours")
        caps[channel] = Cap(c.get("per_day"),
                            (_minutes(quiet[0]), _minutes(quiet[1])) if quiet else None)
    return Catalogue(
        slots, actions, triggers, caps, tuple(data.get("experiments") or ()),
        data.get("context", DEFAULT_CONTEXT), data.get("history", DEFAULT_HISTORY), version,
        sensitive_uses,
    )


def parse_catalogue(data: Any, *, activity_days: int = 30,
                    event_types: Collection[str] | None = None,
                    source: str = "catalogue", text: bytes | None = None) -> Catalogue:
    """Check and compile a parsed catalogue; raises ConfigError listing every problem, each
    with its item's id and, given the ``text`` it was read from, its line."""
    check = _checked(data, activity_days, event_types)
    problems = check.problems
    lines = line_map(text) if text is not None else {}
    if problems:
        if text is not None:  # read from a file: say where in it, for the person editing it
            problems = place_problems(problems, data, lines, "id")
        listed = "\n".join(f"  {p}" for p in problems)
        raise ConfigError(f"{source}: {len(problems)} problem{'s' if len(problems) > 1 else ''}"
                          f" in the decision catalogue:\n{listed}")
    version = hashlib.blake2b(orjson.dumps(data, option=orjson.OPT_SORT_KEYS),
                              digest_size=6).hexdigest()
    return _compile(data, f"catalogue-{version}", check.sensitive.uses(data, lines, "id"))


def load_catalogue(path: str | Path, *, activity_days: int = 30,
                   event_types: Collection[str] | None = None) -> Catalogue:
    """Read, check and compile a catalogue file; raises ConfigError listing every problem."""
    path = Path(path)
    raw = read_bytes(path, "the decision catalogue")
    return parse_catalogue(parse_document(path, raw), activity_days=activity_days,
                           event_types=event_types, source=str(path), text=raw)


class CatalogueFile(WatchedFile[Catalogue]):
    """The catalogue in force: the first load raises (a worker does not start on a broken
    catalogue); later edits are checked the same way, and a broken one keeps the previous
    catalogue (logged once, kept in ``last_error``) until a valid version is saved."""

    what = "decision catalogue"

    def __init__(self, path: str | Path, check_every_s: float = 2.0, *,
                 activity_days: int = 30, **kwargs: Any) -> None:
        self.activity_days = activity_days
        super().__init__(path, check_every_s, **kwargs)

    def _load(self) -> Catalogue:
        return load_catalogue(self.path, activity_days=self.activity_days)

    def _summary(self, value: Catalogue) -> str:
        return (f"{len(value.slots)} slot(s), {len(value.actions)} action(s), "
                f"{len(value.triggers)} trigger(s), {value.version}")


def describe(cat: Catalogue, source: str | Path) -> str:
    """What a catalogue holds, for people (``streamproc catalogue``)."""
    lines = [f"{source}: valid ({cat.version})", "", f"slots ({len(cat.slots)}):"]
    for slot in cat.slots.values():
        lines.append(f"  {slot.id:<20} {slot.channel:<12} neutral {slot.neutral}, valid "
                     f"{slot.expires_ms // 60_000} min, picked by {slot.policy}, rewarded by "
                     f"{slot.reward}")
    lines += ["", f"actions ({len(cat.actions)}):"]
    for a in cat.actions.values():
        what = "neutral" if a.neutral else (
            f"fresh {a.freshness_ms / HOUR_MS:g} h" + (", excludes" if a.exclude else ""))
        if a.trust:
            least = dict.fromkeys(source for _, source in a.trust)
            what += f", data trusted from {' / '.join(least)} up"
        if a.reveals_tracking:
            what += (f", reveals tracking: at most {a.reveal_limit.max} in "
                     f"{a.reveal_limit.per_days:g} days")
        lines.append(f"  {a.id:<24} {a.kind:<8} {', '.join(a.slots)} ({what})")
    lines += ["", f"triggers ({len(cat.triggers)}):"]
    for t in cat.triggers:
        on = (f"event {t.event}" if t.event else
              f"entering {t.segment_entry[0]} {t.segment_entry[1]}" if t.segment_entry else
              f"{t.after.minutes:g} min after {t.after.event}"
              + (f" unless {', '.join(t.after.unless)}" if t.after.unless else "")
              if t.after else "")
        then = "".join(f", then {h.slot} after {h.after_hours:g} h" for h in t.cascade)
        lines.append(f"  {t.id:<20} {on} -> {', '.join(t.slots) or 'the requested slot'}{then}")
    lines += ["", "caps:"]
    for channel, cap in cat.caps.items():
        quiet = (f", quiet {cap.quiet_hours[0] // 60:02d}:{cap.quiet_hours[0] % 60:02d}-"
                 f"{cap.quiet_hours[1] // 60:02d}:{cap.quiet_hours[1] % 60:02d}"
                 if cap.quiet_hours else "")
        per_day = f"{cap.per_day} a day" if cap.per_day is not None else "no daily cap"
        lines.append(f"  {channel:<12} {per_day}{quiet} (customer's local time)")
    lines += ["", f"experiments ({len(cat.experiments)}):"]
    for e in cat.experiments:
        arms = ", ".join(f"{a['id']} {a['share']:.0%} ({a['policy']})" for a in e["arms"])
        lines.append(f"  {e['id']:<20} {', '.join(e['slots'])}: control "
                     f"{e.get('control_share', 0.1):.0%}, then {arms}")
    lines.append(describe_uses(cat.sensitive_uses))
    return "\n".join(lines)

