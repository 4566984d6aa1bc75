"""The intent scorer in the processor: scores, durable pending labels, exactly-once learning,
signed snapshots."""

from __future__ import annotations

import logging

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.intent import (
    FEATURE_NAMES,
    FEATURES_ID,
    MAX_PENDING,
    SNAPSHOT_KEY,
    IntentScorer,
    MemoryBlobs,
    snapshot_stats,
)
from streamproc.models import IntentModel, dump
from streamproc.models.snapshot import SnapshotError
from streamproc.processor import Processor
from streamproc.segmentation import Segmenter
from streamproc.segments import SegmentConfig, assign_intent
from streamproc.settings import Settings
from streamproc.state.store import MemoryStore

from .helpers import Partition, event, replay_with_redeliveries
from .test_processor import RacingStore

SECRET = "unit-test-secret"
SETTINGS = Settings(model_secret=SECRET, model_snapshot_seconds=30)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(store: MemoryStore | None = None, blobs: MemoryBlobs | None = None,
         settings: Settings = SETTINGS, min_labels: int = 0, clock: Clock | None = None,
         ) -> tuple[Processor, MemoryStore, IntentScorer]:
    store = store or MemoryStore()
    scorer = IntentScorer(settings, blobs, clock=clock or Clock(), min_labels=min_labels)
    proc = Processor(settings, store, clock_ms=lambda: 1_772_359_200_050,
                     segmenter=Segmenter(settings, clock=lambda: 0.0), scorer=scorer)
    return proc, store, scorer


async def profile(store: MemoryStore, cid: str = "c1") -> dict:
    found = await store.read_profile(cid)
    assert found is not None
    return found["profile"]


async def test_browsing_event_is_scored_into_the_profile_segments_and_decision():
    proc, store, scorer = make()
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
    # The snapshot is pending, in the profile, compact.
    pending = p["pending_labels"]
    assert pending["f"] == FEATURES_ID
    [[ts, snap_score, values]] = pending["s"]
    assert ts == 1_772_359_200_000  # 2026-03-01T10:00Z, the event time
    assert snap_score == score and len(values) == len(FEATURE_NAMES)
    assert all(v == round(v, 4) for v in values)
    assert scorer.model.n == 0


async def test_no_score_before_the_model_learnt_enough():
    proc, store, _ = make(min_labels=10)
    await proc.process([Partition().message(event("page_view"))])
    p = await profile(store)
    assert "scores" not in p and "intent" not in p["segments"]
    assert len(p["pending_labels"]["s"]) == 1  # the snapshot is still taken


async def test_purchase_labels_the_pending_snapshots_positive():
    proc, store, scorer = make()
    part = Partition()
    await proc.process([part.message(event("product_view", minute=0)),
                        part.message(event("cart_add", minute=10))])
    assert len((await profile(store))["pending_labels"]["s"]) == 2
    await proc.process([part.message(event("purchase", minute=20))])
    assert "pending_labels" not in await profile(store)
    stats = scorer.model.stats()
    assert (stats["n"], stats["positives"]) == (2, 2)


async def test_snapshots_older_than_the_horizon_become_negatives_on_any_event():
    proc, store, scorer = make()
    part = Partition()
    await proc.process([part.message(event("page_view", minute=0))])
    # 31 minutes later (event time) a profile update arrives: no purchase came in time.
    await proc.process([part.message(event("profile_update", minute=31))])
    stats = scorer.model.stats()
    assert (stats["n"], stats["positives"]) == (1, 0)
    assert "pending_labels" not in await profile(store)
    # A purchase now labels nothing more.
    await proc.process([part.message(event("purchase", minute=32))])
    assert scorer.model.n == 1


async def test_pending_snapshots_are_bounded_one_per_slot():
    proc, store, _ = make()
    part = Partition()
    # 30 events a minute apart within one horizon: one snapshot per 6-minute slot.
    await proc.process([part.message(event("page_view", minute=m)) for m in range(30)])
    items = (await profile(store))["pending_labels"]["s"]
    assert len(items) <= MAX_PENDING
    assert len({ts // (6 * 60_000) for ts, _, _ in items}) == len(items)


async def test_pending_labels_survive_a_restart_of_the_worker():
    store = MemoryStore()
    proc, _, _ = make(store)
    part = Partition()
    await proc.process([part.message(event("cart_add", minute=0))])
    # A new worker (fresh scorer, same Redis) labels the snapshot the first one took.
    proc2, _, scorer2 = make(store)
    await proc2.process([part.message(event("purchase", minute=5))])
    assert (scorer2.model.n, scorer2.model.positives) == (1, 1)


async def test_a_redelivered_batch_learns_nothing_twice():
    proc, store, scorer = make()
    part = Partition()
    msgs = [part.message(event("cart_add", minute=0)), part.message(event("purchase", minute=3))]
    await proc.process(msgs)
    before = await profile(store)
    assert scorer.model.n == 1
    await proc.process(msgs)  # the consumer saw the batch again after a crash
    await proc.process(msgs[1:])
    assert scorer.model.n == 1
    assert await profile(store) == before


async def test_a_lost_compare_and_set_learns_once_from_the_recomputed_state():
    store = RacingStore(races=0)
    proc, _, scorer = make(store)
    part = Partition()
    await proc.process([part.message(event("cart_add", minute=0))])
    store.races = 1  # the purchase's first write loses to a zombie writer, then is recomputed
    await proc.process([part.message(event("purchase", minute=3))])
    assert (scorer.model.n, scorer.model.positives) == (1, 1)


async def test_snapshots_are_written_on_schedule_and_loaded_at_start():
    blobs, clock = MemoryBlobs(), Clock()
    proc, _, scorer = make(blobs=blobs, clock=clock)
    part = Partition()
    await proc.process([part.message(event("cart_add", minute=0)),
                        part.message(event("purchase", minute=2))])
    assert blobs.sets == 0  # not due yet
    clock.now = 31.0
    await proc.process([part.message(event("page_view", minute=4))])
    assert blobs.sets == 1  # one SET per interval, from the batch loop
    await proc.process([part.message(event("page_view", minute=5))])
    assert blobs.sets == 1
    stats = snapshot_stats(blobs.data[SNAPSHOT_KEY], SECRET.encode())
    assert (stats["n"], stats["positives"], stats["version"]) == (1, 1, 1)

    restarted = IntentScorer(SETTINGS, blobs)
    await restarted.refresh()
    assert restarted.model.n == 1 and restarted.model is not scorer.model


async def test_nothing_learnt_nothing_written():
    blobs, clock = MemoryBlobs(), Clock()
    proc, _, scorer = make(blobs=blobs, clock=clock)
    await proc.process([Partition().message(event("page_view"))])
    clock.now = 100.0
    assert not await scorer.checkpoint(force=True) and blobs.sets == 0


async def test_a_snapshot_signed_with_another_secret_is_refused(caplog):
    blobs = MemoryBlobs()
    trained = IntentModel()
    trained.observe({"cart_value": 1.0}, True)
    blobs.data[SNAPSHOT_KEY] = dump(trained, b"someone-elses-secret", version=9)
    scorer = IntentScorer(SETTINGS, blobs)
    with caplog.at_level(logging.ERROR, logger="streamproc.intent"):
        await scorer.refresh()
    assert scorer.model.n == 0  # a fresh model, nothing unpickled
    assert "refusing the intent model snapshot" in caplog.text
    assert "signature does not match" in caplog.text
    with pytest.raises(SnapshotError):
        snapshot_stats(blobs.data[SNAPSHOT_KEY], SECRET.encode())


async def test_without_a_secret_no_snapshot_and_one_warning(caplog):
    blobs = MemoryBlobs()
    blobs.data[SNAPSHOT_KEY] = b"never read"
    with caplog.at_level(logging.WARNING, logger="streamproc.intent"):
        proc, _, scorer = make(blobs=blobs, settings=Settings())
    assert caplog.text.count("STREAMPROC_MODEL_SECRET is not set") == 1
    part = Partition()
    await proc.process([part.message(event("cart_add", minute=0)),
                        part.message(event("purchase", minute=2))])
    assert scorer.model.n == 1
    assert not await scorer.checkpoint(force=True) and blobs.sets == 0


async def test_a_failing_snapshot_write_does_not_fail_the_batch(caplog):
    class BrokenBlobs(MemoryBlobs):
        async def set(self, key: str, value: bytes) -> None:
            raise ConnectionError("Redis went away")

    clock = Clock()
    proc, _, scorer = make(blobs=BrokenBlobs(), clock=clock)
    part = Partition()
    await proc.process([part.message(event("cart_add", minute=0))])
    clock.now = 100.0
    with caplog.at_level(logging.WARNING, logger="streamproc.intent"):
        result = await proc.process([part.message(event("purchase", minute=2))])
    assert result.applied == 1 and "could not write the intent model snapshot" in caplog.text
    assert scorer.learnt_since_snapshot == 1  # tried again at the next interval


def test_segment_tiers_match_the_models_tiers():
    model, config = IntentModel(), SegmentConfig()
    assert model.thresholds == (config.intent_warm, config.intent_hot)
    for i in range(101):
        score = i / 100
        assert assign_intent({"scores": {"intent": score}}, config).segment == model.tier(score)


def test_intent_settings_from_env():
    s = Settings.from_env({"STREAMPROC_INTENT_HORIZON_MINUTES": "45",
                           "STREAMPROC_MODEL_SECRET": " s3cret ",
                           "STREAMPROC_MODEL_SNAPSHOT_SECONDS": "5"})
    assert (s.intent_horizon_minutes, s.model_secret, s.model_snapshot_seconds) == (
        45, " s3cret ", 5)
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
    from streamproc import cli

    model = IntentModel()
    model.observe({"cart_value": 1.0}, True)
    blob = dump(model, SECRET.encode(), version=model.version)

    async def read(settings):
        return blob

    monkeypatch.setattr(cli, "_read_snapshot", read)
    monkeypatch.setenv("STREAMPROC_MODEL_SECRET", secret)
    assert cli.main(["models"]) == code
    captured = capsys.readouterr()
    assert expect in (captured.out if code == 0 else captured.err)
    if code == 0:
        shown = orjson.loads(captured.out)["intent"]
        assert (shown["n"], shown["version"], shown["key"]) == (1, 1, SNAPSHOT_KEY)
        assert {"auc", "logloss", "drifts", "detections"} <= set(shown)


def test_models_command_without_a_snapshot(monkeypatch, capsys):
    from streamproc import cli

    async def read(settings):
        return None

    monkeypatch.setattr(cli, "_read_snapshot", read)
    monkeypatch.setenv("STREAMPROC_MODEL_SECRET", SECRET)
    assert cli.main(["models"]) == 1
    assert "no intent model snapshot" in capsys.readouterr().err


# --- exactly once, whatever the redeliveries ----------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(["page_view", "product_view", "cart_add", "purchase",
                                    "search", "profile_update"]), min_size=1, max_size=25),
    customers=st.lists(st.sampled_from(["a", "b"]), min_size=25, max_size=25),
    gaps=st.lists(st.integers(0, 20), min_size=25, max_size=25),
    replays=st.lists(st.tuples(st.integers(0, 24), st.integers(1, 25)), max_size=5),
    cut=st.integers(1, 25),
)
async def test_redeliveries_learn_exactly_what_a_clean_pass_learns(kinds, customers, gaps,
                                                                    replays, cut):
    minutes = [sum(gaps[: i + 1]) for i in range(len(kinds))]
    bodies = [event(k, customer=customers[i], ts=f"2026-03-01T{10 + m // 60:02d}:{m % 60:02d}:00Z")
              for i, (k, m) in enumerate(zip(kinds, minutes, strict=False))]
    # Scores depend on what the model learnt before (labels are learnt after each batch), so
    # the reference is one pass in the same batches, without the redeliveries.
    clean_part = Partition()
    clean = [clean_part.message(b) for b in bodies]
    clean_proc, clean_store, clean_scorer = make()
    for i in range(0, len(clean), cut):
        await clean_proc.process(clean[i:i + cut])

    part = Partition()
    log = [part.message(b) for b in bodies]
    proc, store, scorer = make()
    await replay_with_redeliveries(proc.process, log, replays, cut)
    assert scorer.model.stats() == clean_scorer.model.stats()
    for cid in set(customers[: len(kinds)]):
        got, want = await profile(store, cid), await profile(clean_store, cid)
        assert got.get("pending_labels") == want.get("pending_labels")
        assert got.get("scores") == want.get("scores")
