"""Every Redis key streamproc writes, in one place.

A customer's keys share the hash tag ``{customer_id}`` so they live in one Redis Cluster slot:
one customer's update is a single-slot, atomic operation, and all of a customer's keys can be
listed (right of access) and deleted (erasure) together.
"""

from __future__ import annotations

import binascii
import datetime
import functools
import re

from streamproc.errors import StreamprocError

# The same pattern as schemas/events/common.schema.json: no braces (they would break the hash
# tag), no spaces, no glob characters, bounded length.
CUSTOMER_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


class InvalidIdentifierError(StreamprocError):
    """A customer id that is not safe to use in a Redis key."""


def validate_customer_id(customer_id: str) -> str:
    if not isinstance(customer_id, str) or not CUSTOMER_ID.fullmatch(customer_id):
        raise InvalidIdentifierError(
            f"invalid customer id {str(customer_id)[:140]!r}: use 1 to 128 letters, digits "
            "or . _ : @ -"
        )
    return customer_id


def region_key(region: str) -> str:
    """The hash of a region's current context (streamproc.state.regions): weather,
    temperature_c, place and the report's event time ts_ms. ``region`` is a validated region id
    (no braces): the key has a slot of its own, never the slot of a customer.

    >>> region_key("city:london"), REGIONS_KEY
    ('sp:region:{city:london}:context', 'sp:regions')
    """
    if not isinstance(region, str) or not CUSTOMER_ID.fullmatch(region):
        raise InvalidIdentifierError(f"invalid region id {str(region)[:80]!r}")
    return f"sp:region:{{{region}}}:context"


# The set of the region ids with a context (read to refresh every region's; an id whose key
# expired is removed from it by the next read).
REGIONS_KEY = "sp:regions"


# Histograms over all customers, one per RFM dimension, read to score customers against the
# whole base: last purchase day, repeat purchase days, average order value bucket.
HISTOGRAMS = ("last_purchase_day", "frequency", "monetary")


# The bucket edges' version (streamproc.segments.quantiles.BUCKETS_VERSION): new edges start
# new histograms instead of mixing two bucketings.
HISTOGRAM_VERSION = 1


def histogram_key(name: str) -> str:
    return f"sp:rfm:hist:v{HISTOGRAM_VERSION}:{name}"


def customer_key(customer_id: str) -> str:
    """The hash holding a customer's state document, its version and its decision outbox."""
    return f"sp:{{{validate_customer_id(customer_id)}}}:state"


def latest_decisions_key(customer_id: str) -> str:
    """The hash of a customer's latest decision per slot (field = slot, value = the decision
    record as JSON), for websites to read directly (:mod:`streamproc.decisions.latest`)."""
    return f"sp:{{{validate_customer_id(customer_id)}}}:decisions"


def timer_index_key(app_id: str, partition: int) -> str:
    """The sorted set of the timers armed by events of input partition ``partition``: members
    ``<customer id>|<timer name>|<due ms>``, scored by the due time
    (:mod:`streamproc.decisions.timers`). Per app id and partition number, with the partition's
    watermark in the same hash slot.

    >>> timer_index_key("streamproc", 3), timer_watermark_key("streamproc", 3)
    ('sp:timers:{streamproc:3}:due', 'sp:timers:{streamproc:3}:wm')
    """
    return f"sp:timers:{{{validate_name('app id', app_id)}:{int(partition)}}}:due"


def timer_watermark_key(app_id: str, partition: int) -> str:
    """The latest event time (ms) seen on partition ``partition`` of any input topic."""
    return f"sp:timers:{{{validate_name('app id', app_id)}:{int(partition)}}}:wm"


# The key of the erasure suppression records' keyed hash (streamproc.state.erasure): 32 random
# bytes, made once, never expiring.
ERASURE_KEY = "sp:erasure:key"


def erased_key(token: str, tag: str | None = None) -> str:
    """An erased customer's suppression record, named by the keyed hash of their id (never the
    id itself): the erasure's time, until STREAMPROC_ERASURE_SUPPRESS_DAYS after it.

    On Redis Cluster ``tag`` is the customer's :func:`slot_tag`, so that the record is in the
    customer's slot (the compare-and-set reads it); it tells the slot (one of 16,384), not the
    id. A single Redis keeps the untagged name of earlier releases.

    >>> erased_key("ab12"), erased_key("ab12", slot_tag(customer_slot("c-1")))
    ('sp:erased:ab12', 'sp:erased:{ee18}:ab12')
    """
    return f"sp:erased:{token}" if tag is None else f"sp:erased:{{{tag}}}:{token}"


# Redis Cluster: the slot of a key is CRC16 (XModem: binascii.crc_hqx from 0) of its hash tag
# (the text between the first '{' and the next '}', when not empty) or of the whole key, modulo
# 16,384 (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/).
SLOTS = 16_384


def key_slot(key: str | bytes) -> int:
    """The Redis Cluster slot of ``key``.

    >>> key_slot("foo"), key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    (12182, True)
    """
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    return binascii.crc_hqx(data, 0) % SLOTS


@functools.cache
def _slot_tags() -> tuple[str, ...]:
    # The shortest lower-case hex strings, one per slot: about 170,000 CRCs, once per process.
    tags: list[str | None] = [None] * SLOTS
    missing, n = SLOTS, 0
    while missing:
        text = f"{n:x}"
        slot = binascii.crc_hqx(text.encode(), 0) % SLOTS
        if tags[slot] is None:
            tags[slot] = text
            missing -= 1
        n += 1
    return tuple(t for t in tags if t is not None)


def slot_tag(slot: int) -> str:
    """A short hash tag whose keys land in ``slot``: per-slot keys (the aggregate log below,
    suppression records) live in the slot of the customers they serve.

    >>> key_slot("{" + slot_tag(12182) + "}")
    12182
    """
    return _slot_tags()[slot]


def customer_slot(customer_id: str) -> int:
    """The slot of every key of the customer (their hash tag is the id)."""
    return binascii.crc_hqx(customer_id.encode(), 0) % SLOTS


def aggregate_log_key(slot: int) -> str:
    """Redis Cluster: the list of one slot's pending aggregate updates (histograms, KPI
    counters, timer index entries), written by the customers' compare-and-set in their own
    slot and folded into the shared keys after it (:meth:`streamproc.state.store.RedisStore.fold`).
    Entries are ``<seq> <JSON list of commands>``; ``seq`` comes from :func:`aggregate_seq_key`.

    >>> aggregate_log_key(12182), key_slot(aggregate_log_key(12182))
    ('sp:agg:{43681}:log', 12182)
    """
    return f"sp:agg:{{{slot_tag(slot)}}}:log"


def aggregate_seq_key(slot: int) -> str:
    """The slot's aggregate update counter: each log entry's sequence number."""
    return f"sp:agg:{{{slot_tag(slot)}}}:seq"


def folded_key(key: str) -> str:
    """The hash beside an aggregate key ``key`` (same slot): per source slot, the last log
    entry folded into the keys of that slot, so that folding twice applies nothing twice.

    >>> folded_key("sp:kpi:{streamproc}:sizes")
    'sp:agg:folded:{streamproc}'
    >>> folded_key("sp:rfm:hist:v1:frequency") == folded_key("{sp:rfm:hist:v1:frequency}")
    True
    """
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    tag = key[start + 1:end] if start >= 0 and end > start + 1 else key
    return f"sp:agg:folded:{{{tag}}}"


def customer_keys(customer_id: str) -> list[str]:
    """Every key that may hold data about a customer (for access and erasure)."""
    return [customer_key(customer_id), latest_decisions_key(customer_id)]


# App ids and worker ids in the workers' heartbeat keys: no ':' (the key's separator), no
# braces or glob characters.
NAME_PART = re.compile(r"[A-Za-z0-9._@-]{1,128}")


def validate_name(kind: str, value: str) -> str:
    """An app id or worker id checked before it goes into a Redis key.

    >>> validate_name("worker id", "host-1.pid-42")
    'host-1.pid-42'
    >>> validate_name("app id", "a*b")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    streamproc.state.keys.InvalidIdentifierError: invalid app id 'a*b': use 1 to 128 ...
    """
    if value.__class__ is str and value in _VALID_NAMES:
        return value
    if not isinstance(value, str) or not NAME_PART.fullmatch(value):
        raise InvalidIdentifierError(
            f"invalid {kind} {str(value)[:140]!r}: use 1 to 128 letters, digits or . _ @ -")
    if len(_VALID_NAMES) < 256:
        _VALID_NAMES.add(value)
    return value


# Names found valid: the same app id goes into most keys of every batch.
_VALID_NAMES: set[str] = set()


def workers_key(app_id: str) -> str:
    """A sorted set of the app's workers, scored by their last heartbeat (epoch ms). The app id
    is the hash tag: the heartbeat updates it and :func:`worker_key` in one MULTI (one slot).

    >>> workers_key("streamproc"), worker_key("streamproc", "w1")
    ('sp:workers:{streamproc}', 'sp:workers:{streamproc}:w1')
    """
    return f"sp:workers:{{{validate_name('app id', app_id)}}}"


def worker_key(app_id: str, worker_id: str) -> str:
    """The hash of one worker's last heartbeat (expires when the worker stops sending)."""
    return f"{workers_key(app_id)}:{validate_name('worker id', worker_id)}"


def model_key(app_id: str, part: str) -> str:
    """A key of the app's model snapshots: ``version``, ``serving`` (the scoring workers'
    models and bandit) or ``learner`` (the learner's state: models, the bandit's open
    expectations, pending labels, learning topic offset).

    Per app id (= consumer group), so two deployments, or two tests, sharing a Redis do not
    serve each other's models.

    >>> model_key("streamproc", "version")
    'sp:model:{streamproc}:version'
    """
    if part not in {"version", "serving", "learner"}:
        raise ValueError(f"unknown model key part {part!r}")
    return f"sp:model:{{{validate_name('app id (STREAMPROC_APP_ID)', app_id)}}}:{part}"


def kpi_day_key(app_id: str, day: int) -> str:
    """The hash of one UTC day's KPI counters (:mod:`streamproc.decisions.kpis`): fields
    ``segmentation:segment|arm|action|kpi``, integer counts. ``day`` is the epoch day.

    >>> kpi_day_key("streamproc", 20_513)
    'sp:kpi:{streamproc}:day:2026-03-01'
    """
    return f"sp:kpi:{{{validate_name('app id', app_id)}}}:day:{_iso_day(day)}"


def kpi_cohort_key(app_id: str, month: int) -> str:
    """The hash of one first-purchase month's retention cohort: fields
    ``segmentation:segment|n``, the customers buying again in month n (0: the cohort's size).
    ``month`` counts months since January 1970.

    >>> kpi_cohort_key("streamproc", 2026 * 12 - 1970 * 12 + 2)
    'sp:kpi:{streamproc}:cohort:2026-03'
    """
    year, month0 = divmod(int(month), 12)
    return f"sp:kpi:{{{validate_name('app id', app_id)}}}:cohort:{1970 + year:04d}-{month0 + 1:02d}"


def kpi_moves_key(app_id: str, day: int) -> str:
    """The hash of one UTC day's segment moves: fields ``segmentation|from|to`` (``-`` for no
    segment), the customers' moves counted by the stream (:mod:`streamproc.decisions.kpis`).

    >>> kpi_moves_key("streamproc", 20_513)
    'sp:kpi:{streamproc}:moves:2026-03-01'
    """
    return f"sp:kpi:{{{validate_name('app id', app_id)}}}:moves:{_iso_day(day)}"


def kpi_sizes_key(app_id: str) -> str:
    """The hash of segment sizes: fields ``segmentation:segment``, customers in it now (every
    move adds one to its destination and takes one from its origin).

    >>> kpi_sizes_key("streamproc")
    'sp:kpi:{streamproc}:sizes'
    """
    return f"sp:kpi:{{{validate_name('app id', app_id)}}}:sizes"


def _iso_day(day: int) -> str:
    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=int(day))).isoformat()
