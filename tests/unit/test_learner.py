"""The learner without Kafka: records in, labels learnt, snapshots published; a learner that
takes over from a snapshot goes on exactly like one that never stopped."""

from __future__ import annotations

import heapq
import logging
import random

import orjson
import pytest

from streamproc.decisions.bandit import ThompsonChooser
from streamproc.decisions.engine import Lesson
from streamproc.learning.learner import Learner, LearnerState
from streamproc.learning.modelstore import MemoryModelStore
from streamproc.learning.observations import (
    FEATURE_NAMES,
    erase_record,
    lesson_record,
    pack_batch,
    purchase_record,
    score_record,
)
from streamproc.learning.scorer import IntentScorer
from streamproc.models.snapshot import dump, load
from streamproc.settings import Settings

SECRET = "unit-test-secret"
SETTINGS = Settings(model_secret=SECRET, model_snapshot_seconds=30, model_snapshot_labels=50,
                    intent_horizon_minutes=30, label_lateness_seconds=300, partitions=1)
MIN = 60_000
BROWSING = {"topic": SETTINGS.topics.browsing, "partition": 0, "offset": 0}
PURCHASES = {"topic": SETTINGS.topics.purchases, "partition": 0, "offset": 0}
FEEDBACK = {"topic": SETTINGS.topics.feedback, "partition": 0, "offset": 0}
# For the bandit's tests: a 30-minute reward wait, and a watermark that follows the traffic.
BANDIT = Settings(model_secret=SECRET, model_snapshot_seconds=30, partitions=1,
                  label_lateness_seconds=60, label_idle_seconds=600,
                  bandit_reward_wait_minutes=30)


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


async def taken_over(log: list[bytes], settings: Settings, snapshot_at: int, died_at: int
                     ) -> tuple[Learner, Learner, MemoryModelStore]:
    """A learner that read ``log`` whole, and one that took over from a learner that published
    a snapshot after ``snapshot_at`` records and died after ``died_at`` (what it learnt since is
    lost), then read the topic from its start (a seek gone wrong would feed old records again)."""
    steady = learner(settings=settings)
    feed(steady, log)
    models = MemoryModelStore()
    first = learner(models, settings=settings)
    feed(first, log, 0, snapshot_at)
    assert await first.checkpoint(force=True)
    feed(first, log, snapshot_at, died_at)
    second = Learner(settings, models, clock=Clock())
    assert await second.restore() == snapshot_at
    second.active = True
    feed(second, log, start=0)
    return steady, second, models


async def test_a_learner_that_takes_over_goes_on_exactly_like_an_uninterrupted_one():
    steady, second, models = await taken_over(records(4000), SETTINGS, 1500, 2200)
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


async def test_an_erased_customer_leaves_the_learner_and_its_next_snapshot_soon():
    models, clock = MemoryModelStore(), Clock()
    ln = learner(models, clock)
    log = records(200)
    feed(ln, log)
    assert await ln.checkpoint(force=True)
    held = {key[0] for key in ln.state.join.pending}
    gone = sorted(held)[0]
    erased = orjson.dumps(erase_record(gone, "erase-1", 0, None))
    assert ln.apply(len(log), erased) == 0
    assert {key[0] for key in ln.state.join.pending} == held - {gone}
    assert gone not in ln.state.join.purchases and ln.stats()["erased"] == 1
    clock.now = 4.0
    assert not await ln.checkpoint()  # not due yet: 5 s after the erasure, not 30
    clock.now = 5.0
    assert await ln.checkpoint() and await models.version() == 2
    _, restored = load(await models.get("learner"), SECRET.encode())
    assert all(key[0] != gone for key in restored.join.pending)
    assert restored.erased == 1


async def test_unreadable_records_are_counted_and_skipped(caplog):
    ln = learner()
    with caplog.at_level(logging.ERROR, logger="streamproc.learning.learner"):
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
    with caplog.at_level(logging.ERROR, logger="streamproc.learning.learner"):
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
    with caplog.at_level(logging.WARNING, logger="streamproc.learning.learner"):
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
    from streamproc.learning.scorer import ServedModels

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
    from streamproc.learning.scorer import ServedModels

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


# --- the bandit: one for every worker, learnt from their lessons ---------------------------------

def bandit_log(n: int, seed: int = 5) -> tuple[list[bytes], int, int]:
    """Learning-topic records as the workers publish them (one per batch): the traffic's score
    and purchase observations, decisions' ``expect`` lessons and, 0 to 45 minutes of event time
    later (the wait is 30), their ``reward`` lessons; now and then a reward published before its
    expect (a worker died between the two). Also returns the decisions and the rewards sent."""
    rng = random.Random(seed)
    rates = {"a": 0.6, "b": 0.3, "c": 0.1}
    due: list[tuple[int, str, bytes]] = []
    out, decisions, rewards = [], 0, 0
    for i, value in enumerate(records(n, seed)):
        obs = orjson.loads(value)
        ts, cid = obs["ts_ms"], obs["customer_id"]
        batch = [value]
        while due and due[0][0] <= ts:
            batch.append(heapq.heappop(due)[2])
        if rng.random() < 0.3:
            did, action, context = f"d{i}", rng.choice("abc"), rng.choice(["x", "y"])
            decisions += 1
            expected = lesson_record(cid, obs["event_id"], ts,
                                     Lesson("expect", did, action, context, ts), BROWSING)
            r = 1.0 if rng.random() < rates[action] else 0.0
            rewarded = Lesson("reward", did, action, context, ts, r)
            roll = rng.random()
            if roll < 0.05:  # the reward first
                batch.append(orjson.dumps(lesson_record(cid, f"f{i}", ts, rewarded, FEEDBACK)))
                rewards += 1
            batch.append(orjson.dumps(expected))
            if 0.05 <= roll < 0.7:
                at = ts + rng.randrange(45 * MIN)
                heapq.heappush(due, (at, did, orjson.dumps(
                    lesson_record(cid, f"f{i}", at, rewarded, FEEDBACK))))
                rewards += 1
        out.append(pack_batch(batch))
    out.append(pack_batch([value for _, _, value in sorted(due)]))
    return out, decisions, rewards


def bandit_learner(models: MemoryModelStore | None = None) -> Learner:
    return learner(models, settings=BANDIT)


async def test_the_bandit_learns_every_lesson_once_and_closes_the_rest_as_zeros():
    log, decisions, sent = bandit_log(3000)
    once = bandit_learner()
    feed(once, log)
    bandit = once.state.bandit
    assert bandit.rewards > 100 and bandit.early > 5 and bandit.late > 10
    assert bandit.chooser.expired > 50  # no feedback within the wait: zeros, by the watermark
    # Every reward sent was learnt, or came after its wait (its decision counted as a zero).
    assert bandit.rewards + bandit.late == sent
    # Every decision counted once (its reward, or a zero), or still awaits its reward.
    assert once.stats()["bandit_outcomes"] + bandit.chooser.pending == decisions
    assert bandit.chooser.updates == sum(
        ab[0] + ab[1] - 2 for arms in bandit.chooser.posteriors.values() for ab in arms.values())
    # What the simulated customers prefer: "a" (60%) above "c" (10%) in both contexts.
    for context in ("x", "y"):
        a, c = bandit.chooser.posterior(context, "a"), bandit.chooser.posterior(context, "c")
        assert a[0] / sum(a) > c[0] / sum(c)

    # Every batch published twice, and a stretch of batches published again later (a worker
    # that died before committing its offsets): the same bandit, nothing learnt twice.
    twice = bandit_learner()
    doubled = [v for value in log for v in (value, value)]
    doubled[2000:2000] = log[900:960]
    feed(twice, doubled)
    assert twice.state.bandit.chooser.to_state() == bandit.chooser.to_state()
    assert twice.state.bandit.duplicates + twice.state.bandit.too_late > len(log) // 4
    assert twice.state.intent.stats() == once.state.intent.stats()


async def test_a_learner_that_takes_over_has_the_bandit_of_an_uninterrupted_one():
    log, _, _ = bandit_log(3000, seed=8)
    steady, second, models = await taken_over(log, BANDIT, 1200, 2100)
    assert second.state.bandit.chooser.to_state() == steady.state.bandit.chooser.to_state()
    # The snapshot it restored held open expectations (closed later, as rewards or zeros).
    restored = load(await models.get("learner"), SECRET.encode())[1]
    assert restored.bandit.chooser.pending > 0 and restored.offset == 1199
    assert second.stats() == steady.stats()


async def test_every_worker_serves_the_learners_bandit_swapped_into_its_engine():
    models, clock = MemoryModelStore(), Clock()
    ln = bandit_learner(models)
    log, _, _ = bandit_log(2000)
    feed(ln, log)
    assert await ln.checkpoint(force=True)
    learnt = ln.state.bandit.chooser
    engines = [ThompsonChooser() for _ in range(2)]  # what each worker's engine holds
    scorers = [IntentScorer(BANDIT, models, clock=clock, bandit=e) for e in engines]
    for scorer in scorers:
        await scorer.refresh()
    for scorer, held in zip(scorers, engines, strict=True):
        assert scorer.bandit is held and held.posteriors == learnt.posteriors
        assert held.updates == learnt.updates and held.pending == 0  # no open expectations
        assert scorer.model_versions() == {"intent": "v1", "bandit": "v1"}
        assert scorer.stats()["bandit_outcomes"] == learnt.updates
    candidates = ["a", "b", "c"]
    for i in range(50):  # the same served copy picks the same on every worker
        seed = f"decision-{i}".encode()
        assert engines[0].choose(candidates, "x", seed) == engines[1].choose(candidates, "x",
                                                                             seed)
    assert engines[0].probabilities(candidates, "x") == learnt.probabilities(candidates, "x")


async def test_without_a_secret_the_learner_hands_its_bandit_to_its_own_engine():
    settings = Settings(partitions=1, bandit_reward_wait_minutes=30)
    held = ThompsonChooser()
    scorer = IntentScorer(settings, clock=Clock(), bandit=held)
    ln = Learner(settings, MemoryModelStore(), on_publish=scorer.adopt)
    ln.active = True
    feed(ln, bandit_log(1000)[0])
    assert await ln.checkpoint(force=True)
    assert held.posteriors == ln.state.bandit.chooser.posteriors and held.updates > 0
    held.learn("a", "x", 1.0)  # a copy: the learner's bandit is not the served one
    assert held.posteriors != ln.state.bandit.chooser.posteriors


async def test_a_snapshot_from_before_the_shared_bandit_is_restored_with_a_fresh_one():
    models = MemoryModelStore()
    old = learner(models)
    feed(old, records(500))
    del old.state.bandit  # what a learner of the previous version pickled
    blob = dump(old.state, SECRET.encode(), 1)
    await models.publish(1, blob, blob)
    ln = Learner(SETTINGS, models, clock=Clock())
    assert await ln.restore() == 500
    assert ln.state.bandit.chooser.updates == 0 and ln.state.intent.n == old.state.intent.n


async def test_a_pick_without_reward_closes_as_zero_when_the_learners_watermark_passes_its_wait():
    ln = bandit_learner()
    wait, lateness = 30 * MIN, 60_000
    x = dict.fromkeys(FEATURE_NAMES, 0.0)

    def traffic(ts: int) -> bytes:  # both source partitions at event time ``ts``
        return pack_batch([orjson.dumps(score_record("c9", f"s{ts}", ts, x, 0.5, 0, BROWSING)),
                           orjson.dumps(purchase_record("c9", f"p{ts}", ts, PURCHASES))])

    pick = Lesson("expect", "d1", "a", "x", 5 * MIN)
    log = [traffic(5 * MIN), pack_batch([orjson.dumps(lesson_record(
        "c1", "e1", 5 * MIN, pick, BROWSING))]), traffic(5 * MIN + wait + lateness - 1)]
    feed(ln, log)
    assert ln.state.join.watermark == 5 * MIN + wait - 1
    assert ln.state.bandit.chooser.pending == 1  # the wait is not over by the watermark
    ln.apply(3, traffic(5 * MIN + wait + lateness))
    assert ln.state.bandit.chooser.pending == 0 and ln.stats()["bandit_expired"] == 1
    assert ln.state.bandit.chooser.posterior("x", "a") == (1.0, 2.0)


class _RacingTopic:
    """A learning topic empty when a fresh learner asks its first question about it, and
    holding one record (offset 0) from then on: a worker wrote it in between."""

    def __init__(self) -> None:
        self.records = 0
        self.position: int | None = None

    def _answered(self) -> None:
        self.records = 1

    async def end_offsets(self, tps: list[object]) -> dict[object, int]:
        end = self.records
        self._answered()
        return {tps[0]: end}

    async def offsets_for_times(self, query: dict[object, int]) -> dict[object, object]:
        from aiokafka.structs import OffsetAndTimestamp

        found = OffsetAndTimestamp(0, 0) if self.records else None
        self._answered()
        return {tp: found for tp in query}

    def seek(self, tp: object, offset: int) -> None:
        self.position = offset


async def test_a_fresh_learner_reads_a_record_written_while_it_looks_for_its_start() -> None:
    from aiokafka import TopicPartition

    from streamproc.learning.learner import seek_window

    topic = _RacingTopic()
    start, where = await seek_window(topic, TopicPartition("learning", 0),  # type: ignore[arg-type]
                                     24 * 3_600_000)
    assert topic.records == 1  # written while the learner looked
    assert start == topic.position == 0, where  # and the learner starts at it, not past it
