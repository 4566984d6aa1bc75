"""The intent scorer in the processor: scores, observations for the learner (exactly once through
the outbox), model reloads by version, refused snapshots, ``streamproc models``."""

from __future__ import annotations

import logging
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.learning.modelstore import MemoryModelStore
from streamproc.learning.observations import FEATURE_NAMES, FEATURES_ID, Observation, parse
from streamproc.learning.scorer import IntentScorer, ServedModels, snapshot_stats
from streamproc.models import IntentModel, dump
from streamproc.models.features import INTENT_NAMES, intent_values
from streamproc.models.snapshot import SnapshotError
from streamproc.processor import Processor
from streamproc.segments import SegmentConfig, assign_intent
from streamproc.segments.segmenter import Segmenter
from streamproc.settings import Settings
from streamproc.state.memory import MemoryStore

from .helpers import Partition, event, replay_with_redeliveries

SECRET = "unit-test-secret"
SETTINGS = Settings(model_secret=SECRET, model_snapshot_seconds=30, model_reload_seconds=5,
                    consent_defaults="personalisation=granted")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(store: MemoryStore | None = None, models: MemoryModelStore | None = None,
         settings: Settings = SETTINGS, min_labels: int = 0, clock: Clock | None = None,
         ) -> tuple[Processor, MemoryStore, IntentScorer]:
    store = store or MemoryStore()
    scorer = IntentScorer(settings, models, clock=clock or Clock(), min_labels=min_labels)
    proc = Processor(settings, store, clock_ms=lambda: 1_772_359_200_050,
                     segmenter=Segmenter(settings, clock=lambda: 0.0), scorer=scorer)
    return proc, store, scorer


def trained(n: int = 1) -> IntentModel:
    model = IntentModel()
    for i in range(n):
        model.observe({"cart_value": float(i % 2)}, bool(i % 2))
    return model


async def publish(models: MemoryModelStore, version: int, model: IntentModel,
                  secret: bytes = SECRET.encode()) -> None:
    served = dump(ServedModels(model, {"offset": 41}), secret, version)
    assert await models.publish(version, served, b"learner state, not read by scorers")


def observations(learning: list[tuple[bytes, bytes]]) -> list[Observation]:
    """The scorer's observations of a batch, without the decisions' lessons for the bandit."""
    return [o for _, v in learning if (o := parse(v)).lesson is None]


async def profile(store: MemoryStore, cid: str = "c1") -> dict:
    found = await store.read_profile(cid)
    assert found is not None
    return found["profile"]


async def test_browsing_event_is_scored_into_the_profile_segments_and_decision():
    proc, store, _ = make()
    result = await proc.process([Partition().message(event("cart_add"))])
    p = await profile(store)
    score = p["scores"]["intent"]
    assert 0.0 <= score <= 1.0 and score == round(score, 4)
    assert p["segments"]["intent"] == assign_intent(p, SegmentConfig()).segment
    moves = [orjson.loads(v) for _, v in result.segments]
    assert [m["to"] for m in moves if m["segmentation"] == "intent"] == [p["segments"]["intent"]]
    # An untrained logistic regression says 0.5 to everybody: hot. So the cart add fires two
    # catalogue triggers: its own (cart_drawer) and entering intent hot (homepage_hero).
    decisions = {d["trigger"]["name"]: d for d in (orjson.loads(v) for _, v in result.decisions)}
    assert set(decisions) == {"cart_add", "intent_hot"}
    decision = decisions["cart_add"]
    assert decision["scores"]["intent"] == score
    assert p["segments"]["intent"] == "hot"
    assert decision["reasons"][-1] == "purchase intent is hot (0.50)"
    assert decisions["intent_hot"]["slot"] == "homepage_hero"
    assert decisions["intent_hot"]["reasons"][0] == "trigger intent_hot: entered intent hot"
    assert "intent" not in decision["model_versions"]  # no snapshot served yet
    assert "pending_labels" not in p  # the learner keeps them now, not the profile


async def test_observations_for_the_learner_carry_features_score_and_version():
    proc, _, scorer = make()
    scorer.adopt(ServedModels(trained(3)), 7, 0)
    part = Partition()
    result = await proc.process([part.message(event("cart_add", minute=1)),
                                 part.message(event("purchase", minute=3)),
                                 part.message(event("profile_update", minute=4))])
    # The decisions' lessons for the bandit travel there too (tests/unit/test_decisions_wiring).
    observed = [(k, v) for k, v in result.learning if parse(v).lesson is None]
    assert [k for k, _ in observed] == [b"c1", b"c1"]  # nothing for a profile update
    scored, bought = (parse(v) for _, v in observed)
    assert scored.kind == "score" and scored.version == 7
    assert scored.ts_ms == 1_772_359_260_000 and set(scored.features) == set(FEATURE_NAMES)
    assert scored.features["ev_cart_add"] == 1.0
    record = orjson.loads(observed[0][1])
    assert record["f"] == FEATURES_ID and record["trigger"]["offset"] == 0
    assert (bought.kind, bought.ts_ms) == ("purchase", 1_772_359_380_000)
    [(_, decision)] = [d for d in result.decisions if b"cart_reminder" in d[1]]
    assert orjson.loads(decision)["model_versions"]["intent"] == "v7"


async def test_no_score_is_stored_until_the_model_has_learnt_enough():
    proc, store, scorer = make(min_labels=5)
    scorer.adopt(ServedModels(trained(4)), 1, 0)
    part = Partition()
    result = await proc.process([part.message(event("page_view", minute=0))])
    assert "scores" not in await profile(store) and len(result.learning) == 1
    scorer.adopt(ServedModels(trained(5)), 2, 0)
    await proc.process([part.message(event("page_view", minute=1))])
    assert "intent" in (await profile(store))["scores"]


async def test_a_newer_version_is_reloaded_within_the_reload_period():
    models, clock = MemoryModelStore(), Clock()
    proc, _, scorer = make(models=models, clock=clock)
    part = Partition()
    await proc.process([part.message(event("page_view", minute=0))])
    assert scorer.version == 0
    await publish(models, 1, trained(10))
    clock.now = 2.0
    await proc.process([part.message(event("page_view", minute=1))])
    assert scorer.version == 0  # not checked again before the period is over
    clock.now = 5.0
    result = await proc.process([part.message(event("page_view", minute=2))])
    assert scorer.version == 1 and scorer.model.n == 10
    assert parse(result.learning[0][1]).version == 1
    stats = scorer.stats()
    assert (stats["model_version"], stats["intent_examples"], stats["model_reloads_total"]) == (
        1.0, 10.0, 1.0)
    assert stats["snapshot_age_s"] >= 0 and {"intent_auc", "drifts_total"} <= set(stats)


def learnt_on_features(seed: int) -> IntentModel:
    """A model learnt on every intent feature (random values, labels following the views)."""
    rng = random.Random(seed)
    model = IntentModel()
    for _ in range(300):
        x = {name: rng.uniform(0, 3) for name in FEATURE_NAMES}
        model.observe(x, rng.random() < x["s_views"] / 3)
    return model


async def test_each_served_version_is_folded_again_and_scores_as_rivers_pipeline():
    models, clock = MemoryModelStore(), Clock()
    proc, store, scorer = make(models=models, clock=clock)
    part = Partition()
    scored = []
    for version, minute in ((1, 0), (2, 1)):
        await publish(models, version, learnt_on_features(version))
        clock.now += 5.0
        result = await proc.process([part.message(event("page_view", minute=minute))])
        assert scorer.version == version and scorer._folded is not None  # served folded
        obs = observations(result.learning)[0]
        assert obs.features is not None and obs.version == version
        x = dict(zip(INTENT_NAMES, intent_values(await profile(store), "page_view",
                                                  obs.ts_ms), strict=True))
        assert {n: x[n] for n in FEATURE_NAMES} == obs.features  # the features it scored
        # The folded model of this version, bit for bit River's (rounded as stored).
        assert obs.score == round(scorer.model.predict_proba_one(x), 4)
        scored.append((obs.score, round(learnt_on_features(3 - version).predict_proba_one(x),
                                        4)))
    assert all(mine != other for mine, other in scored)  # each version's own model scored


async def test_a_snapshot_signed_with_another_secret_is_refused_once(caplog):
    models = MemoryModelStore()
    await publish(models, 9, trained(3), secret=b"someone-elses-secret")
    scorer = IntentScorer(SETTINGS, models, clock=Clock())
    with caplog.at_level(logging.ERROR, logger="streamproc.learning.scorer"):
        await scorer.refresh()
        scorer._next_check = 0.0
        await scorer.refresh()
    assert scorer.version == 0 and scorer.model.n == 0  # nothing unpickled
    assert caplog.text.count("refusing the model snapshot v9") == 1
    assert "signature does not match" in caplog.text
    assert scorer.stats()["model_refusals_total"] == 1.0
    with pytest.raises(SnapshotError):
        snapshot_stats(models.data["serving"], SECRET.encode())


async def test_without_a_secret_no_reload_and_one_warning(caplog):
    models = MemoryModelStore()
    await publish(models, 3, trained(3))
    with caplog.at_level(logging.WARNING, logger="streamproc.learning.scorer"):
        _, _, scorer = make(models=models,
                            settings=Settings(consent_defaults="personalisation=granted"))
    assert caplog.text.count("STREAMPROC_MODEL_SECRET is not set") == 1
    await scorer.refresh()
    assert scorer.version == 0


def test_segment_tiers_match_the_models_tiers():
    model, config = IntentModel(), SegmentConfig()
    assert model.thresholds == (config.intent_warm, config.intent_hot)
    for i in range(101):
        score = i / 100
        assert assign_intent({"scores": {"intent": score}}, config).segment == model.tier(score)


def test_model_settings_from_env():
    s = Settings.from_env({"STREAMPROC_INTENT_HORIZON_MINUTES": "45",
                           "STREAMPROC_MODEL_SECRET": " s3cret ",
                           "STREAMPROC_MODEL_SNAPSHOT_SECONDS": "5",
                           "STREAMPROC_LABEL_LATENESS_SECONDS": "60",
                           "STREAMPROC_MODEL_RELOAD_SECONDS": "2",
                           "STREAMPROC_MODEL_SNAPSHOT_LABELS": "100",
                           "STREAMPROC_TOPIC_LEARNING": "my.learning"})
    assert (s.intent_horizon_minutes, s.model_secret, s.model_snapshot_seconds) == (
        45, " s3cret ", 5)
    assert (s.label_lateness_seconds, s.model_reload_seconds, s.model_snapshot_labels) == (
        60, 2, 100)
    assert s.topics.learning == "my.learning" and s.topics.learning in s.topics.all()
    assert s.topics.partitions_of("my.learning", 12) == 1
    assert s.topics.partitions_of(s.topics.browsing, 12) == 12
    assert "s3cret" not in repr(s)
    assert Settings.from_env({}).model_secret == ""


# --- `streamproc models` ------------------------------------------------------------------------

def test_models_command_needs_the_secret(monkeypatch, capsys):
    from streamproc.cli import main

    monkeypatch.delenv("STREAMPROC_MODEL_SECRET", raising=False)
    assert main(["models"]) == 2
    assert "STREAMPROC_MODEL_SECRET is not set" in capsys.readouterr().err


@pytest.mark.parametrize(("secret", "code", "expect"), [
    (SECRET, 0, '"positives": 1'),
    ("a-wrong-secret", 2, "signature does not match"),
])
def test_models_command_prints_verified_stats(monkeypatch, capsys, secret, code, expect):
    from streamproc.cli import commands as cli

    blob = dump(ServedModels(trained(2), {"offset": 41, "pending": 3}), SECRET.encode(),
                version=4)

    async def read(settings):
        return blob

    monkeypatch.setattr(cli, "_read_snapshot", read)
    monkeypatch.setenv("STREAMPROC_MODEL_SECRET", secret)
    assert cli.main(["models"]) == code
    captured = capsys.readouterr()
    assert expect in (captured.out if code == 0 else captured.err)
    if code == 0:
        out = orjson.loads(captured.out)
        shown = out["intent"]
        assert (shown["n"], shown["version"]) == (2, 4)
        assert out["key"] == "sp:model:{streamproc}:serving"
        assert shown["learner"] == {"offset": 41, "pending": 3}
        assert {"auc", "logloss", "drifts", "detections"} <= set(shown)


def test_models_command_without_a_snapshot(monkeypatch, capsys):
    from streamproc.cli import commands as cli

    async def read(settings):
        return None

    monkeypatch.setattr(cli, "_read_snapshot", read)
    monkeypatch.setenv("STREAMPROC_MODEL_SECRET", SECRET)
    assert cli.main(["models"]) == 1
    assert "no model snapshot in Redis" in capsys.readouterr().err


# --- exactly once, whatever the redeliveries ----------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["page_view", "product_view", "cart_add", "purchase",
                                    "search", "profile_update"]), min_size=1, max_size=25),
    customers=st.lists(st.sampled_from(["a", "b"]), min_size=25, max_size=25),
    replays=st.lists(st.tuples(st.integers(0, 24), st.integers(1, 25)), max_size=5),
    cut=st.integers(1, 25),
)
async def test_redeliveries_publish_every_observation_and_no_other(kinds, customers, replays,
                                                                   cut):
    bodies = [event(k, customer=customers[i], minute=i) for i, k in enumerate(kinds)]
    clean_part = Partition()
    clean_proc, _, _ = make()
    clean: list[bytes] = []
    for msg in [clean_part.message(b) for b in bodies]:
        clean.extend(v for _, v in (await clean_proc.process([msg])).learning)

    part = Partition()
    log = [part.message(b) for b in bodies]
    proc, _, _ = make()
    published: list[bytes] = []

    async def process(batch):
        published.extend(v for _, v in (await proc.process(batch)).learning)

    await replay_with_redeliveries(process, log, replays, cut)
    # Redeliveries publish some again (the learner drops them by event id, and the bandit's
    # lessons by kind and decision id), none is missing, and every copy is the same record.
    def key(value: bytes) -> tuple[str, str, str]:
        obs = parse(value)
        return obs.event_id, obs.kind, obs.lesson.decision_id if obs.lesson else ""

    by_key: dict[tuple[str, str, str], set[bytes]] = {}
    for value in published:
        by_key.setdefault(key(value), set()).add(value)
    assert {key(v): {v} for v in clean} == by_key


async def test_lifetime_value_is_scored_and_feeds_the_value_tier():
    proc, store, scorer = make()
    part = Partition()
    await proc.process([part.message(event("page_view", minute=0))])
    assert "ltv" not in (await profile(store)).get("scores", {})  # never bought: no value yet
    result = await proc.process([part.message(event("purchase", minute=3, amount=200.0))])
    p = await profile(store)
    expected = p["scores"]["ltv"]
    assert expected == scorer.ltv.predict_value(p["rfm"], 200.0, 1, 365) > 0
    tier = p["segments"]["value_tier"]
    assert (tier, 200.0 + expected >= 250.0) in {("profitable", True), ("emerging", False)}
    [bought] = [o for o in observations(result.learning) if o.kind == "purchase"]
    assert (bought.orders, bought.total, bought.rfm) == (1, 200.0, {
        k: p["rfm"][k] for k in ("frequency", "recency", "T")})


async def test_session_starts_carry_the_behaviour_and_get_a_cluster_segment():
    from streamproc.models import BehaviourClusters
    from streamproc.models.features import behaviour_vector

    proc, store, scorer = make()
    part = Partition()
    result = await proc.process([part.message(event("product_view", minute=0)),
                                 part.message(event("product_view", minute=1))])
    first, second = observations(result.learning)
    assert first.behaviour is not None and second.behaviour is None  # once per session
    assert "cluster" not in await profile(store)  # no clusters served yet

    clusters = BehaviourClusters(k=2, warmup=4)
    for v in [{"cat:shoes": 1.0}, {"cat:books": 1.0}, {"cat:shoes": 0.9, "cat:sports": 0.1},
              {"cat:books": 0.8, "cat:home": 0.2}]:
        clusters.learn_one(v)
    scorer.adopt(ServedModels(trained(1), {}, None, clusters.serving_copy()), 2, 0)
    result = await proc.process([part.message(event("product_view", minute=59))])  # new session
    p = await profile(store)
    expected = clusters.assign(behaviour_vector(p))
    assert p["cluster"] == {"id": expected, "about": clusters.describe(expected)}
    assert "shoes" in p["cluster"]["about"]
    assert p["segments"]["cluster"] == str(expected)
    moves = [orjson.loads(v) for _, v in result.segments]
    assert [m["to"] for m in moves if m["segmentation"] == "cluster"] == [str(expected)]
