"""The one learner: labels the scoring workers' observations, learns, publishes snapshots.

Design (docs/models.md has the whole picture and its limits). The scoring workers publish
observations (:mod:`streamproc.learning.observations`) to the learning topic, which has **one
partition**. Every worker runs :func:`run_learner`, an aiokafka consumer in the group
``<STREAMPROC_APP_ID>.learner``; Kafka gives the one partition to one member, so exactly one
worker learns at a time, and when it dies (after the session timeout, 10 s) or leaves, another
takes over. The learner:

* joins observations into labels in event time (:class:`~streamproc.models.join.LabelJoin`:
  positive when a purchase follows within ``STREAMPROC_INTENT_HORIZON_MINUTES``, in either
  arrival order; negative when the watermark, the latest event time minus
  ``STREAMPROC_LABEL_LATENESS_SECONDS``, passes the horizon, which also closes the windows of
  customers who never come back);
* learns each label with progressive validation (``IntentModel.observe``: the score the worker
  gave is judged before learning) and ADWIN drift detection (a drift is logged and counted);
* learns the decision engine's bandit from every worker's lessons (``expect`` and ``reward``
  observations, each once: :mod:`streamproc.decisions.lessons`) and closes, as zero rewards,
  the expectations whose ``STREAMPROC_BANDIT_REWARD_WAIT_MINUTES`` ended by its watermark;
* learns the item relations (:class:`~streamproc.models.relations.ItemRelations`: viewed
  together, bought together, viewed then bought) from the products that score and purchase
  observations name, each event once (by its id, like the other models), and reads the product
  feed (the products topic, one partition, :class:`ProductFeed`: stock, category, price,
  margin), both served with the models for recommendations;
* every ``STREAMPROC_MODEL_SNAPSHOT_SECONDS`` or ``STREAMPROC_MODEL_SNAPSHOT_LABELS`` labels,
  and when it loses the partition or stops, publishes a signed snapshot with the next version
  (:mod:`streamproc.learning.modelstore`): the models for the scoring workers (with a serving
  copy of the bandit), and its own state (models, the bandit with its open expectations, pending
  labels, and the offsets of the last observation and product-feed record it consumed).

The source of truth is the topic plus the snapshot. A learner that gets the partition restores
the snapshot and seeks to its offset + 1, so what was learnt after the last snapshot is learnt
again from the topic (same order, same labels: nothing lost, nothing twice), whatever Kafka's
committed offsets say (the consumer never commits). A learner with no snapshot to restore (the
first one, or one without a model secret, or refusing the snapshot) does not read the whole
topic: it starts ``STREAMPROC_LEARNER_REPLAY_HOURS`` back (:func:`replay_window_ms`; 0: from
the start of the topic's retention), so that it learns from recent traffic in minutes rather
than replay months. Without a model secret (``STREAMPROC_MODEL_SECRET``, or the local stack's
file) there are no snapshots: the learner starts over each time it gets the partition, and
hands its model to its own process's scorer only.

:attr:`Learner.lag` is how many records of the learning topic the active learner has yet to
read (the worker's ``streamproc_learner_lag`` metric).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable
from typing import Any

import fastjsonschema
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from streamproc.decisions.bandit import ThompsonChooser
from streamproc.decisions.contextual import ContextualChooser
from streamproc.decisions.lessons import BanditLearner
from streamproc.events.codec import RawMessage, deadletter_record, future_by_ms, parse_ts
from streamproc.events.schemas import load_product_schema
from streamproc.events.violations import explain_violation
from streamproc.kafka_options import kafka_options, producer_options
from streamproc.learning.modelstore import ModelStore
from streamproc.learning.observations import Observation, ObservationError, parse_all
from streamproc.learning.scorer import ServedModels
from streamproc.models.clusters import BehaviourClusters
from streamproc.models.intent import IntentModel
from streamproc.models.join import LabelJoin
from streamproc.models.labels import Labelled
from streamproc.models.ltv import LifetimeValue
from streamproc.models.relations import ItemRelations
from streamproc.models.snapshot import SnapshotError, dump, load
from streamproc.segments.config import SegmentConfig
from streamproc.settings import Settings

log = logging.getLogger(__name__)

POLL_MS = 1000
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
# After an erasure, the longest wait for the snapshot that no longer holds the customer.
ERASED_SNAPSHOT_S = 5.0


def replay_window_ms(replay_hours: int, horizon_ms: int, lateness_ms: int) -> int | None:
    """How far back (record time) a learner with no snapshot starts; None: the topic's start.

    A browsing moment is labelled once the watermark passes it by the horizon plus the
    lateness, so a shorter window would replay nothing that can be labelled: the window is
    never shorter than that. (Labels in the window stay right: a moment's purchases come after
    it, so inside the window; a purchase whose moments came before the window labels nothing.)

    >>> replay_window_ms(24, 30 * 60_000, 300_000) / 3_600_000
    24.0
    >>> replay_window_ms(0, 30 * 60_000, 300_000) is None
    True
    >>> replay_window_ms(1, 90 * 60_000, 300_000) / 60_000  # at least horizon + lateness
    95.0
    """
    if replay_hours <= 0:
        return None
    return max(replay_hours * 3_600_000, horizon_ms + lateness_ms)


class LearnerState:
    """Everything the learner's snapshot holds (pickled, signed)."""

    erased = 0  # customers forgotten (a class default: older snapshots restore with 0)
    future = 0  # observations dated too far after their record, skipped (the same)
    products_offset = -1  # of the last products-topic record applied (the same)
    bad_products = 0  # products-topic records refused (the same)

    def __init__(self, join: LabelJoin, intent: IntentModel,
                 ltv: LifetimeValue | None = None,
                 clusters: BehaviourClusters | None = None,
                 bandit: BanditLearner | None = None,
                 relations: ItemRelations | None = None) -> None:
        self.join = join
        self.relations = relations or ItemRelations()
        self.intent = intent
        self.ltv = ltv or LifetimeValue()
        self.clusters = clusters or BehaviourClusters()
        self.bandit = bandit or BanditLearner(ThompsonChooser())
        self.offset = -1  # of the last learning-topic record applied
        self.observations = 0
        self.unreadable = 0
        self.other_features = 0


class Learner:
    """Applies learning-topic records and snapshots; no Kafka here (see :func:`run_learner`)."""

    def __init__(
        self,
        settings: Settings,
        models: ModelStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_publish: Callable[[ServedModels, int, int], None] | None = None,
    ) -> None:
        self.horizon_ms = settings.intent_horizon_minutes * 60_000
        self.lateness_ms = settings.label_lateness_seconds * 1000
        self.idle_ms = settings.label_idle_seconds * 1000
        self.bandit_exploration = settings.bandit_exploration
        self.bandit_wait_ms = settings.bandit_reward_wait_minutes * 60_000
        self.settings = settings
        topics = settings.topics
        self.sources = [f"{t}:{p}" for t in (topics.browsing, topics.purchases)
                        for p in range(settings.partitions)]
        self.secret = settings.model_secret.encode()
        self.models = models if self.secret else None
        self.replay_ms = replay_window_ms(settings.learner_replay_hours, self.horizon_ms,
                                          self.lateness_ms)
        self.interval_s = float(settings.model_snapshot_seconds)
        self.every_labels = settings.model_snapshot_labels
        self.max_future_skew_ms = settings.max_future_skew_s * 1000
        self.product_schema = load_product_schema()
        self.clock = clock
        self.on_publish = on_publish
        self.state = self.fresh_state()
        self.version = 0
        self.learnt_since_snapshot = 0
        self.snapshot_offset = -1  # the learning-topic offset the last snapshot covers
        self.snapshot_feed_offset = -1  # and the products-topic offset (the product feed)
        self.active = False
        self.stale = False  # another learner published a newer snapshot: restore before going on
        self._next_snapshot = 0.0
        # The next learning-topic offset to read, and the topic's end as of the last fetch.
        self.position = 0
        self.topic_end: int | None = None
        # Where the product feed is to be read from next (set on taking over), None: read on.
        self.feed_seek: int | None = None
        # The reason and error of the last product-feed record refused (for its dead letter).
        self.last_refusal = ("", "")

    def fresh_state(self) -> LearnerState:
        config = SegmentConfig()
        return LearnerState(LabelJoin(self.horizon_ms, self.lateness_ms, self.idle_ms,
                                      sources=self.sources),
                            IntentModel(thresholds=(config.intent_warm, config.intent_hot)),
                            bandit=BanditLearner(ThompsonChooser(self.bandit_exploration,
                                                                 self.bandit_wait_ms),
                                                 ContextualChooser.from_settings(self.settings)))

    # -- taking over ---------------------------------------------------------------------------

    async def restore(self) -> int:
        """Load the latest snapshot (if any, if trusted); returns the offset to consume from,
        -1 when there is none (:func:`seek_restored` then starts the replay window back).
        Redis errors propagate (the caller retries)."""
        self.state = self.fresh_state()
        self.version = 0
        self.learnt_since_snapshot = 0
        self.snapshot_offset = -1
        self.snapshot_feed_offset = -1
        self.stale = False
        self._next_snapshot = self.clock() + self.interval_s
        self.feed_seek = 0
        if self.models is None:
            return -1
        self.version = await self.models.version()
        blob = await self.models.get("learner")
        if blob is None:
            log.info("learner: no snapshot in Redis, learning from the learning topic anew")
            return -1
        try:
            version, state = load(blob, self.secret)
            if not isinstance(state, LearnerState):
                raise SnapshotError(f"it holds a {type(state).__name__}, not a LearnerState")
        except SnapshotError as exc:
            log.error("learner: refusing the snapshot in Redis (%s); learning anew from the "
                      "topic (check STREAMPROC_MODEL_SECRET, or the stack's model-secret file: "
                      "every worker needs the same)", exc)
            return -1
        if (state.join.horizon_ms, state.join.lateness_ms) != (self.horizon_ms, self.lateness_ms):
            log.warning("learner: the snapshot's label horizon/lateness (%d/%d ms) differ from "
                        "the settings (%d/%d ms); keeping the snapshot's for its pending labels",
                        state.join.horizon_ms, state.join.lateness_ms, self.horizon_ms,
                        self.lateness_ms)
        if not hasattr(state, "bandit"):  # a snapshot of a version before the shared bandit
            state.bandit = self.fresh_state().bandit
        if not hasattr(state, "relations"):  # a snapshot of a version before item relations
            state.relations = ItemRelations()
        # The current settings for what comes (expectations already open keep their deadline).
        state.bandit.chooser.exploration = self.bandit_exploration
        state.bandit.chooser.reward_wait_ms = self.bandit_wait_ms
        fresh = self.fresh_state().bandit
        if not hasattr(state.bandit, "contextual"):  # before the contextual policy
            state.bandit.contextual, state.bandit.revenue = fresh.contextual, fresh.revenue
        contextual = state.bandit.contextual
        contextual.exploration = fresh.contextual.exploration
        contextual.alpha = fresh.contextual.alpha
        contextual.min_outcomes = fresh.contextual.min_outcomes
        contextual.reward_wait_ms = self.bandit_wait_ms
        self.state = state
        self.snapshot_offset = state.offset
        self.snapshot_feed_offset = state.products_offset
        self.feed_seek = state.products_offset + 1
        self.version = max(self.version, version)
        log.info("learner: model v%d restored: %d labels learnt, AUC %s, bandit %d outcomes "
                 "(%d awaiting their reward); continuing the learning topic after offset %d",
                 version, state.intent.n, state.intent.stats()["auc"],
                 state.bandit.chooser.updates, state.bandit.chooser.pending, state.offset)
        return state.offset + 1

    # -- per record ----------------------------------------------------------------------------

    def apply(self, offset: int, value: bytes | None, timestamp_ms: int | None = None) -> int:
        """One learning-topic record; returns the labels learnt. Never raises.

        An observation dated more than ``STREAMPROC_MAX_FUTURE_SKEW_S`` after the record's
        Kafka ``timestamp_ms`` is skipped: it would move the label watermark (and the bandit's
        reward clock) for every customer. The workers dead-letter such events before they
        observe them; this guards against any other writer of the learning topic."""
        state = self.state
        self.position = max(self.position, offset + 1)
        if offset <= state.offset:
            return 0  # learnt before the snapshot this learner restored
        state.offset = offset
        learnt = 0
        for obs in parse_all(value):
            if isinstance(obs, ObservationError):
                state.unreadable += 1
                log.error("learner: skipping an observation of the learning-topic record at "
                          "offset %d: %s", offset, obs)
            elif future_by_ms(obs.ts_ms, timestamp_ms, self.max_future_skew_ms):
                state.future += 1
                log.error("learner: skipping a %s observation of %s at offset %d dated %d ms "
                          "after its record (STREAMPROC_MAX_FUTURE_SKEW_S)", obs.kind,
                          obs.customer_id, offset, obs.ts_ms - (timestamp_ms or 0))
            else:
                learnt += self.observe(obs)
        state.bandit.advance(state.join.watermark)
        return learnt

    def observe(self, obs: Observation) -> int:
        """One observation; returns the labels learnt."""
        state = self.state
        state.observations += 1
        join = state.join
        if obs.lesson is not None:
            state.bandit.apply(obs.lesson, join.watermark)
            return 0
        if obs.kind == "alias":  # an identifier merged into a customer: its moments follow
            join.rename(obs.customer_id, obs.to)
            return 0
        if obs.kind == "erase":
            join.forget(obs.customer_id)
            state.relations.forget(obs.customer_id, until_ms=obs.ts_ms)
            state.erased += 1
            # The snapshot in Redis still holds them: the next one is due within seconds.
            self._next_snapshot = min(self._next_snapshot, self.clock() + ERASED_SNAPSHOT_S)
            return 0
        fresh = obs.event_id not in join.seen  # a copy (redelivered batch) is learnt once
        labels: list[Labelled] = []
        if obs.kind == "purchase":
            labels = join.purchase(obs.customer_id, obs.event_id, obs.ts_ms, obs.source)
            if fresh and obs.rfm is not None:
                # One call per purchase day would let frequent buyers dominate the population
                # moments: each customer's calls weigh 1 in total over their purchase days.
                state.ltv.learn_one(obs.rfm, obs.total, obs.orders,
                                    weight=1.0 / (1.0 + obs.rfm["frequency"]))
        elif obs.features is None:
            state.other_features += 1
        else:
            labels = join.snapshot(obs.customer_id, obs.event_id, obs.ts_ms, obs.features,
                                   obs.score, obs.source)
        if fresh and obs.behaviour is not None:
            state.clusters.learn_one(obs.behaviour)
        if fresh and obs.event_id in join.seen:  # counted once: a copy finds its id seen
            if obs.item is not None:
                state.relations.view(obs.customer_id, obs.item[0], obs.item[1], obs.ts_ms,
                                     cart=obs.item[2])
            elif obs.lines:
                state.relations.purchase(obs.customer_id, list(obs.lines), obs.ts_ms)
        return self.learn(labels)

    def apply_product(self, offset: int, value: bytes | None) -> bool:
        """One products-topic record (the product feed); returns whether it changed the
        product's state. Never raises: a record that is not a valid ``product`` event is
        logged and counted (``bad_products``); one at or before the snapshot's offset, or older
        than the product's state, changes nothing (a replay is harmless)."""
        state = self.state
        if offset <= state.products_offset:
            return False
        state.products_offset = offset
        try:
            event = self.product_schema.validate(orjson.loads(value or b""))
            ts_ms = parse_ts(event["ts"])
        except orjson.JSONDecodeError as exc:
            return self._refuse_product(offset, "invalid_json", f"not valid JSON: {exc}")
        except fastjsonschema.JsonSchemaValueException as exc:
            return self._refuse_product(offset, "schema_violation",
                                        f"product: {explain_violation(exc)}"[:500])
        except (fastjsonschema.JsonSchemaException, ValueError, OverflowError) as exc:
            return self._refuse_product(offset, "schema_violation", f"product: {exc}"[:500])
        return state.relations.upsert_product(event, ts_ms)

    def _refuse_product(self, offset: int, reason: str, error: str) -> bool:
        self.state.bad_products += 1
        self.last_refusal = (reason, error)
        log.error("learner: skipping the products-topic record at offset %d: not a valid "
                  "product event (schemas/events/product.schema.json): %s", offset, error)
        return False

    def learn(self, labels: list[Labelled]) -> int:
        model = self.state.intent
        for label in labels:
            drifts = model.drifts
            model.observe(label.features, label.label, label.score)
            if model.drifts != drifts:
                log.warning("learner: drift in the intent model's error (ADWIN) after %d labels; "
                            "learning faster for the next %d labels", model.n, model.boost_labels)
        self.learnt_since_snapshot += len(labels)
        return len(labels)

    @property
    def lag(self) -> int | None:
        """Records of the learning topic after the learner's position, as of its last fetch;
        None while this learner is not the active one or has not fetched yet.

        >>> learner = Learner(Settings())
        >>> learner.active, learner.position, learner.topic_end = True, 120, 150
        >>> learner.lag
        30
        """
        if not self.active or self.topic_end is None:
            return None
        return max(0, self.topic_end - self.position)

    # -- snapshots -----------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        state = self.state
        return {"offset": state.offset, "observations": state.observations,
                "unreadable": state.unreadable, "other_features": state.other_features,
                "erased": state.erased, "future": state.future,
                "products_offset": state.products_offset, "bad_products": state.bad_products,
                **state.relations.stats(),
                "behaviours": state.clusters.learned, "cluster_refits": state.clusters.refits,
                **state.join.stats(), **state.bandit.stats()}

    async def checkpoint(self, force: bool = False) -> bool:
        """Publish a snapshot when one is due (or ``force``) and something was consumed since
        (labels learnt, or observations that will be: a new learner then starts after them; or
        product-feed records: a product out of stock must reach the workers' recommendations).

        Never raises: a failed write is logged and retried at the next call.
        """
        if not self.active or (self.state.offset == self.snapshot_offset
                               and self.state.products_offset == self.snapshot_feed_offset):
            return False
        now = self.clock()
        due = now >= self._next_snapshot or self.learnt_since_snapshot >= self.every_labels
        if not (force or due):
            return False
        self._next_snapshot = now + self.interval_s
        version = self.version + 1
        served = ServedModels(self.state.intent, self.stats(), self.state.ltv,
                              self.state.clusters.serving_copy(),
                              self.state.bandit.chooser.serving_copy(),
                              self.state.relations.serving_copy(),
                              self.state.bandit.contextual.to_state(pending=False))
        if self.models is None:
            self.version = version
            self.learnt_since_snapshot = 0
            self.snapshot_offset = self.state.offset
            self.snapshot_feed_offset = self.state.products_offset
            if self.on_publish is not None:
                self.on_publish(copy.deepcopy(served), version, int(time.time() * 1000))
            return True
        try:
            serving = dump(served, self.secret, version)
            written = await self.models.publish(version, serving,
                                                dump(self.state, self.secret, version))
        except Exception as exc:  # a snapshot is retried; learning goes on meanwhile
            log.warning("learner: could not publish snapshot v%d (%s: %s); retrying in %.0fs",
                        version, type(exc).__name__, exc, self.interval_s)
            return False
        if not written:
            log.warning("learner: Redis holds a snapshot newer than v%d (another learner took "
                        "over); restoring it", version)
            self.stale = True
            return False
        self.version = version
        self.learnt_since_snapshot = 0
        self.snapshot_offset = self.state.offset
        self.snapshot_feed_offset = self.state.products_offset
        log.info("learner: published model v%d (%d labels learnt, AUC %s, offset %d)", version,
                 self.state.intent.n, self.state.intent.stats()["auc"], self.state.offset)
        return True


class _Takeover(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, learner: Learner, consumer: AIOKafkaConsumer) -> None:
        self.learner = learner
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if self.learner.active and revoked:
            await self.learner.checkpoint(force=True)
            self.learner.active = False
            log.info("learner: the learning partition moved to another worker")

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if assigned:
            await seek_restored(self.learner, self.consumer, assigned)


async def seek_restored(learner: Learner, consumer: AIOKafkaConsumer,
                        partitions: list[TopicPartition]) -> None:
    """Restore the latest snapshot (retrying Redis errors) and seek to where it stopped."""
    delay = RETRY_FIRST_S
    while True:
        try:
            start = await learner.restore()
            break
        except Exception as exc:
            log.warning("learner: cannot read the snapshot (%s: %s); retrying in %.1fs",
                        type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
    where = f"offset {start}"
    for tp in partitions:
        if start >= 0:
            consumer.seek(tp, start)
        elif learner.replay_ms is None:
            await consumer.seek_to_beginning(tp)
            where = "the beginning"
        else:
            start, where = await seek_window(consumer, tp, learner.replay_ms)
    learner.position = max(start, 0)
    learner.topic_end = None
    learner.active = True
    log.info("learner: this worker learns now (learning topic %s from %s)",
             ",".join(tp.topic for tp in partitions), where)


async def seek_window(consumer: AIOKafkaConsumer, tp: TopicPartition,
                      window_ms: int) -> tuple[int, str]:
    """Seek to the first record of the last ``window_ms`` (Kafka record time), or to the end
    when there is none; returns the offset and what it is, for the log."""
    since_ms = int(time.time() * 1000) - window_ms
    # The end first: a record written between the two questions is then at or after it, so it is
    # read. (Asked the other way round, a record written in between is past the end read and
    # was skipped: a fresh learner lost the workers' first observations that way.)
    end = (await consumer.end_offsets([tp]))[tp]
    found = (await consumer.offsets_for_times({tp: since_ms})).get(tp)
    if found is not None:
        consumer.seek(tp, found.offset)
        return found.offset, (f"offset {found.offset}: no snapshot, so the last "
                              f"{window_ms / 3_600_000:g} h only (STREAMPROC_LEARNER_REPLAY_HOURS)")
    consumer.seek(tp, end)
    return end, (f"its end, offset {end}: no snapshot, and no record in the last "
                 f"{window_ms / 3_600_000:g} h (STREAMPROC_LEARNER_REPLAY_HOURS)")


async def run_learner(settings: Settings, learner: Learner, stop: asyncio.Event | None = None,
                      **consumer_options: Any) -> None:
    """Take part in the learner group until cancelled, or until ``stop`` is set (seen within a
    poll, POLL_MS: a way out that no library can swallow, unlike a cancellation); learn while
    holding the partition. Either way the last snapshot is written on the way out."""
    delay = RETRY_FIRST_S
    stop = stop or asyncio.Event()
    while not stop.is_set():
        consumer = AIOKafkaConsumer(
            **kafka_options(settings),
            group_id=f"{settings.app_id}.learner",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **consumer_options,
        )
        consumer.subscribe([settings.topics.learning], listener=_Takeover(learner, consumer))
        feed = ProductFeed(settings, consumer_options)
        try:
            await consumer.start()
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=POLL_MS, max_records=2000)
                for messages in batch.values():
                    for msg in messages:
                        learner.apply(msg.offset, msg.value, msg.timestamp)
                if learner.active:
                    await feed.read(learner)
                for tp in consumer.assignment():
                    learner.topic_end = consumer.highwater(tp)
                await learner.checkpoint()
                if learner.stale:
                    await seek_restored(learner, consumer, list(consumer.assignment()))
                delay = RETRY_FIRST_S
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Kafka trouble: rejoin after a pause, never stop learning
            log.warning("learner: consumer failed (%s: %s); rejoining in %.1fs",
                        type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
        finally:
            await learner.checkpoint(force=True)
            learner.active = False
            await consumer.stop()
            await feed.stop()


class ProductFeed:
    """The products topic (one partition), read by the active learner with its own consumer,
    assigned rather than subscribed (no group: the learning topic's group decides who learns).

    On taking over, the learner seeks it to the snapshot's products offset + 1 (0 without a
    snapshot: the whole feed, a compacted topic's latest state per product). A record that is
    not a valid ``product`` event goes to the dead-letter topic with its reason. A missing topic or
    a Kafka error is logged (once until it recovers) and retried at the next poll: the learning
    topic goes on meanwhile."""

    def __init__(self, settings: Settings, consumer_options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = consumer_options
        self.tp = TopicPartition(settings.topics.products, 0)
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.failing = False

    async def read(self, learner: Learner) -> int:
        """Apply what the feed has now; returns the records read."""
        try:
            if self.consumer is None:
                self.consumer = AIOKafkaConsumer(**kafka_options(self.settings),
                                                 group_id=None, enable_auto_commit=False,
                                                 auto_offset_reset="earliest", **self.options)
                await self.consumer.start()
                self.consumer.assign([self.tp])
                learner.feed_seek = max(learner.feed_seek or 0, learner.state.products_offset + 1)
            if learner.feed_seek is not None:
                self.consumer.seek(self.tp, learner.feed_seek)
                learner.feed_seek = None
            got = await self.consumer.getmany(self.tp, timeout_ms=0, max_records=2000)
            records = got.get(self.tp, [])
            for msg in records:
                refused = learner.state.bad_products
                learner.apply_product(msg.offset, msg.value)
                if learner.state.bad_products != refused:
                    try:
                        await self.deadletter(RawMessage(msg.topic, msg.partition, msg.offset,
                                                         msg.key, msg.value, msg.timestamp),
                                              *learner.last_refusal)
                    except Exception:
                        learner.state.products_offset = msg.offset - 1  # its dead letter is due
                        raise
            self.failing = False
            return len(records)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self.failing:
                log.warning("learner: cannot read the product feed %s (%s: %s); retrying at "
                            "each poll (`streamproc stack up` creates the topic)",
                            self.tp.topic, type(exc).__name__, exc)
            self.failing = True
            await self.stop()
            return 0

    async def deadletter(self, msg: RawMessage, reason: str, error: str) -> None:
        """A refused feed record to the dead-letter topic, with its reason and bytes (a copy
        again when the feed is read again after a takeover, like the workers' redeliveries)."""
        if self.producer is None:
            self.producer = AIOKafkaProducer(**producer_options(self.settings))
            await self.producer.start()
        await self.producer.send_and_wait(
            self.settings.topics.deadletter,
            deadletter_record(msg, reason, error, int(time.time() * 1000)), key=msg.key)

    async def stop(self) -> None:
        consumer, self.consumer = self.consumer, None
        producer, self.producer = self.producer, None
        for client in (consumer, producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
