"""The worker's Prometheus metrics, fed through the real batch path (processor, memory store)."""

from __future__ import annotations

import orjson
import pytest
import redis.exceptions

from streamproc.learning.scorer import IntentScorer
from streamproc.processor import BatchResult, Processor
from streamproc.state.memory import MemoryStore
from streamproc.worker.agents import BatchStats, handle_batch
from streamproc.worker.metrics import MeteredStore, WorkerMetrics, model_figures

from .helpers import SETTINGS, Partition, event
from .test_agents import FlakyProcessor, ListEmitter


async def test_a_batch_is_counted_by_topic_reason_action_and_round_trip() -> None:
    metrics = WorkerMetrics()
    memory = MemoryStore()
    processor = Processor(SETTINGS, MeteredStore(memory, metrics))
    part = Partition()
    msgs = [part.message(event("cart_add", customer="m1")),
            part.message(event("purchase", customer="m1", minute=1)),
            part.message(b"not json", key=b"m1")]
    emitter = ListEmitter()
    await handle_batch(msgs, processor, emitter, BatchStats(), metrics)
    v = metrics.value
    assert v("streamproc_events_total", topic=SETTINGS.topics.browsing) == 2
    assert v("streamproc_events_total", topic=SETTINGS.topics.purchases) == 1
    assert v("streamproc_batch_size_count") == 1 and v("streamproc_batch_size_sum") == 3
    assert v("streamproc_batch_seconds_count") == 1
    assert v("streamproc_deadletters_total", reason="invalid_json") == 1
    actions = {d["action"]["id"] for d in emitter.decisions()}
    assert actions == {"cart_reminder", "thank_you_cross_sell"}
    for action in actions:
        assert v("streamproc_decisions_total", action=action, experiment="none", arm="none") == 1
    # One latency per decision: the helper's messages are stamped long ago, so it is large.
    assert v("streamproc_event_to_decision_seconds_count") == 2
    assert v("streamproc_event_to_decision_seconds_sum") > 2 * 3600
    # The batch costs two round trips, whatever its size.
    assert v("streamproc_redis_round_trips_total", operation="load") == 1
    assert v("streamproc_redis_round_trips_total", operation="save") == 1
    # A new customer: nothing stored to parse, nothing kept yet.
    assert v("streamproc_profile_cache_total", result="miss") is None
    # A customer this worker wrote comes from its cache; one another worker wrote is parsed.
    await Processor(SETTINGS, memory).process([Partition(partition=1).message(
        event("search", customer="m2"))])
    await handle_batch([part.message(event("page_view", customer="m1", minute=2)),
                        part.message(event("page_view", customer="m2", minute=2))],
                       processor, emitter, BatchStats(), metrics)
    assert v("streamproc_profile_cache_total", result="hit") == 1
    assert v("streamproc_profile_cache_total", result="miss") == 1


def test_experiment_arms_and_unreadable_records_are_labelled() -> None:
    metrics = WorkerMetrics()
    with_arm = orjson.dumps({"action": {"id": "a1"}, "experiment": {"id": "x7", "arm": "b"},
                             "trigger": {"topic": "t", "partition": 0, "offset": 1}})
    result = BatchResult(decisions=[(b"c", with_arm), (b"c", b"{broken")],
                         deadletters=[(b"c", b"{}")])
    metrics.on_published([], result, 0.01)
    assert metrics.value("streamproc_decisions_total", action="a1", experiment="x7", arm="b") == 1
    assert metrics.value("streamproc_decisions_total", action="unknown", experiment="none",
                         arm="none") == 1
    assert metrics.value("streamproc_deadletters_total", reason="unknown") == 1
    # No message carried the trigger: no latency is made up.
    assert metrics.value("streamproc_event_to_decision_seconds_count") == 0


async def test_redis_errors_and_retries_are_counted() -> None:
    class Broken(MemoryStore):
        fails = 2

        async def load(self, customer_ids):  # type: ignore[no-untyped-def]
            if self.fails:
                self.fails -= 1
                raise redis.exceptions.ConnectionError("gone")
            return await super().load(customer_ids)

    metrics = WorkerMetrics()
    processor = Processor(SETTINGS, MeteredStore(Broken(), metrics))
    stats = BatchStats()
    await handle_batch([Partition().message(event("search"))], processor, ListEmitter(), stats,
                       metrics)
    assert metrics.value("streamproc_redis_errors_total", operation="load",
                         error="ConnectionError") == 2
    assert metrics.value("streamproc_redis_round_trips_total", operation="load") == 3
    assert metrics.value("streamproc_retries_total") == 2 == stats.retries
    assert stats.last_batch_at > 0


async def test_a_dead_lettered_poison_message_is_counted() -> None:
    metrics, stats = WorkerMetrics(), BatchStats()
    part = Partition()
    msgs = [part.message(event("cart_add", minute=i)) for i in range(3)]
    await handle_batch(msgs, FlakyProcessor(transient=0, poison=1), ListEmitter(), stats,
                       metrics)
    assert metrics.value("streamproc_deadletters_total", reason="processing_error") == 1
    assert metrics.value("streamproc_events_total", topic=SETTINGS.topics.browsing) == 3
    assert stats.failures == 1


def test_lag_gauge_follows_the_assignment() -> None:
    metrics = WorkerMetrics()
    metrics.set_lag({("t", 0): 5, ("t", 1): 0})
    assert metrics.value("streamproc_consumer_lag", topic="t", partition="0") == 5
    metrics.set_lag({("t", 1): 2})
    assert metrics.value("streamproc_consumer_lag", topic="t", partition="0") is None
    assert b'streamproc_consumer_lag{partition="1",topic="t"} 2.0' in metrics.render()


def test_model_figures_come_from_the_intent_scorer() -> None:
    scorer = IntentScorer(SETTINGS)
    for i in range(40):
        scorer.model.observe({"views": float(i % 5)}, i % 3 == 0, 0.3)
    metrics = WorkerMetrics(scorer=lambda: scorer)
    stats = scorer.model.stats()
    assert metrics.value("streamproc_model_examples_learnt", model="intent") == 40
    assert metrics.value("streamproc_model_auc", model="intent") == stats["auc"]
    assert metrics.value("streamproc_model_logloss", model="intent") == stats["logloss"]
    assert metrics.value("streamproc_model_drifts", model="intent") == stats["drifts"]


@pytest.mark.parametrize("scorer", [None, object(), type("S", (), {"model": 3})()])
def test_model_figures_tolerate_missing_models(scorer: object) -> None:
    assert model_figures(scorer) == {}
    assert b"streamproc_model_auc" in WorkerMetrics(scorer=lambda: scorer).render()


def test_a_failing_model_does_not_break_the_scrape() -> None:
    class Model:
        def stats(self) -> dict[str, float]:
            raise RuntimeError("being reworked")

    class Scorer:
        model = Model()

    assert model_figures(Scorer()) == {}
    assert WorkerMetrics(scorer=Scorer).render().startswith(b"# HELP")


def test_apps_have_their_own_registries() -> None:
    a, b = WorkerMetrics(), WorkerMetrics()
    a.retries.inc()
    assert (a.value("streamproc_retries_total"), b.value("streamproc_retries_total")) == (1, 0)
