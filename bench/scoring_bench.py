"""The intent scorer's cost per event, served a model learnt from the simulator's stream.

    .venv/bin/python -m bench.scoring_bench [--events N] [--customers N] [--rounds N]

``bench.processor_bench`` serves no model (its scorer holds an untrained one); here the scorer
serves what a worker serves in production: an intent model and a lifetime-value model learnt
from the simulator's stream (seed 7: ``--learn`` events, labelled by purchases within 30
minutes). Two figures, CPU time (``time.process_time``), the median of ``--rounds``:

* **the scorer's hook**: ``IntentScorer.update`` (intent features, score, lifetime value,
  observation record) on each browsing event of the stream, on copies of the profiles as the
  event left them: µs per scored event;
* **the processor**: the whole ``Processor`` (as ``bench.processor_bench`` builds it) on
  ``--events`` messages in batches of 500 with the learnt models served: µs per event.

It uses only what every version of the scorer has (``update``, ``adopt``, ``ServedModels``),
so the same command run in a checkout of an older commit measures that commit: alternate the
two for a comparison (docs/benchmarks.md, "The intent scorer's cost").
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import itertools
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.processor_bench import timed_batches
from bench.state_bench import START, make_processor, raw_messages
from streamproc.events.codec import Event, RawMessage, parse_ts
from streamproc.learning.scorer import IntentScorer, ServedModels
from streamproc.models.features import EVENT_TYPES, intent_features
from streamproc.models.intent import IntentModel
from streamproc.models.labels import PendingLabels
from streamproc.models.ltv import LifetimeValue
from streamproc.settings import Settings
from streamproc.simulator import Population, generate_events
from streamproc.state.memory import MemoryStore
from streamproc.state.profile import apply_event, new_profile

ENVELOPE = ("event_id", "type", "customer_id", "ts")
Moment = tuple[dict[str, Any], Event]


def learn(sims: Sequence[Any]) -> tuple[ServedModels, list[Moment]]:
    """Models learnt from ``sims`` as the learner learns them, and each browsing event's
    profile (a copy, as the event left it) with the event, for the hook's timing."""
    model, ltv = IntentModel(), LifetimeValue()
    labels = PendingLabels(horizon_ms=30 * 60_000)
    profiles: dict[str, dict[str, Any]] = {}
    moments: list[Moment] = []
    for i, sim in enumerate(sims):
        ev = sim.event
        type_, customer, ts = ev["type"], ev["customer_id"], parse_ts(ev["ts"])
        p = profiles.setdefault(customer, new_profile(customer))
        data = {k: v for k, v in ev.items() if k not in ENVELOPE}
        apply_event(p, type_, ts, data)
        if type_ == "purchase":
            for item in labels.on_purchase(customer, ts):
                model.observe(item.features, True)
            if p.get("rfm") is not None:
                ltv.learn_one(p["rfm"], p["purchases"]["total"], p["purchases"]["orders"])
        if type_ in EVENT_TYPES:
            x = intent_features(p, type_, ts)
            labels.add(customer, ts, dict(sorted(x.items())))  # the observations' order
            message = RawMessage("browsing", 0, i, customer.encode(), b"", ts)
            moments.append((copy.deepcopy(p), Event(type_, customer, ev["event_id"], ts, data,
                                                    message)))
        for item in labels.expire(ts):
            model.observe(item.features, False)
    return ServedModels(model, ltv=ltv), moments


def hook_round(scorer: IntentScorer, moments: list[Moment]) -> float:
    """CPU µs per scored event of the scorer's hook, on fresh copies of the profiles."""
    profiles = [copy.copy(p) | {"scores": dict(p.get("scores") or {})} for p, _ in moments]
    started = time.process_time()
    for p, (_, event) in zip(profiles, moments, strict=True):
        scorer.update(p, event, None)
    return (time.process_time() - started) / len(moments) * 1e6


async def processor_round(settings: Settings, served: ServedModels,
                          messages: Sequence[RawMessage]) -> float:
    """CPU µs per event of the processor, the learnt models served."""
    processor = make_processor(settings, MemoryStore())
    scorer = processor.scorer
    assert isinstance(scorer, IntentScorer)
    scorer.adopt(copy.deepcopy(served), 1, 0)
    return await timed_batches(processor, messages, 500) / len(messages) * 1e6


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--learn", type=int, default=30_000)
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


async def amain(args: argparse.Namespace) -> None:
    logging.getLogger("streamproc.learning.scorer").setLevel(logging.ERROR)
    settings = dataclasses.replace(Settings(consent_defaults="personalisation=granted"),
                                   max_future_skew_s=0)
    population = Population.generate(args.customers, seed=args.seed)
    sims = list(itertools.islice(generate_events(population, START, seed=args.seed),
                                 max(args.learn, args.events)))
    served, moments = learn(sims[:args.learn])
    print(f"served: intent learnt from {served.intent.n} labels (AUC "
          f"{served.intent.stats()['auc']}), {len(moments)} scored events", file=sys.stderr)
    scorer = IntentScorer(settings, min_labels=0)
    scorer.adopt(copy.deepcopy(served), 1, 0)
    messages = list(raw_messages(settings, sims[:args.events], {}))
    hook_round(scorer, moments[:2000])  # warm-up
    await processor_round(settings, served, messages[:2000])
    hooks, whole = [], []
    for _ in range(args.rounds):
        hooks.append(hook_round(scorer, moments))
        whole.append(await processor_round(settings, served, messages))
        print(f"round: hook {hooks[-1]:.2f} us per scored event, processor {whole[-1]:.1f} us "
              "per event", file=sys.stderr, flush=True)
    print(f"scorer hook: {statistics.median(hooks):.2f} us per scored event; processor with "
          f"the learnt models served: {statistics.median(whole):.1f} us per event (medians of "
          f"{args.rounds})")


def main(argv: Sequence[str] | None = None) -> int:
    asyncio.run(amain(parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
