"""The learner without Kafka: records in, labels learnt, snapshots published; a learner that
takes over from a snapshot goes on exactly like one that never stopped."""

from __future__ import annotations

import logging
import random

import orjson
import pytest

from streamproc.intent import IntentScorer
from streamproc.learner import Learner, LearnerState
from streamproc.models.snapshot import dump
from streamproc.modelstore import MemoryModelStore
from streamproc.observations import FEATURE_NAMES, pack_batch, purchase_record, score_record
from streamproc.settings import Settings

SECRET = "unit-test-secret"
SETTINGS = Settings(model_secret=SECRET, model_snapshot_seconds=30, model_snapshot_labels=50,
                    intent_horizon_minutes=30, label_lateness_seconds=300, partitions=1)
MIN = 60_000
BROWSING = {"topic": SETTINGS.topics.browsing, "partition": 0, "offset": 0}
PURCHASES = {"topic": SETTINGS.topics.purchases, "partition": 0, "offset": 0}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def records(n: int, seed: int = 3) -> list[bytes]:
    """Simulated observations: customers with a high ``cart`` feature tend to buy soon after."""
    rng = random.Random(seed)
    out: list[bytes] = []
    ts = 0
    for i in range(n):
        ts += rng.randrange(0, MIN)
        cid = f"c{rng.randrange(40)}"
        buyer = int(cid[1:]) % 4 == 0
        if buyer and rng.random() < 0.1:
            out.append(orjson.dumps(purchase_record(cid, f"p{i}", ts, PURCHASES)))
            continue
        x = dict.fromkeys(FEATURE_NAMES, 0.0)
        x["cart_value"] = (2.0 if buyer else 0.0) + rng.random()
        out.append(orjson.dumps(score_record(cid, f"e{i}", ts, x, 0.5, 0, BROWSING)))
    return out


def learner(models: MemoryModelStore | None = None, clock: Clock | None = None,
            settings: Settings = SETTINGS) -> Learner:
    learner = Learner(settings, models if models is not None else MemoryModelStore(),
                      clock=clock or Clock())
    learner.active = True
    return learner


def feed(learner: Learner, log: list[bytes], start: int = 0, stop: int | None = None) -> int:
    """Apply ``log[start:stop]`` at its offsets (the record's index in ``log``)."""
    stop = len(log) if stop is None else stop
    return sum(learner.apply(offset, log[offset]) for offset in range(start, stop))


async def test_learns_labels_and_publishes_versioned_snapshots():
    models, clock = MemoryModelStore(), Clock()
    ln = learner(models, clock)
    log = records(3000)
    learnt = feed(ln, log, 0, 1000)
    assert learnt > 100 and ln.state.intent.n == learnt
    assert 0 < ln.state.intent.positives < learnt
    assert await ln.checkpoint(force=True) and await models.version() == 1
    assert not await ln.checkpoint(force=True)  # nothing learnt since
    offset = 1000
    while not ln.learnt_since_snapshot:
        ln.apply(offset, log[offset])
        offset += 1
    if ln.learnt_since_snapshot < 50:
        assert not await ln.checkpoint()  # not due: neither 30 s nor 50 labels
    clock.now = 31.0
    assert await ln.checkpoint() and await models.version() == 2  # due by time
    feed(ln, log, offset)
    assert ln.learnt_since_snapshot >= 50
    assert await ln.checkpoint()  # due by labels
    assert await models.version() == ln.version == 3
    # The simulated pattern is learnt (the progressive AUC judges the workers' scores, all 0.5
    # here, so it says 0.5).
    x = dict.fromkeys(FEATURE_NAMES, 0.0)
    model = ln.state.intent
    assert model.predict_proba_one(x | {"cart_value": 2.5}) > model.predict_proba_one(
        x | {"cart_value": 0.5})
    assert model.stats()["auc"] == 0.5


async def test_a_learner_that_takes_over_goes_on_exactly_like_an_uninterrupted_one():
    log = records(4000)
    steady = learner()
    feed(steady, log)

    models = MemoryModelStore()
    first = learner(models)
    feed(first, log, 0, 1500)
    assert await first.checkpoint(force=True)
    feed(first, log, 1500, 2200)  # learnt, then the worker dies before a snapshot

    second = Learner(SETTINGS, models, clock=Clock())
    start = await second.restore()
    assert start == 1500
    second.active = True
    feed(second, log, start=0)  # a seek that went wrong would feed the old records again
    assert second.state.intent.stats() == steady.state.intent.stats()
    assert second.stats() == steady.stats()
    assert await second.checkpoint(force=True) and await models.version() == 2


async def test_duplicate_observations_are_learnt_once():
    log = records(1500)
    once = learner()
    feed(once, log)
    twice = learner()
    doubled = [v for value in log for v in (value, value)]  # every batch published twice
    feed(twice, doubled)
    assert twice.state.intent.stats() == once.state.intent.stats()
    assert twice.state.join.duplicates == len(log)


async def test_unreadable_records_are_counted_and_skipped(caplog):
    ln = learner()
    with caplog.at_level(logging.ERROR, logger="streamproc.learner"):
        assert ln.apply(0, b"not json") == 0
        assert ln.apply(1, orjson.dumps({"kind": "score", "customer_id": "c"})) == 0
    assert ln.stats()["unreadable"] == 2 and ln.state.offset == 1
    assert "skipping an observation of the learning-topic record at offset 0" in caplog.text
    other = orjson.loads(records(1)[0])
    other["f"] = "another-feature-set"
    ln.apply(2, orjson.dumps(other))
    assert ln.stats()["other_features"] == 1


async def test_a_batch_record_is_learnt_like_its_observations_one_by_one():
    """Workers publish a batch's observations as one record (a JSON array): the learner learns
    from it exactly what it learns from the same observations as records of their own, and a
    bad element is skipped without losing the others."""
    one_by_one, batched = learner(), learner()
    values = records(400)
    feed(one_by_one, values)
    for offset, start in enumerate(range(0, len(values), 150)):
        batched.apply(offset, pack_batch(values[start:start + 150]))
    assert batched.stats() == {**one_by_one.stats(), "offset": batched.state.offset}
    assert batched.state.intent.stats() == one_by_one.state.intent.stats()
    assert batched.state.intent.n > 0
    mixed = learner()
    mixed.apply(0, pack_batch([b'{"kind": "nonsense"}', *values[:10]]))
    assert mixed.stats()["unreadable"] == 1 and mixed.stats()["observations"] == 10


async def test_a_snapshot_with_a_bad_signature_is_refused_and_learning_starts_over(caplog):
    models = MemoryModelStore()
    ln = learner(models)
    feed(ln, records(500))
    forged = dump(ln.state, b"someone-elses-secret", 5)
    await models.publish(5, forged, forged)
    fresh = Learner(SETTINGS, models, clock=Clock())
    with caplog.at_level(logging.ERROR, logger="streamproc.learner"):
        assert await fresh.restore() == -1
    assert "refusing the snapshot" in caplog.text and fresh.state.intent.n == 0
    fresh.active = True
    feed(fresh, records(500))
    assert await fresh.checkpoint(force=True) and await models.version() == 6


async def test_a_learner_that_lost_the_partition_cannot_overwrite_a_newer_snapshot(caplog):
    models = MemoryModelStore()
    log = records(1000)
    zombie, successor = learner(models), learner(models)
    feed(zombie, log, 0, 500)
    feed(successor, log)
    assert await successor.checkpoint(force=True)  # v1
    with caplog.at_level(logging.WARNING, logger="streamproc.learner"):
        assert not await zombie.checkpoint(force=True)  # would be v1 too: refused
    assert zombie.stale and "another learner took over" in caplog.text
    assert await zombie.restore() == 1000 and zombie.state.intent.n == successor.state.intent.n


async def test_scoring_workers_reload_what_the_learner_publishes():
    models, clock = MemoryModelStore(), Clock()
    ln = learner(models)
    feed(ln, records(2000))
    await ln.checkpoint(force=True)
    scorers = [IntentScorer(SETTINGS, models, clock=clock) for _ in range(2)]
    for scorer in scorers:
        await scorer.refresh()
    assert {s.version for s in scorers} == {1}
    assert {s.model.n for s in scorers} == {ln.state.intent.n}
    x = dict.fromkeys(FEATURE_NAMES, 0.0) | {"cart_value": 2.5}
    assert scorers[0].model.predict_proba_one(x) == ln.state.intent.predict_proba_one(x)


async def test_without_a_secret_the_learner_hands_its_model_to_its_own_scorer():
    settings = Settings(partitions=1)
    scorer = IntentScorer(settings, clock=Clock())
    ln = Learner(settings, MemoryModelStore(), on_publish=scorer.adopt)
    ln.active = True
    feed(ln, records(1000))
    assert await ln.checkpoint(force=True)
    assert scorer.version == 1 and scorer.model.n == ln.state.intent.n
    assert scorer.model is not ln.state.intent  # a copy: learning goes on beside it


async def test_a_partition_read_behind_holds_the_labels_back_until_the_idle_limit():
    # The purchases partition is read two hours of event time behind the browsing one (a
    # backlog): no browsing moment is labelled before its purchases could have been seen.
    settings = Settings(model_secret=SECRET, partitions=1, label_lateness_seconds=0,
                        label_idle_seconds=4 * 3600)
    ln = learner(settings=settings)
    log = records(3000)
    browsing = [v for v in log if b'"kind":"score"' in v]
    buys = [v for v in log if b'"kind":"purchase"' in v]
    ahead = 2 * 3600_000
    ordered = sorted(log, key=lambda v: orjson.loads(v)["ts_ms"])
    skewed = sorted(log, key=lambda v: orjson.loads(v)["ts_ms"] - (ahead if v in buys else 0))
    reference = learner(settings=settings)
    feed(reference, ordered)
    feed(ln, skewed)
    assert browsing and ln.state.intent.stats() == reference.state.intent.stats()
    assert ln.state.join.too_late == 0

    # Without the per-partition watermark (the idle limit as small as the lateness), the
    # browsing read ahead closes windows before their purchases arrive: other labels.
    hasty = learner(settings=Settings(model_secret=SECRET, partitions=1,
                                      label_lateness_seconds=0, label_idle_seconds=0))
    feed(hasty, skewed)
    assert hasty.state.intent.positives < reference.state.intent.positives


def test_the_learner_state_pickles_whole():
    ln = learner()
    feed(ln, records(300))
    assert isinstance(ln.state, LearnerState) and ln.state.offset == 299


async def test_the_learner_fits_lifetime_value_and_serves_it():
    from streamproc.intent import ServedModels

    ln = learner()
    rng = random.Random(4)
    for i in range(2000):  # customers of 100 days, buying on about 1 day in 10, 40 per order
        rate = rng.uniform(0.02, 0.18)  # customers differ: a Gamma-like spread of rates
        repeat = sum(rng.random() < rate for _ in range(100))
        record = purchase_record(f"c{i}", f"p{i}", i * MIN, PURCHASES,
                                 {"frequency": repeat, "recency": 95, "T": 100}, repeat + 1,
                                 40.0 * (repeat + 1))
        ln.apply(i, orjson.dumps(record))
    fitted = ln.state.ltv.params
    assert (fitted["r"], fitted["alpha"]) != (0.25, 30.0)  # no longer the priors
    # Purchases weigh 1 / (1 + frequency), so that frequent buyers do not dominate: the mean
    # rate lands within the customers' spread, below the plain mean of 0.1.
    assert 0.04 < fitted["r"] / fitted["alpha"] < 0.1
    assert fitted["mean_order_value"] == pytest.approx(40.0)
    scorer = IntentScorer(SETTINGS, clock=Clock())
    scorer.adopt(ServedModels(ln.state.intent, {}, ln.state.ltv), 1, 0)
    assert scorer.ltv.params == fitted


async def test_the_learner_learns_behaviour_clusters_from_session_starts_once_each():
    from streamproc.intent import ServedModels

    ln = learner()
    x = dict.fromkeys(FEATURE_NAMES, 0.0)
    rng = random.Random(2)
    for i in range(600):
        shoes = i % 2 == 0
        b = {"cat:shoes" if shoes else "cat:books": 0.8 + 0.2 * rng.random(), "price": 0.1}
        value = orjson.dumps(score_record(f"c{i}", f"e{i}", i * MIN, x, 0.5, 0, BROWSING, b))
        ln.apply(2 * i, value)
        ln.apply(2 * i + 1, value)  # a redelivered copy: learnt once
    clusters = ln.state.clusters
    assert clusters.learned == 600 and clusters.ready
    served = ServedModels(ln.state.intent, {}, ln.state.ltv, clusters.serving_copy()).clusters
    shoes, books = served.assign({"cat:shoes": 1.0}), served.assign({"cat:books": 1.0})
    assert shoes != books and "shoes" in served.describe(shoes)
