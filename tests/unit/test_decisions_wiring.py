"""The engine inside the processor: decisions out, lessons published for the learner only once
saved (and again with a redelivered batch), feedback, the latest decision per slot, and bad slot
requests dead-lettered."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml

from streamproc.decisions.catalogue import CatalogueFile, default_catalogue_path, load_catalogue
from streamproc.decisions.engine import Engine, Lesson
from streamproc.decisions.latest import unexpired
from streamproc.errors import ConfigError
from streamproc.learning.observations import parse_all
from streamproc.processor import Processor
from streamproc.settings import Settings
from streamproc.state.keys import latest_decisions_key
from streamproc.state.memory import MemoryStore
from streamproc.state.store import Write
from streamproc.worker.app import create_app

from .helpers import GRANTED, SETTINGS, Partition, event
from .test_decisions_engine import Recorder

NOW = 1_772_359_200_050  # 2026-03-01T10:00:00.050Z: the helpers' events are at 10:mm


def make(store: MemoryStore | None = None, now: int = NOW
         ) -> tuple[Processor, Recorder, MemoryStore]:
    chooser, store = Recorder(), store or MemoryStore()
    engine = Engine(load_catalogue(default_catalogue_path()), chooser,
                    assign=lambda cid, exp: "bandit", consent_defaults=GRANTED)
    proc = Processor(SETTINGS, store, clock_ms=lambda: now, engine=engine)
    return proc, chooser, store


SHOES = {"product_id": "s1", "category": "shoes", "price": 60.0}


def lessons(learning: list[tuple[bytes, bytes]]) -> list[tuple[str, Lesson | None]]:
    """The lessons among a batch's learning-topic observations, with their customer."""
    found = [o for _, value in learning for o in parse_all(value)]
    return [(o.customer_id, o.lesson) for o in found if o.lesson is not None]


async def test_a_slot_request_is_answered_and_kept_as_the_latest_for_its_slot() -> None:
    proc, chooser, store = make()
    part = Partition()
    result = await proc.process([
        *(part.message(event("product_view", product=SHOES)) for _ in range(4)),
        part.message(event("slot_request", minute=1, slot="homepage_hero")),
    ])
    [(key, value)] = result.decisions
    decision = orjson.loads(value)
    assert key == b"c1" and decision["action"]["id"] == "running_shoes_10pct"
    assert decision["experiment"] == {"id": "hero-2026", "arm": "bandit"}
    assert decision["trigger"]["offset"] == 4 and decision["latency_ms"] == 50
    assert unexpired(store.latest[latest_decisions_key("c1")], NOW) == {"homepage_hero": decision}
    # The learner is told to expect a reward (a learning-topic observation, published once the
    # state is saved); the worker's chooser learns nothing itself.
    [(cid, lesson)] = lessons(result.learning)
    assert (cid, lesson.kind, lesson.decision_id, lesson.action_id, lesson.context) == (
        "c1", "expect", decision["decision_id"], decision["action"]["id"], decision["context"])
    assert lesson.ts_ms == 1_772_359_260_000  # the decision's event time
    assert chooser.expected == chooser.rewards == chooser.advanced == []


async def test_feedback_reaches_the_learner_once_the_profile_is_saved() -> None:
    proc, chooser, store = make()
    part = Partition()
    messages = [
        *(part.message(event("product_view", product=SHOES)) for _ in range(4)),
        part.message(event("slot_request", minute=1, slot="homepage_hero")),
    ]
    first = await proc.process(messages)
    decision = orjson.loads(first.decisions[0][1])
    decision_id = decision["decision_id"]
    # Redelivered, the batch publishes its expectation again, from the outbox.
    assert lessons((await proc.process(messages)).learning) == lessons(first.learning)

    # A rival write between our read and our write: the batch is recomputed, and the reward
    # is given once, for the attempt that was saved.
    real_save = store.save
    raced = False

    async def save_after_a_rival(writes: list[Write]) -> list[str]:
        nonlocal raced
        if not raced:
            raced = True
            stored = store.rows["sp:{c1}:state"]
            store.rows["sp:{c1}:state"] = type(stored)(stored.version + 1, stored.doc,
                                                       stored.outbox)
            return ["c1"]
        return await real_save(writes)

    store.save = save_after_a_rival  # type: ignore[method-assign]
    feedback = Partition(1)
    click = await proc.process([feedback.message(event(
        "feedback", minute=2, decision_id=decision_id, outcome="click"))])
    [(cid, lesson)] = lessons(click.learning)
    assert raced and (cid, lesson.kind, lesson.decision_id, lesson.reward) == (
        "c1", "reward", decision_id, 1.0)
    # The reward names the pick and the decision's event time (the learner's wait runs from it).
    assert (lesson.action_id, lesson.context, lesson.ts_ms) == (
        decision["action"]["id"], decision["context"], 1_772_359_260_000)
    conversion = await proc.process([feedback.message(event(
        "feedback", minute=3, decision_id=decision_id, outcome="conversion", revenue=30.0))])
    assert lessons(conversion.learning) == []  # at most one reward per decision
    assert chooser.rewards == []  # the worker's chooser learns nothing itself


async def test_a_request_for_an_unknown_slot_is_dead_lettered_and_the_rest_goes_on() -> None:
    proc, _, store = make()
    part = Partition()
    result = await proc.process([
        part.message(event("slot_request", slot="footer")),
        part.message(event("cart_add", minute=1, product=SHOES)),
    ])
    [(_, dead)] = result.deadletters
    record = orjson.loads(dead)
    assert record["reason"] == "processing_error"
    assert "slot_request for unknown slot 'footer'" in record["error"]
    assert [orjson.loads(v)["action"]["id"] for _, v in result.decisions] == ["cart_reminder"]
    stored = await store.read_profile("c1")
    assert stored is not None and "slot_request" not in stored["profile"]["counts"]


async def test_decisions_already_expired_are_not_kept_as_latest() -> None:
    a_day_later = NOW + 86_400_000
    proc, _, store = make(now=a_day_later)
    result = await proc.process([Partition().message(event("cart_add", product=SHOES))])
    assert len(result.decisions) == 1  # published all the same
    assert store.latest == {}  # the cart drawer's decision expired after 60 minutes


def test_a_worker_does_not_start_on_a_broken_catalogue(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.yaml"
    data = yaml.safe_load(default_catalogue_path().read_text())
    data["triggers"][1]["slots"] = ["basket"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"line \d+: triggers\[1\] \(id: cart_add\)\.slots: "
                       r"unknown slot 'basket'"):
        create_app(Settings.from_env({"STREAMPROC_CATALOGUE": str(path),
                                      "STREAMPROC_STACK_DIR": str(tmp_path / "stack")}))


async def test_the_engine_follows_the_catalogue_file_while_running(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.yaml"
    data = yaml.safe_load(default_catalogue_path().read_text())
    path.write_text(yaml.safe_dump(data))
    clock = [0.0]
    source = CatalogueFile(path, clock=lambda: clock[0])
    proc = Processor(SETTINGS, MemoryStore(), clock_ms=lambda: NOW,
                     engine=Engine(source, Recorder(), consent_defaults=GRANTED))
    part = Partition()
    first = await proc.process([part.message(event("cart_add", product=SHOES))])
    assert orjson.loads(first.decisions[0][1])["action"]["id"] == "cart_reminder"

    # The marketer retires the cart reminder; the running worker picks it up.
    data["actions"] = [a for a in data["actions"] if a["id"] != "cart_reminder"]
    path.write_text(yaml.safe_dump(data))
    clock[0] = 5.0
    second = await proc.process([part.message(event("cart_add", minute=40, product=SHOES))])
    decision = orjson.loads(second.decisions[0][1])
    assert decision["action"]["id"] == "free_delivery_banner" and source.version == 2
    assert decision["model_versions"]["catalogue"] != orjson.loads(
        first.decisions[0][1])["model_versions"]["catalogue"]
