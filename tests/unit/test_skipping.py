"""Work skipped when an event changes nothing it reads (STREAMPROC_SKIP_UNCHANGED): the same
outputs with skipping on and off, on the simulator's stream with redeliveries, lost writes,
timers, erasures and poison events, and custom rules of every kind."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamproc import processor as processor_module
from streamproc.decisions.catalogue import default_catalogue_path, load_catalogue
from streamproc.decisions.chooser import UniformChooser
from streamproc.decisions.engine import Engine
from streamproc.decisions.record import iso_ms
from streamproc.events.codec import RawMessage, parse_ts
from streamproc.events.partitioner import partition_for
from streamproc.learning.scorer import IntentScorer
from streamproc.processor import Processor
from streamproc.segments import SegmentConfig, assign_all, parse_rules
from streamproc.segments import assign as assign_module
from streamproc.segments.segmenter import Segmenter
from streamproc.simulator import Population, generate_events
from streamproc.state.profile import apply_event, new_profile

from .helpers import SETTINGS, Partition, event
from .test_profile_cache import LosingEveryFifthWrite

NOW_MS = 1_772_359_200_050
PARTITIONS = 3
RULES = (Path(__file__).parents[2] / "schemas/examples/segment-rules.yaml").read_text() + """
  - name: follows_a_custom_segment
    description: in a custom segment assigned at an earlier event
    when: {field: segments.custom.shoe_browsers_not_buying, op: "==", value: member}
  - name: reads_an_untracked_part
    when: {field: customer_id, op: exists}
  - name: hot_or_clustered
    when:
      any:
        - {field: scores.intent, op: ">=", value: 0.5}
        - {field: segments.journey, op: "==", value: cart_builder}
"""


def simulated_log(customers: int, events: int, seed: int, stretch: int = 1) -> list[RawMessage]:
    """Simulated events as a worker reads them (a few partitions per topic), with an erasure
    of a customer every thousand events (each comes back after it). ``stretch`` multiplies
    the time between events: 800 turns the simulator's day into about two years, with gaps
    of weeks between a customer's events (recency buckets, lifecycle stages and timers)."""
    start = datetime(2026, 3, 2, tzinfo=UTC)
    sims = list(itertools.islice(
        generate_events(Population.generate(customers, seed), start, seed), events))
    offsets: dict[tuple[str, int], int] = {}
    log = []
    start_ms = int(start.timestamp() * 1000)
    for i, sim in enumerate(sims):
        body = sim.event
        if stretch != 1:
            body = {**body, "ts": iso_ms(start_ms + (parse_ts(body["ts"]) - start_ms) * stretch)}
        if i % 1000 == 500:
            body = {"event_id": f"erase-{i}", "type": "erase", "customer_id": sims[i // 2].key,
                    "ts": body["ts"]}
        topic = getattr(SETTINGS.topics, "profiles" if body["type"] == "erase" else sim.topic)
        partition = partition_for(body["customer_id"].encode(), PARTITIONS)
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        log.append(RawMessage(topic, partition, offset, body["customer_id"].encode(),
                              orjson.dumps(body), parse_ts(body["ts"])))
    return log


async def replay(skip: bool, log: list[RawMessage], rules: Path) -> dict[str, Any]:
    """Everything ``log`` gives in batches of 61, with ranges read again (a crash before the
    commit), on a store that loses some writes: outputs per batch and everything stored."""
    settings = dataclasses.replace(SETTINGS, timer_lateness_seconds=0, skip_unchanged=skip,
                                   segment_rules=rules)
    store = LosingEveryFifthWrite()
    proc = Processor(settings, store, clock_ms=lambda: NOW_MS,
                     segmenter=Segmenter(settings, clock=lambda: 0.0),
                     scorer=IntentScorer(settings, min_labels=0))
    batches = [log[i:i + 61] for i in range(0, len(log), 61)]
    for at in (len(batches) // 3, 2 * len(batches) // 3):
        batches[at:at] = batches[at - 4:at - 1]  # redelivered
    outputs = []
    for batch in batches:
        result = await proc.process(batch)
        await proc.settle(result)
        outputs.append((result.decisions, result.segments, result.learning, result.deadletters,
                        result.erased, result.applied, result.redelivered, result.duplicates,
                        result.timers_fired, result.timers_done, result.unprofiled))
    return {"outputs": outputs, "rows": store.rows, "zsets": store.zsets,
            "latest": store.latest, "kpis": store.kpis, "hist": store.hist,
            "buckets": store.buckets,
            # Keyed by a token of the store's own random key: the erasure times compared.
            "erased": sorted(erased_ms for erased_ms, _ in store.erased.values())}


@pytest.mark.parametrize(("seed", "stretch"), [(3, 1), (5, 1), (8, 1), (3, 800), (5, 800)])
async def test_skipping_gives_the_outputs_of_running_everything(seed, stretch, monkeypatch,
                                                                 tmp_path) -> None:
    real_apply = processor_module.apply_event

    def poisoned(p, type_, ts_ms, data, config):  # type: ignore[no-untyped-def]
        parts = real_apply(p, type_, ts_ms, data, config)  # changes the profile, then fails
        if type_ == "search" and (ts_ms // 1000) % 5 == 0:
            raise RuntimeError("profile bug")
        return parts

    monkeypatch.setattr(processor_module, "apply_event", poisoned)
    runs: list[str] = []

    def counted(module: Any, name: str, what: str) -> None:
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, **k: runs.append(what) or real(*a, **k))

    counted(assign_module, "assign_demographics", "segment")
    counted(assign_module, "rfm_deferred", "rfm")
    counted(assign_module, "lifecycle_deferred", "lifecycle")
    counted(assign_module, "journey_deferred", "journey")
    counted(Engine, "decide", "decide")
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    stream = simulated_log(customers=150, events=4000, seed=seed, stretch=stretch)
    everything = await replay(False, stream, rules)
    ran_everything = {what: runs.count(what) for what in set(runs)}
    runs.clear()
    skipping = await replay(True, stream, rules)
    for what, count in ran_everything.items():  # the work was skipped, not only the same
        # Journey follows product views and sessions: most events of a stretched stream
        # start a session.
        assert runs.count(what) < (count if what == "journey" else count / 2), what
    assert skipping["outputs"] == everything["outputs"]
    for what in ("rows", "zsets", "latest", "kpis", "hist", "buckets", "erased"):
        assert skipping[what] == everything[what], what
    # The stream went through every path the skipping must follow.
    outputs = everything["outputs"]
    assert sum(o[6] for o in outputs) > 0, "no redelivery"
    assert sum(o[8] for o in outputs) > 0, "no timer fired"
    assert any(o[4] for o in outputs), "no erasure"
    assert any(o[3] for o in outputs), "no poison event"
    assert sum(len(o[0]) for o in outputs) > 100, "few decisions"
    moves = [orjson.loads(r) for o in outputs for _, r in o[1]]
    moved = {m["segmentation"] for m in moves}
    for segmentation in ("rfm", "lifecycle", "journey", "intent", "country",
                         "custom.shoe_browsers_not_buying", "custom.follows_a_custom_segment",
                         "custom.hot_or_clustered"):
        assert segmentation in moved, segmentation
    if stretch > 1:
        # Time alone moved them, on events that changed nothing they read otherwise (not a
        # purchase, not a timer): the moments their skipping waits for were reached.
        by_time = {(m["segmentation"], m["to"]) for m in moves
                   if m["trigger"]["type"] not in ("purchase", "timer") and m["from"]}
        assert {s for s, _ in by_time} >= {"rfm", "lifecycle"}, by_time
        assert {("lifecycle", "at_risk"), ("lifecycle", "lapsed")} <= {
            (m["segmentation"], m["to"]) for m in moves}


def test_a_rule_reads_the_parts_its_condition_names() -> None:
    rules = parse_rules({"segments": [
        {"name": "a", "when": {"all": [
            {"field": "cart.value", "op": ">", "value": 1},
            {"count": {"event": "search", "within_days": 3, "at_least": 1}}]}},
        {"name": "b", "when": {"not": {"field": "segments.custom.a", "op": "exists"}}},
    ]})
    assert [r.reads for r in rules.rules] == [frozenset({"cart", "activity", "day"}),
                                               frozenset({"segments"})]


def test_only_the_segmentations_reading_a_changed_part_run() -> None:
    p = new_profile("c1")
    parts = apply_event(p, "profile_update", 0, {"attributes": {"country": "FR"}})
    assert "attributes" in parts and "purchases" not in parts
    config = SegmentConfig()
    assigned = assign_all(p, 0, None, None, config, parts)
    assert sorted(assigned) == ["age_band", "country", "gender", "lifecycle"]
    assert set(assign_all(p, 0, None, None, config, ["clock.rfm"])) == {"rfm"}
    assert set(assign_all(p, 0, None, None, config, ["clock.lifecycle"])) == {"lifecycle"}
    assert assign_all(p, 0, None, None, config, ["cart"]).keys() == {"journey"}
    # Journey reads two keys of counts (product views and sessions): not a search's count.
    assert "counts.sessions" in apply_event(p, "search", 1, {"query": "boots"})
    search = apply_event(p, "search", 2, {"query": "boots"})
    assert "counts.search" in search and "journey" not in assign_all(p, 2, None, None, config,
                                                                      search)
    view = apply_event(p, "product_view", 2, {"product": {"product_id": "a", "category": "x"}})
    assert "journey" in assign_all(p, 2, None, None, config, view)
    # A buyer's stage follows the orders alone; their RFM and lifecycle the purchases and time.
    _ = apply_event(p, "purchase", 3, {"order_id": "o1", "amount": 10.0, "lines": []})
    assert set(assign_all(p, 4, None, None, config, apply_event(
        p, "product_view", 4, {"product": {"product_id": "a", "category": "x"}}))) == set()


def test_the_engine_runs_only_when_a_trigger_may_fire() -> None:
    engine = Engine(load_catalogue(default_catalogue_path()), UniformChooser())
    events = {t.event for t in engine.current().triggers if t.event}
    assert "cart_add" in events and not engine.may_fire("search", [])
    assert engine.may_fire("cart_add", [])
    entering = [{"segmentation": "lifecycle", "to": "at_risk"}]
    entries = any(t.segment_entry for t in engine.current().triggers)
    assert engine.may_fire("search", entering) is entries


async def test_skipping_off_runs_every_segmentation_on_every_event(monkeypatch) -> None:
    calls = []
    for skip in (True, False):
        settings = dataclasses.replace(SETTINGS, skip_unchanged=skip)
        segmenter = Segmenter(settings, clock=lambda: 0.0)
        seen: list[Any] = []
        original = segmenter.update

        def spy(p, e, trigger, parts=None, memo=None,  # type: ignore[no-untyped-def]
                seen=seen, original=original):
            seen.append(parts)
            return original(p, e, trigger, parts, memo)

        monkeypatch.setattr(segmenter, "update", spy)
        proc = Processor(settings, LosingEveryFifthWrite(), segmenter=segmenter)
        part = Partition()
        await proc.process([part.message(event("page_view"))])
        await proc.process([part.message(event("search", minute=1))])
        calls.append(seen)
    on, off = calls
    assert off == [None, None]
    assert on[1] is not None and "purchases" not in on[1] and "session" in on[1]
