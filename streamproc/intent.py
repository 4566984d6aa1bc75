"""Purchase intent in the worker: score every browsing event, learn from the labels that follow.

The per-event hook of :class:`~streamproc.processor.Processor` (``scorer=``), in the style of
:class:`~streamproc.segmentation.Segmenter`. On every event of a customer, after the profile
took the event:

* a **browsing** event (page_view, product_view, search, cart_add, cart_remove, checkout) is
  scored: ``x = intent_features(profile, type, ts)``, ``score = model.predict_proba_one(x)``,
  stored as ``profile["scores"] = {"intent": round(score, 4)}`` (read by the ``intent``
  segmentation, cold/warm/hot, and by the decision record), and a *snapshot* ``(ts, score, x)``
  joins the customer's pending labels;
* a **purchase** labels the customer's pending snapshots of the horizon before it
  (``STREAMPROC_INTENT_HORIZON_MINUTES``, event time) **positive**;
* on **any** event, snapshots older than the horizon before the customer's latest event time
  (``last_seen_ms``) are labelled **negative**: no purchase followed them in time.

Exactly once, in effect. The pending snapshots live **in the profile document**
(``pending_labels``), so they are written in the same atomic compare-and-set as the rest of the
customer's state: a snapshot is taken, and labelled, once per event, whatever the redeliveries.
The labels of a customer are learnt (``IntentModel.observe``, scored with the prediction made
when the snapshot was taken) only after that customer's write succeeded; a batch recomputed
after a lost compare-and-set, and a redelivered batch (whose events are skipped by offset),
yield no label twice.

The pending set is small: one snapshot per ``horizon / 5`` of event time (the latest of each
slot stays) and at most :data:`MAX_PENDING` (a horizon spans at most 6 slots, so no snapshot is
dropped before its label is known). Features are stored as a list of values rounded to 4
decimals, in :data:`FEATURE_NAMES` order, tagged with :data:`FEATURES_ID`; snapshots written
with another feature set (an upgrade changed ``intent_features``) are dropped unlabelled.
Measured on the simulator's stream (20,000 events, 796 customers): the stored (zlib) profile
grows from 971 to 1,128 bytes on average (+16 %; JSON 1,985 to 2,438), ``pending_labels``
being about 385 bytes of JSON where present; the in-memory processor path goes from about
18,000 to 9,500 events/s (features, scoring, labels).

Until the model has learnt from :data:`MIN_LABELS` labels it is not trusted to score (an
untrained logistic regression says 0.5 to everybody, "hot"): snapshots are taken but no score
is stored, so customers get no intent segment yet.

Snapshots of the model. With ``STREAMPROC_MODEL_SECRET`` set, the model is written, signed
(:mod:`streamproc.models.snapshot`), to the Redis key :data:`SNAPSHOT_KEY` at most every
``STREAMPROC_MODEL_SNAPSHOT_SECONDS`` (one SET from the batch loop, and one when the worker
stops; a timer of the same period writes what was learnt before the traffic paused), and
loaded before the worker's first batch. A snapshot whose signature does not verify is
refused (never unpickled): the worker logs why and starts from a fresh model. Without a secret
there are no snapshots (a warning at start): a restarted worker starts from scratch.

Limitations (the MVP of the models issue):

* **each worker learns only from its own partitions' customers**, in process, and the model's
  snapshot is one key: with several workers, the last one to write wins and the others' recent
  learning is lost at their next restart. The planned design publishes the labels to a labels
  topic, learnt by one learner whose snapshots every worker loads;
* labels learnt between the last snapshot and a crash (at most one snapshot interval) are lost
  to the model: the state moved on exactly once, the model did not learn from them;
* negatives are labelled on the customer's next event: a customer who never comes back keeps
  their last snapshots pending and teaches nothing (a bias towards returning customers) until a
  timer expires them (a Redis sorted set by ``PendingLabels.due_ms``, not built yet);
* labels assume a customer's events are processed roughly in event-time order. The browsing
  and purchases topics are consumed independently: while a backlog is read (a restart after a
  long stop), one topic can run ahead of the other, so a purchase may be applied before the
  browsing that led to it (that browsing is then scored with the purchase already in the
  profile, and its snapshots expire negative). Measured in memory on 7,500 simulated events:
  processed in event-time order, ROC AUC 0.73; each 2,500-event chunk's browsing before its
  purchases, 0.48 (the integration test, which reads such backlogs, sees about 0.41). How much
  live traffic, consumed nearly in step, suffers is not measured yet; ordering a customer's
  events by event time within a batch, or waiting out a lateness before labelling, would help;
* the score is the one of the customer's last browsing event; a purchase does not re-score.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import redis.asyncio as aioredis

from streamproc.events.codec import Event
from streamproc.models.features import EVENT_TYPES, intent_features
from streamproc.models.intent import IntentModel
from streamproc.models.labels import Labelled, PendingLabels
from streamproc.models.snapshot import SnapshotError, dump, load, verify
from streamproc.segments.config import SegmentConfig
from streamproc.settings import Settings
from streamproc.state.profile import Profile, new_profile

log = logging.getLogger(__name__)

SNAPSHOT_KEY = "sp:model:intent"
BROWSING = frozenset(EVENT_TYPES)
# Snapshot slots per horizon, and the most snapshots a customer keeps pending (see above).
SLOTS_PER_HORIZON = 5
MAX_PENDING = SLOTS_PER_HORIZON + 1
# Labels learnt before the model's scores are stored on profiles.
MIN_LABELS = 200
FEATURE_NAMES: tuple[str, ...] = tuple(sorted(intent_features(new_profile("-"), "page_view", 0)))
FEATURES_ID = hashlib.blake2b(",".join(FEATURE_NAMES).encode(), digest_size=4).hexdigest()


class Blobs(Protocol):
    """Where the model snapshot is kept: a Redis key for real, a dict in unit tests."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes) -> None: ...


class RedisBlobs:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self.client.get(key)
        return value

    async def set(self, key: str, value: bytes) -> None:
        await self.client.set(key, value)


class MemoryBlobs:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.sets = 0

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes) -> None:
        self.sets += 1
        self.data[key] = value


def pack_pending(labels: PendingLabels, customer_id: str) -> dict[str, Any] | None:
    """The customer's pending snapshots as stored in the profile, or None when there are none.

    Values are stored as given (:meth:`IntentScorer.update` rounds them when it takes the
    snapshot, once, rather than here on every event).

    >>> labels = PendingLabels()
    >>> labels.add("c1", 60_000, dict.fromkeys(FEATURE_NAMES, 0.1235), 0.6123)
    >>> packed = pack_pending(labels, "c1")
    >>> packed["f"] == FEATURES_ID, packed["s"][0][:2], packed["s"][0][2][:2]
    (True, [60000, 0.6123], [0.1235, 0.1235])
    >>> unpack_pending(packed)[0][1] == dict.fromkeys(FEATURE_NAMES, 0.1235)
    True
    """
    items = labels.customer_to_list(customer_id)
    if not items:
        return None
    return {
        "f": FEATURES_ID,
        "s": [[ts, score, [x.get(name, 0.0) for name in FEATURE_NAMES]]
              for ts, x, score in items],
    }


def unpack_pending(stored: dict[str, Any] | None) -> list[list[Any]]:
    """``pack_pending``'s output back in ``PendingLabels.load_customer``'s form."""
    if not stored or stored.get("f") != FEATURES_ID:
        return []
    return [[ts, dict(zip(FEATURE_NAMES, values, strict=True)), score]
            for ts, score, values in stored["s"]]


class NoScoring:
    """The processor's default: no scores, no labels, no model."""

    async def refresh(self) -> None:
        return None

    def update(self, p: Profile, event: Event) -> list[Labelled]:
        return []

    def learn(self, labels: Iterable[Labelled]) -> int:
        return 0

    async def checkpoint(self, force: bool = False) -> bool:
        return False


class IntentScorer:
    """Scores browsing events, keeps pending labels in the profile, learns; see the module."""

    def __init__(
        self,
        settings: Settings,
        blobs: Blobs | None = None,
        model: IntentModel | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_labels: int = MIN_LABELS,
    ) -> None:
        config = SegmentConfig()
        self.model = model or IntentModel(thresholds=(config.intent_warm, config.intent_hot))
        self.horizon_ms = settings.intent_horizon_minutes * 60_000
        self.min_gap_ms = max(1, self.horizon_ms // SLOTS_PER_HORIZON)
        self.secret = settings.model_secret.encode()
        self.interval_s = float(settings.model_snapshot_seconds)
        self.blobs = blobs if self.secret else None
        self.clock = clock
        self.min_labels = min_labels
        self.loaded = False
        self.learnt_since_snapshot = 0
        self._next_snapshot = 0.0
        if not self.secret:
            log.warning("STREAMPROC_MODEL_SECRET is not set: the intent model is not "
                        "snapshotted, and starts from scratch whenever the worker starts")

    # -- start and snapshots ----------------------------------------------------------------

    async def refresh(self) -> None:
        """Before the first batch: load the model's snapshot, if there is a trusted one."""
        if self.loaded:
            return
        if self.blobs is not None:
            blob = await self.blobs.get(SNAPSHOT_KEY)  # a Redis error: the batch is retried
            if blob is None:
                log.info("no intent model snapshot in Redis (%s): starting a fresh model",
                         SNAPSHOT_KEY)
            else:
                self._restore(blob)
        self.loaded = True
        self._next_snapshot = self.clock() + self.interval_s

    def _restore(self, blob: bytes) -> None:
        try:
            version, model = load(blob, self.secret)
        except SnapshotError as exc:
            log.error("refusing the intent model snapshot in Redis key %s: %s. Starting from a "
                      "fresh model (check STREAMPROC_MODEL_SECRET: every worker needs the same)",
                      SNAPSHOT_KEY, exc)
            return
        if not isinstance(model, IntentModel):
            log.error("the snapshot in Redis key %s holds a %s, not an IntentModel: starting "
                      "from a fresh model", SNAPSHOT_KEY, type(model).__name__)
            return
        self.model = model
        stats = model.stats()
        log.info("intent model v%d loaded from %s: %d labels learnt, AUC %s", version,
                 SNAPSHOT_KEY, stats["n"], stats["auc"])

    async def checkpoint(self, force: bool = False) -> bool:
        """Write the model's snapshot when one is due (or ``force``) and it learnt since the
        last one. A failed write is logged, never raised: processing goes on."""
        if self.blobs is None or not self.loaded or not self.learnt_since_snapshot:
            return False
        now = self.clock()
        if not force and now < self._next_snapshot:
            return False
        self._next_snapshot = now + self.interval_s
        try:
            blob = dump(self.model, self.secret, self.model.version)
            await self.blobs.set(SNAPSHOT_KEY, blob)
        except Exception as exc:  # a snapshot is an optimisation: never stop the stream for it
            log.warning("could not write the intent model snapshot to %s (%s: %s); retrying "
                        "in %.0fs", SNAPSHOT_KEY, type(exc).__name__, exc, self.interval_s)
            return False
        self.learnt_since_snapshot = 0
        return True

    # -- per event ---------------------------------------------------------------------------

    def update(self, p: Profile, event: Event) -> list[Labelled]:
        """Score a browsing event and label what the event decides; returns the labels.

        Called after ``apply_event``; the labels are to be learnt (:meth:`learn`) only once the
        profile holding the change is saved.
        """
        stored = p.get("pending_labels")
        is_browsing = event.type in BROWSING
        if stored is None and not is_browsing:
            return []
        cid = event.customer_id
        labels = PendingLabels(self.horizon_ms, self.min_gap_ms, MAX_PENDING)
        labels.load_customer(cid, unpack_pending(stored))
        out: list[Labelled] = []
        if event.type == "purchase":
            out.extend(labels.on_purchase(cid, event.ts_ms))
        watermark = max(event.ts_ms, p.get("last_seen_ms") or event.ts_ms)
        out.extend(labels.expire_customer(cid, watermark))
        if is_browsing and event.ts_ms >= watermark - self.horizon_ms:
            x = intent_features(p, event.type, event.ts_ms)
            score = round(self.model.predict_proba_one(x), 4)
            if self.model.n >= self.min_labels:
                p["scores"] = {"intent": score}
            labels.add(cid, event.ts_ms, {k: round(v, 4) for k, v in x.items()}, score)
        packed = pack_pending(labels, cid)
        if packed is None:
            p.pop("pending_labels", None)
        else:
            p["pending_labels"] = packed
        return out

    def learn(self, labels: Iterable[Labelled]) -> int:
        """Learn from labels whose state change is saved; returns how many."""
        n = 0
        for label in labels:
            self.model.observe(label.features, label.label, label.score)
            n += 1
        self.learnt_since_snapshot += n
        return n


def snapshot_stats(blob: bytes, secret: bytes) -> dict[str, Any]:
    """What ``streamproc models`` prints: the snapshot's header and the model's figures.

    Raises SnapshotError when the signature does not verify (nothing is unpickled then).
    """
    header, _ = verify(blob, secret)
    version, model = load(blob, secret)
    if not isinstance(model, IntentModel):
        raise SnapshotError(f"the snapshot holds a {type(model).__name__}, not an IntentModel")
    stats = model.stats()
    return {
        "key": SNAPSHOT_KEY,
        "version": version,
        "created_ms": header.created_ms,
        "bytes": len(blob),
        "n": stats["n"],
        "positives": stats["positives"],
        "negatives": stats["negatives"],
        "auc": stats["auc"],
        "logloss": stats["logloss"],
        "detections": stats["detections"],
        "drifts": stats["drifts"],
        "boosting": stats["boosting"],
    }
