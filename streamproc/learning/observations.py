"""Records of the learning topic: what the scoring workers tell the learner.

Six kinds, JSON objects; a worker publishes the observations of one batch as one record, a JSON
array of them (:func:`pack_batch`: one record instead of one per event), and the learner reads
either form (:func:`parse_all`):

* ``score``: a browsing event was scored (at a session's start, ``b`` also carries the
  customer's behaviour vector, for the behaviour clusters). ``x`` holds the intent features as
  a list in :data:`FEATURE_NAMES` order (``intent_features`` rounds them to 3 or 4 decimals,
  which keeps the JSON short), tagged ``f`` = :data:`FEATURES_ID` (a learner drops
  observations of another feature set, e.g. during an upgrade), ``p`` the score given, ``v``
  the model version that gave it;
* ``purchase``: a purchase, with its event time and, for the lifetime-value model, the
  customer's RFM summary (``rfm``: frequency, recency, T in days), ``orders`` and ``total``
  after it;
* ``expect`` and ``reward``: the decision engine's lessons for the learning bandit
  (:class:`~streamproc.decisions.engine.Lesson`): a learning pick was made (``decision_id``,
  ``action_id``, ``context``, ``decided_ms`` its event time), or feedback rewarded one
  (the same, and ``reward`` in [0, 1], or an amount with ``revenue: true``); an ``expect`` of a
  learning pick also carries its context features (``cx``, tagged ``cf``) for the contextual
  policy. :func:`lesson_record` writes them; the observation's
  ``lesson`` gives the Lesson back;
* ``erase``: the customer was erased (:func:`erase_record`): the learner forgets what it holds
  of them (pending moments and purchases, :meth:`~streamproc.models.join.LabelJoin.forget`);
* ``alias``: an identifier was merged into the customer ``to`` (:func:`alias_record`,
  docs/identity.md): its pending moments and purchases become the customer's
  (:meth:`~streamproc.models.join.LabelJoin.rename`).

All carry the id and time of the event that caused them (the learner ignores a second score or
purchase observation of one event, and a second lesson of one kind for one decision: a
redelivered batch publishes its observations again) and the triggering event's ``trigger``
(topic, partition, offset), which is how the processor's outbox finds them again on a
redelivery.

>>> x = dict.fromkeys(FEATURE_NAMES, 0.5)
>>> record = score_record("c1", "e1", 60_000, x, 0.25, 3, {"topic": "b", "partition": 0,
...                                                            "offset": 7})
>>> obs = parse(orjson.dumps(record))
>>> obs.kind, obs.customer_id, obs.ts_ms, obs.score, obs.version, obs.features == x
('score', 'c1', 60000, 0.25, 3, True)
>>> obs.source
'b:0'
>>> parse(b'{"kind": "score"}')
Traceback (most recent call last):
...
streamproc.learning.observations.ObservationError: not a learning record: missing or bad customer_id
"""

from __future__ import annotations

import hashlib
import operator
from typing import Any, NamedTuple

import orjson

from streamproc.decisions.contextual import FEATURE_NAMES as CONTEXT_FEATURES
from streamproc.decisions.engine import Lesson
from streamproc.errors import StreamprocError
from streamproc.models.features import INTENT_NAMES

FEATURE_NAMES: tuple[str, ...] = tuple(sorted(INTENT_NAMES))
# intent_values (INTENT_NAMES order) -> the record's x (FEATURE_NAMES order), in one C call.
_IN_RECORD_ORDER = operator.itemgetter(*(INTENT_NAMES.index(n) for n in FEATURE_NAMES))
# Order lines an observation carries for the item relations (an order's first ones).
MAX_LINES = 50
FEATURES_ID = hashlib.blake2b(",".join(FEATURE_NAMES).encode(), digest_size=4).hexdigest()
# The contextual policy's feature set, tagged the same way (``cf``, with ``cx`` the values).
CONTEXT_FEATURES_ID = hashlib.blake2b(",".join(CONTEXT_FEATURES).encode(),
                                      digest_size=4).hexdigest()


class ObservationError(StreamprocError):
    """A learning-topic record that cannot be read."""


class Observation(NamedTuple):
    kind: str  # "score", "purchase", "expect", "reward", "erase" or "alias"
    customer_id: str
    event_id: str
    ts_ms: int
    features: dict[str, float] | None = None  # None: a purchase, or another feature set
    score: float | None = None
    version: int = 0
    source: str = ""  # "topic:partition" the event was read from (the learner's watermark)
    # A purchase's RFM summary, orders and total after it (None when absent or unreadable).
    rfm: dict[str, float] | None = None
    orders: int = 0
    total: float = 0.0
    # A session start's behaviour vector, for the behaviour clusters.
    behaviour: dict[str, float] | None = None
    # An expect or reward: the lesson for the learning bandit.
    lesson: Lesson | None = None
    # A product view or cart add: (product id, category, a cart add?), for the item relations.
    item: tuple[str, str, bool] | None = None
    # A purchase: its lines' (product id, category), for the item relations.
    lines: tuple[tuple[str, str], ...] = ()
    # An alias: the customer the identifier (customer_id) was merged into (docs/identity.md).
    to: str = ""


def read_from(message: Any) -> dict[str, Any]:
    """An observation's ``trigger``: where the Kafka ``message`` of its event was read from."""
    return {"topic": message.topic, "partition": message.partition, "offset": message.offset}


def score_record(customer_id: str, event_id: str, ts_ms: int,
                 x: dict[str, float] | tuple[float, ...], score: float, version: int,
                 trigger: dict[str, Any], behaviour: dict[str, float] | None = None,
                 item: tuple[str, str, bool] | None = None) -> dict[str, Any]:
    """A ``score`` observation of the features ``x``: by name (a missing one is 0), or the
    tuple of ``intent_values`` (the scorer's); ``item`` (product id, category, a cart add?) for
    a product view or cart add, ``i`` in the record."""
    values = (list(_IN_RECORD_ORDER(x)) if isinstance(x, tuple)
              else [x.get(n, 0.0) for n in FEATURE_NAMES])
    record = {"kind": "score", "customer_id": customer_id, "event_id": event_id,
              "ts_ms": ts_ms, "f": FEATURES_ID, "x": values,
              "p": score, "v": version, "trigger": trigger}
    if behaviour is not None:
        record["b"] = behaviour
    if item is not None:
        record["i"] = [item[0], item[1], 1 if item[2] else 0]
    return record


def purchase_record(customer_id: str, event_id: str, ts_ms: int, trigger: dict[str, Any],
                    rfm: dict[str, Any] | None = None, orders: int = 0,
                    total: float = 0.0,
                    lines: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """A ``purchase`` observation; ``lines`` (product id, category) of the order, ``items`` in
    the record (at most :data:`MAX_LINES`)."""
    record = {"kind": "purchase", "customer_id": customer_id, "event_id": event_id,
              "ts_ms": ts_ms, "trigger": trigger}
    if rfm is not None:
        record.update(rfm={k: rfm[k] for k in ("frequency", "recency", "T")}, orders=orders,
                      total=total)
    if lines:
        record["items"] = [list(line) for line in lines[:MAX_LINES]]
    return record


def _product(value: Any) -> bool:
    """A (product id, category) pair as the schemas bound them."""
    return (isinstance(value, list) and len(value) >= 2 and isinstance(value[0], str)
            and isinstance(value[1], str) and 0 < len(value[0]) <= 64
            and 0 < len(value[1]) <= 100)


def _item(record: dict[str, Any]) -> tuple[str, str, bool] | None:
    i = record.get("i")
    if not isinstance(i, list) or not _product(i):
        return None
    return (i[0], i[1], bool(i[2] if len(i) > 2 else 0))


def _lines(record: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    items = record.get("items")
    if not isinstance(items, list):
        return ()
    return tuple((line[0], line[1]) for line in items[:MAX_LINES] if _product(line))


def lesson_record(customer_id: str, event_id: str, ts_ms: int, lesson: Lesson,
                  trigger: dict[str, Any]) -> dict[str, Any]:
    """An ``expect`` or ``reward`` observation of the event ``event_id`` at ``ts_ms``.

    >>> le = Lesson("reward", "d1", "cart_reminder", "cart_drawer:new", 5, 1.0)
    >>> obs = parse(orjson.dumps(lesson_record("c1", "e9", 70, le, {"topic": "f",
    ...                                                               "partition": 2})))
    >>> obs.kind, obs.ts_ms, obs.source, obs.lesson == le
    ('reward', 70, 'f:2', True)
    >>> x = (1.0,) + (0.0,) * (len(CONTEXT_FEATURES) - 1)
    >>> le = Lesson("expect", "d1", "cart_reminder", "cart_drawer:new", 5, features=x)
    >>> parse(orjson.dumps(lesson_record("c1", "e9", 70, le, {}))).lesson == le
    True
    """
    record = {"kind": lesson.kind, "customer_id": customer_id, "event_id": event_id,
              "ts_ms": ts_ms, "decision_id": lesson.decision_id, "action_id": lesson.action_id,
              "context": lesson.context, "decided_ms": lesson.ts_ms, "trigger": trigger}
    if lesson.kind == "reward":
        record["reward"] = lesson.reward
        if lesson.revenue:
            record["revenue"] = True
    if lesson.features is not None:
        record["cf"], record["cx"] = CONTEXT_FEATURES_ID, list(lesson.features)
    return record


def erase_record(customer_id: str, event_id: str, ts_ms: int,
                 trigger: dict[str, Any] | None) -> dict[str, Any]:
    """The customer was erased, by the event ``event_id`` (its ``trigger``) or by ``streamproc
    forget`` (no trigger): the learner forgets them.

    >>> obs = parse(orjson.dumps(erase_record("c1", "e5", 90, {"topic": "p", "partition": 1})))
    >>> obs.kind, obs.customer_id, obs.source
    ('erase', 'c1', 'p:1')
    >>> parse(orjson.dumps(erase_record("c1", "forget-1", 90, None))).source
    ''
    """
    record = {"kind": "erase", "customer_id": customer_id, "event_id": event_id,
              "ts_ms": ts_ms}
    if trigger is not None:
        record["trigger"] = trigger
    return record


def _field(record: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = record.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ObservationError(f"not a learning record: missing or bad {name}")
    return value


def parse(value: bytes | None) -> Observation:
    """One observation, as JSON; ObservationError when it is not one."""
    try:
        record = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise ObservationError(f"not a learning record: not JSON ({exc})") from None
    return observation(record)


def parse_all(value: bytes | None) -> list[Observation | ObservationError]:
    """A learning-topic record: one observation (a JSON object) or a worker's batch of them (a
    JSON array, see :func:`pack_batch`); each is an Observation or the error that makes it
    unreadable, in order.

    >>> one = orjson.dumps(purchase_record("c1", "e1", 5, {"topic": "b", "partition": 0}))
    >>> [o.event_id for o in parse_all(pack_batch([one, one]))]
    ['e1', 'e1']
    >>> [type(o).__name__ for o in parse_all(b'[{"kind": "score"}, 7]')]
    ['ObservationError', 'ObservationError']
    """
    try:
        records = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        return [ObservationError(f"not a learning record: not JSON ({exc})")]
    found: list[Observation | ObservationError] = []
    for record in records if isinstance(records, list) else [records]:
        try:
            found.append(observation(record))
        except ObservationError as exc:
            found.append(exc)
    return found


def pack_batch(values: list[bytes]) -> bytes:
    """Observations (JSON objects) as one learning-topic record: a JSON array."""
    return b"[" + b",".join(values) + b"]"


def alias_record(customer_id: str, event_id: str, ts_ms: int, to: str,
                 trigger: dict[str, Any]) -> dict[str, Any]:
    """The identifier ``customer_id`` was merged into the customer ``to`` by the identify
    event ``event_id`` (docs/identity.md): the learner's pending moments and purchases of the
    identifier become the customer's, so a purchase after login labels the moments before it.

    >>> obs = parse(orjson.dumps(alias_record("anon-1", "e5", 90, "c1", {"topic": "p",
    ...                                                                  "partition": 1})))
    >>> obs.kind, obs.customer_id, obs.to, obs.source
    ('alias', 'anon-1', 'c1', 'p:1')
    """
    return {"kind": "alias", "customer_id": customer_id, "event_id": event_id, "ts_ms": ts_ms,
            "to": to, "trigger": trigger}


def observation(record: Any) -> Observation:
    """An observation from its decoded JSON; ObservationError when it is not one."""
    if not isinstance(record, dict):
        raise ObservationError("not a learning record: not a JSON object")
    kind = record.get("kind")
    customer_id = _field(record, "customer_id", str)
    event_id = _field(record, "event_id", str)
    ts_ms = _field(record, "ts_ms", int)
    trigger = record.get("trigger")
    source = (f"{trigger.get('topic')}:{trigger.get('partition')}"
              if isinstance(trigger, dict) else "")
    if kind == "purchase":
        rfm, orders, total = record.get("rfm"), record.get("orders"), record.get("total")
        lines = _lines(record)
        if not (isinstance(rfm, dict) and isinstance(orders, int)
                and isinstance(total, int | float)
                and all(isinstance(rfm.get(k), int | float) for k in ("frequency", "recency",
                                                                        "T"))):
            return Observation(kind, customer_id, event_id, ts_ms, source=source, lines=lines)
        return Observation(kind, customer_id, event_id, ts_ms, source=source, rfm=rfm,
                           orders=orders, total=float(total), lines=lines)
    if kind == "erase":
        return Observation(kind, customer_id, event_id, ts_ms, source=source)
    if kind == "alias":
        return Observation(kind, customer_id, event_id, ts_ms, source=source,
                           to=_field(record, "to", str))
    if kind in ("expect", "reward"):
        reward = _field(record, "reward", (int, float)) if kind == "reward" else 0.0
        cx = record.get("cx")
        context = (tuple(float(v) for v in cx) if record.get("cf") == CONTEXT_FEATURES_ID
                    and isinstance(cx, list) and len(cx) == len(CONTEXT_FEATURES)
                    and all(isinstance(v, int | float) for v in cx) else None)
        lesson = Lesson(kind, _field(record, "decision_id", str),
                        _field(record, "action_id", str), _field(record, "context", str),
                        _field(record, "decided_ms", int), float(reward), context,
                        record.get("revenue") is True)
        return Observation(kind, customer_id, event_id, ts_ms, source=source, lesson=lesson)
    if kind != "score":
        raise ObservationError(f"not a learning record: unknown kind {kind!r}")
    score = _field(record, "p", (int, float))
    version = _field(record, "v", int)
    b = record.get("b")
    behaviour = b if isinstance(b, dict) and all(
        isinstance(v, int | float) for v in b.values()) else None
    values = _field(record, "x", list)
    item = _item(record)
    if record.get("f") != FEATURES_ID or len(values) != len(FEATURE_NAMES):
        return Observation(kind, customer_id, event_id, ts_ms, None, float(score), version,
                           source, behaviour=behaviour, item=item)
    features = dict(zip(FEATURE_NAMES, map(float, values), strict=True))
    return Observation(kind, customer_id, event_id, ts_ms, features, float(score), version,
                       source, behaviour=behaviour, item=item)
