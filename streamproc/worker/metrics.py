"""A worker's Prometheus metrics: one registry per app, fed by the batch loop, served at /metrics.

Each :class:`WorkerMetrics` owns its own ``CollectorRegistry`` (tests build several apps in one
process, and the global registry would refuse a second set of the same names). The batch loop
(:mod:`streamproc.worker.agents`) reports every published batch with
:meth:`WorkerMetrics.on_published`; the Redis store is wrapped by :class:`MeteredStore`, which
counts round trips and errors; the consumer lag, the model figures and the learner's lag are
read when Prometheus scrapes.

>>> m = WorkerMetrics()
>>> m.on_published([RawMessage("t.browsing", 0, 5, b"c1", b"{}", 1_000)], BatchResult(
...     decisions=[(b"c1", b'{"action": {"id": "cart_reminder"}, "experiment": null,'
...                b' "trigger": {"topic": "t.browsing", "partition": 0, "offset": 5}}')]),
...     seconds=0.004, now_ms=1_250)
>>> m.value("streamproc_decisions_total", action="cart_reminder", experiment="none", arm="none")
1.0
>>> m.value("streamproc_event_to_decision_seconds_sum")
0.25
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamproc.events.codec import RawMessage
from streamproc.learning.learner import Learner
from streamproc.processor import BatchResult
from streamproc.state.store import DueTimers, Store, Stored, Write

log = logging.getLogger(__name__)

# Prometheus text format 0.0.4 (UTF-8, its only encoding; aiohttp refuses a charset here).
CONTENT_TYPE = "text/plain; version=0.0.4"
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0)
# The model figures exported, from the scorer's ``model.stats()``: metric suffix -> stats key.
MODEL_FIGURES = {"auc": "auc", "logloss": "logloss", "examples_learnt": "n", "drifts": "drifts"}


def model_figures(scorer: Any) -> dict[str, dict[str, float]]:
    """The figures of every model the scorer holds, read defensively: ``{model: {figure: v}}``.

    The models are being reworked: whatever is missing, not numeric or raises is left out
    rather than breaking a scrape.

    >>> class Model:
    ...     def stats(self): return {"auc": 0.71, "logloss": 0.5, "n": 300, "drifts": "?"}
    >>> class Scorer:
    ...     model = Model()
    >>> model_figures(Scorer())
    {'intent': {'auc': 0.71, 'logloss': 0.5, 'examples_learnt': 300.0}}
    >>> model_figures(None), model_figures(object())
    ({}, {})
    """
    model = getattr(scorer, "model", None)
    stats_of = getattr(model, "stats", None)
    if not callable(stats_of):
        return {}
    try:
        stats = stats_of()
    except Exception as exc:  # a scrape must not fail because a model did
        log.debug("model stats unavailable: %s", exc)
        return {}
    if not isinstance(stats, Mapping):
        return {}
    figures = {name: float(stats[key]) for name, key in MODEL_FIGURES.items()
               if isinstance(stats.get(key), int | float) and not isinstance(stats[key], bool)}
    return {"intent": figures} if figures else {}


def served_snapshot(scorer: Any) -> tuple[float, float] | None:
    """``(version, created seconds)`` of the model snapshot the scorer serves; None before it
    served one (version 0) or without a scorer.

    >>> class Scorer:
    ...     version, created_ms = 7, 1_700_000_000_500
    >>> served_snapshot(Scorer()), served_snapshot(None)
    ((7.0, 1700000000.5), None)
    """
    version, created_ms = getattr(scorer, "version", 0), getattr(scorer, "created_ms", 0)
    if not isinstance(version, int) or not isinstance(created_ms, int) or version <= 0:
        return None
    return float(version), created_ms / 1000


class _ModelCollector(Collector):
    def __init__(self, scorer: Callable[[], Any]) -> None:
        self.scorer = scorer

    def collect(self) -> Iterable[Metric]:
        scorer = self.scorer()
        figures = model_figures(scorer)
        for name in MODEL_FIGURES:
            family = GaugeMetricFamily(f"streamproc_model_{name}",
                                       f"the online model's {name.replace('_', ' ')} "
                                       "(progressive validation)", labels=["model"])
            for model, values in figures.items():
                if name in values:
                    family.add_metric([model], values[name])
            yield family
        served = served_snapshot(scorer)
        version = GaugeMetricFamily(
            "streamproc_model_version", "version of the learner's model snapshot this worker "
            "serves (no sample before the first one)")
        created = GaugeMetricFamily(
            "streamproc_model_snapshot_timestamp_seconds", "when the learner published the "
            "snapshot this worker serves (Unix seconds)")
        if served is not None:
            version.add_metric([], served[0])
            created.add_metric([], served[1])
        yield version
        yield created

    def describe(self) -> Iterable[Metric]:
        return []


class _LearnerCollector(Collector):
    """``streamproc_learner_lag``, read at scrape time; no sample on a worker that is not the
    active learner (only one worker learns at a time)."""

    def __init__(self, lag: Callable[[], int | None]) -> None:
        self.lag = lag

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "streamproc_learner_lag", "learning-topic records the learner has yet to read (its "
            "position to the topic's end as of its last fetch); only on the worker that learns")
        try:
            lag = self.lag()
        except Exception as exc:  # a scrape must not fail because the learner did
            log.debug("learner lag unavailable: %s", exc)
            lag = None
        if lag is not None:
            family.add_metric([], float(lag))
        yield family

    def describe(self) -> Iterable[Metric]:
        return []


class _LearnerStateCollector(Collector):
    """What a ``streamproc learner`` process shows besides its lag: whether it is the active
    learner, where it reads, and the version of its last snapshot."""

    def __init__(self, learner: Callable[[], Learner | None]) -> None:
        self.learner = learner

    def collect(self) -> Iterable[Metric]:
        learner = self.learner()
        active = GaugeMetricFamily("streamproc_learner_active", "1 while this process is the "
                                   "learner (holds the learning partition), else 0")
        active.add_metric([], 1.0 if learner is not None and learner.active else 0.0)
        yield active
        position = GaugeMetricFamily(
            "streamproc_learner_position", "the next learning-topic offset the active learner "
            "reads: flat while records wait means a stalled learner")
        if learner is not None and learner.active:
            position.add_metric([], float(learner.position))
        yield position
        version = GaugeMetricFamily(
            "streamproc_learner_model_version", "version of the last model snapshot this "
            "learner published or restored (no sample before it made or read one)")
        if learner is not None and learner.version > 0:
            version.add_metric([], float(learner.version))
        yield version

    def describe(self) -> Iterable[Metric]:
        return []


class LearnerMetrics:
    """The metrics of a ``streamproc learner`` process (its web server's ``/metrics``).

    >>> from streamproc.settings import Settings
    >>> learner = Learner(Settings())
    >>> learner.active, learner.position, learner.topic_end, learner.version = True, 90, 100, 3
    >>> m = LearnerMetrics(lambda: learner)
    >>> [m.value(name) for name in ("streamproc_learner_lag", "streamproc_learner_active",
    ...                             "streamproc_learner_position",
    ...                             "streamproc_learner_model_version")]
    [10.0, 1.0, 90.0, 3.0]
    >>> LearnerMetrics(lambda: None).value("streamproc_learner_active")  # not started yet
    0.0
    """

    def __init__(self, learner: Callable[[], Learner | None]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_LearnerCollector(
            lambda: (found.lag if (found := learner()) is not None else None)))
        self.registry.register(_LearnerStateCollector(learner))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


class WorkerMetrics:
    """Every metric of one worker, in its own registry.

    >>> WorkerMetrics(learner_lag=lambda: 42).value("streamproc_learner_lag")
    42.0
    >>> WorkerMetrics().value("streamproc_learner_lag") is None  # not the learning worker
    True
    """

    def __init__(self, scorer: Callable[[], Any] = lambda: None,
                 learner_lag: Callable[[], int | None] = lambda: None) -> None:
        r = self.registry = CollectorRegistry()
        self.events = Counter("streamproc_events", "input messages consumed", ["topic"],
                              registry=r)
        self.batch_size = Histogram("streamproc_batch_size", "messages per batch",
                                    buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batches_behind = Counter(
            "streamproc_batches_behind", "batches that waited up to "
            "STREAMPROC_BATCH_BEHIND_WAIT_MS to fill because the worker was behind (an old "
            "newest event, more waiting in its partition)", registry=r)
        self.batch_seconds = Histogram(
            "streamproc_batch_seconds", "time to process and publish one batch (retries "
            "included)", buckets=SECONDS_BUCKETS, registry=r)
        self.decision_latency = Histogram(
            "streamproc_event_to_decision_seconds", "from the Kafka timestamp of the triggering "
            "message to the decision's publish", buckets=SECONDS_BUCKETS, registry=r)
        self.lag = Gauge("streamproc_consumer_lag", "messages between the worker's position and "
                         "the partition's end, per assigned partition", ["topic", "partition"],
                         registry=r)
        self.deadletters = Counter("streamproc_deadletters", "messages sent to the dead-letter "
                                   "topic", ["reason"], registry=r)
        self.decisions = Counter("streamproc_decisions", "decisions published",
                                 ["action", "experiment", "arm"], registry=r)
        self.redis_round_trips = Counter("streamproc_redis_round_trips", "state store round "
                                         "trips to Redis", ["operation"], registry=r)
        self.redis_errors = Counter("streamproc_redis_errors", "failed state store round trips",
                                    ["operation", "error"], registry=r)
        self.retries = Counter("streamproc_retries", "batch or message attempts retried after a "
                               "transient Redis or Kafka error", registry=r)
        self.profile_cache = Counter("streamproc_profile_cache", "stored profiles read from the "
                                     "worker's cache (hit) or parsed (miss)", ["result"],
                                     registry=r)
        self.wrong_partition = Counter(
            "streamproc_wrong_partition", "input messages that were not on their key's murmur2 "
            "partition (a producer partitioning keys another way), by what was done: "
            "deadletter, or warn (processed; STREAMPROC_PARTITION_CHECK)", ["topic", "handling"],
            registry=r)
        self.suppressed = Counter(
            "streamproc_suppressed", "events of erased customers dated or produced before "
            "their erasure, not applied (STREAMPROC_ERASURE_SUPPRESS_DAYS)", ["topic"],
            registry=r)
        self.consent = Counter(
            "streamproc_consent", "events of customers without personalisation consent, "
            "applied but not profiled (unprofiled), and profiles reduced to their consent "
            "record on a withdrawal (withheld): STREAMPROC_CONSENT_DEFAULTS", ["result"],
            registry=r)
        self.merges = Counter(
            "streamproc_identity_merges", "identifiers' profiles merged into a customer's "
            "(profile_merge applied, once per merge: docs/identity.md)", registry=r)
        self.links = Counter(
            "streamproc_identity_links", "identifiers made an alias of a customer (identify: "
            "linked) and aliases ended (unlink: unlinked), once each", ["change"], registry=r)
        self.forwarded = Counter(
            "streamproc_identity_forwarded", "events under an alias forwarded to its customer",
            registry=r)
        r.register(_ModelCollector(scorer))
        r.register(_LearnerCollector(learner_lag))

    def on_applied(self, result: BatchResult) -> None:
        """What a batch's writes applied, counted as soon as they went through: a batch
        processed again after a failed publish is redelivered and applies nothing again, so
        each merge, link and forward counts once."""
        if result.merged:
            self.merges.inc(result.merged)
        if result.linked:
            self.links.labels("linked").inc(result.linked)
        if result.unlinked:
            self.links.labels("unlinked").inc(result.unlinked)
        if result.forwarded:
            self.forwarded.inc(result.forwarded)

    def on_published(self, messages: Sequence[RawMessage], result: BatchResult, seconds: float,
                     now_ms: int | None = None) -> None:
        """A batch (or one message of a failed batch) is processed and its records published."""
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        self.batch_size.observe(len(messages))
        self.batch_seconds.observe(seconds)
        for topic, n in collections.Counter(m.topic for m in messages).items():
            self.events.labels(topic).inc(n)
        self.count_deadletters(value for _, value in result.deadletters)
        for (topic, handling), n in result.wrong_partition.items():
            self.wrong_partition.labels(topic, handling).inc(n)
        for topic, n in result.suppressed.items():
            self.suppressed.labels(topic).inc(n)
        if result.cache_hits:
            self.profile_cache.labels("hit").inc(result.cache_hits)
        if result.cache_misses:
            self.profile_cache.labels("miss").inc(result.cache_misses)
        if result.unprofiled:
            self.consent.labels("unprofiled").inc(result.unprofiled)
        if result.withheld:
            self.consent.labels("withheld").inc(result.withheld)
        if not result.decisions:
            return
        stamps: dict[tuple[Any, Any, Any], int | None] = {
            (m.topic, m.partition, m.offset): m.timestamp_ms for m in messages}
        for _, value in result.decisions:
            try:
                record = orjson.loads(value)
                experiment = record.get("experiment") or {}
                action = str(record["action"]["id"])
                trigger = record.get("trigger") or {}
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                action, experiment, trigger = "unknown", {}, {}
            self.decisions.labels(action, str(experiment.get("id") or "none"),
                                  str(experiment.get("arm") or "none")).inc()
            sent = stamps.get((trigger.get("topic"), trigger.get("partition"),
                               trigger.get("offset")))
            if sent:
                self.decision_latency.observe(max(0, now_ms - sent) / 1000)

    def count_deadletters(self, records: Iterable[bytes]) -> None:
        for value in records:
            try:
                reason = str(orjson.loads(value)["reason"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                reason = "unknown"
            self.deadletters.labels(reason).inc()

    def set_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """The lag of every assigned partition; partitions no longer assigned disappear."""
        self.lag.clear()
        for (topic, partition), behind in lags.items():
            self.lag.labels(topic, str(partition)).set(behind)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float | None:
        """One sample's current value (tests, ``streamproc status``)."""
        return self.registry.get_sample_value(name, labels)


class MeteredStore:
    """A :class:`~streamproc.state.store.Store` that counts its Redis round trips and errors."""

    def __init__(self, store: Store, metrics: WorkerMetrics) -> None:
        self.store = store
        self.metrics = metrics

    async def _call(self, operation: str, call: Callable[[], Any]) -> Any:
        self.metrics.redis_round_trips.labels(operation).inc()
        try:
            return await call()
        except Exception as exc:
            self.metrics.redis_errors.labels(operation, type(exc).__name__).inc()
            raise

    async def load(self, customer_ids: Sequence[str]) -> dict[str, Stored]:
        found: dict[str, Stored] = await self._call("load", lambda: self.store.load(customer_ids))
        return found

    async def save(self, writes: Sequence[Write]) -> list[str]:
        lost: list[str] = await self._call("save", lambda: self.store.save(writes))
        return lost

    async def save_then_due(self, writes: Sequence[Write], app_id: str, seen: Mapping[int, int],
                            lateness_ms: int, limit: int) -> tuple[list[str], list[DueTimers]]:
        done: tuple[list[str], list[DueTimers]] = await self._call(
            "save", lambda: self.store.save_then_due(writes, app_id, seen, lateness_ms, limit))
        return done

    async def read_profile(self, customer_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = await self._call(
            "read_profile", lambda: self.store.read_profile(customer_id))
        return found

    async def erase(self, customer_id: str, erased_ms: int = 0, suppress_ms: int = 0) -> int:
        deleted: int = await self._call(
            "erase", lambda: self.store.erase(customer_id, erased_ms, suppress_ms))
        return deleted

    async def histograms(self) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = await self._call("histograms", self.store.histograms)
        return found

    async def save_region(self, region: str, report: Mapping[str, Any]) -> bool:
        kept: bool = await self._call("save_region",
                                      lambda: self.store.save_region(region, report))
        return kept

    async def region_contexts(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = await self._call("regions",
                                                            self.store.region_contexts)
        return found

    async def close(self) -> None:
        await self.store.close()

    def __getattr__(self, name: str) -> Any:
        # Methods added to the stores later still work, uncounted, rather than failing.
        return getattr(self.store, name)
