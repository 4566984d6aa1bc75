"""The scorer's outputs are those of River's pipeline on the feature dict: the learning topic's
records byte for byte, the stored scores (intent and lifetime value) and the segment moves, on
the simulator's stream with redeliveries, erasures and a new model version on the way.

The reference scorer below takes the features as a dict of named values written out from their
definitions (no lookup tables, no tuple), scores them with River's ``predict_proba_one`` and
builds the observation from the dict by name: what the scorer did before it served a folded
model and a tuple of values."""

from __future__ import annotations

import copy
import dataclasses
import math
import random
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import orjson

from streamproc.events.codec import Event
from streamproc.learning.observations import FEATURE_NAMES, Observation, parse_all
from streamproc.learning.scorer import LTV_HORIZON_DAYS, LTV_READS, IntentScorer, ServedModels
from streamproc.models.features import EVENT_TYPES, INTENT_NAMES
from streamproc.models.intent import IntentModel
from streamproc.models.ltv import LifetimeValue
from streamproc.processor import Processor
from streamproc.segments.segmenter import Segmenter
from streamproc.state.memory import MemoryStore
from streamproc.state.profile import Profile

from .helpers import SETTINGS
from .test_models_folded import simulated_moments
from .test_skipping import NOW_MS, simulated_log


def lg(value: float) -> float:
    return round(math.log1p(max(0.0, value)), 3)


def reference_features(p: Profile, type_: str, ts_ms: int) -> dict[str, float]:
    """The intent features by name, in the order the models have always seen them."""
    s, cart, buys, rfm = p.get("session"), p["cart"], p["purchases"], p.get("rfm")
    affinities, sessions = p["affinities"]["categories"], p["counts"].get("sessions", 0)
    when = datetime.fromtimestamp(ts_ms / 1000, UTC)
    hour, day = when.hour, when.weekday()
    last = buys.get("last_ms")
    device = p.get("device")
    x = {"s_views": 0.0, "s_product_views": 0.0, "s_searches": 0.0, "s_dwell_min": 0.0,
         "s_categories": 0.0, "s_cart_adds": 0.0, "s_checkouts": 0.0, "s_cart_touched": 0.0}
    if s is not None:
        updated = cart.get("updated_ms")
        x = {"s_views": lg(s["views"]), "s_product_views": lg(s["product_views"]),
             "s_searches": lg(s["searches"]),
             "s_dwell_min": lg(min(240.0, (ts_ms - s["start_ms"]) / 60_000)),
             "s_categories": lg(len(s["categories"])), "s_cart_adds": lg(s.get("cart_adds", 0)),
             "s_checkouts": lg(s.get("checkouts", 0)),
             "s_cart_touched": 1.0 if updated is not None and updated >= s["start_ms"] else 0.0}
    x |= {"cart_lines": lg(len(cart["items"])), "cart_value": lg(cart["value"]),
          "orders": lg(buys["orders"]), "spend": lg(buys["total"]),
          "days_since_purchase": lg(365.0 if last is None
                                    else min(365.0, max(0, ts_ms - last) / 86_400_000)),
          "never_bought": 1.0 if last is None else 0.0,
          "frequency": lg(rfm["frequency"]) if rfm else 0.0,
          "top_affinity": lg(max(affinities.values())) if affinities else 0.0,
          "conversion": round(min(1.0, buys["orders"] / sessions), 3) if sessions else 0.0,
          "hour_sin": round(math.sin(2 * math.pi * hour / 24), 4),
          "hour_cos": round(math.cos(2 * math.pi * hour / 24), 4),
          "dow_sin": round(math.sin(2 * math.pi * day / 7), 4),
          "dow_cos": round(math.cos(2 * math.pi * day / 7), 4)}
    x |= {f"dev_{d}": float(device == d) for d in ("desktop", "mobile", "tablet")}
    x |= {f"ev_{t}": float(type_ == t) for t in EVENT_TYPES}
    x["ev_other"] = float(type_ not in EVENT_TYPES)
    return x


class ReferenceScorer(IntentScorer):
    """The scorer's outputs, with the features, score and observation made the reference way."""

    def update(self, p: Profile, event: Event,
               changed_parts: Collection[str] | None = None) -> list[dict[str, Any]]:
        records = super().update(p, event, changed_parts)
        rfm, buys = p.get("rfm"), p["purchases"]
        if rfm is not None and buys["orders"] > 0 and (
                changed_parts is None or not LTV_READS.isdisjoint(changed_parts)):
            p["scores"]["ltv"] = self.ltv.predict_value(rfm, buys["total"], buys["orders"],
                                                        LTV_HORIZON_DAYS)  # params each time
        for record in records:
            if record["kind"] == "score":
                x = reference_features(p, event.type, event.ts_ms)
                score = round(self.model.predict_proba_one(x), 4)
                if self.model.n >= self.min_labels:
                    p["scores"]["intent"] = score
                record["x"], record["p"] = [x.get(n, 0.0) for n in FEATURE_NAMES], score
        return records


def learnt(seed: int, events: int) -> IntentModel:
    """An intent model learnt from the simulator's stream, as the learner learns it."""
    model = IntentModel()
    for values, label in simulated_moments(seed, events):
        if label is not None:
            x = dict(zip(INTENT_NAMES, values, strict=True))
            model.observe({name: x[name] for name in FEATURE_NAMES}, label)
    return model


def learnt_value(seed: int) -> LifetimeValue:
    """A lifetime-value model whose parameters moved away from its priors."""
    rng = random.Random(seed)
    ltv = LifetimeValue()
    for _ in range(500):
        t = rng.uniform(10, 300)
        frequency = rng.randint(0, 8)
        ltv.learn_one({"frequency": frequency, "recency": rng.uniform(0, t), "T": t},
                      rng.uniform(20, 400) * (frequency + 1), frequency + 1)
    assert ltv.params != LifetimeValue().params
    return ltv


async def replay(scorer_type: type[IntentScorer], models: list[IntentModel]) -> dict[str, Any]:
    settings = dataclasses.replace(SETTINGS, timer_lateness_seconds=0)
    store = MemoryStore()
    scorer = scorer_type(settings, min_labels=0)
    proc = Processor(settings, store, clock_ms=lambda: NOW_MS,
                     segmenter=Segmenter(settings, clock=lambda: 0.0), scorer=scorer)
    log = simulated_log(customers=150, events=3000, seed=4)
    batches = [log[i:i + 61] for i in range(0, len(log), 61)]
    batches[10:10] = [log[400:500]]  # read again: a redelivery
    outputs = []
    for i, batch in enumerate(batches):
        if i % 20 == 0:  # the learner's next version, served
            served = ServedModels(copy.deepcopy(models[i // 20 % len(models)]),
                                  ltv=learnt_value(i))
            scorer.adopt(served, i + 1, 0)
        result = await proc.process(batch)
        await proc.settle(result)
        outputs.append((result.learning, result.segments, result.decisions))
    ltv = []
    for customer in sorted({m.key.decode() for m in log}):
        found = await store.read_profile(customer)
        if found is not None and "ltv" in found["profile"].get("scores", {}):
            ltv.append(found["profile"]["scores"]["ltv"])
    return {"outputs": outputs, "rows": store.rows, "ltv": ltv}


async def test_learning_records_scores_and_moves_are_those_of_rivers_pipeline() -> None:
    models = [learnt(seed, 6000) for seed in (7, 11)]
    served = await replay(IntentScorer, models)
    reference = await replay(ReferenceScorer, models)
    assert served["outputs"] == reference["outputs"]  # every record's bytes, batch by batch
    assert served["rows"] == reference["rows"]  # the stored profiles, scores included
    scores = [o for out in served["outputs"] for _, value in out[0] for o in parse_all(value)
              if isinstance(o, Observation) and o.kind == "score"]
    # A stream that tested something: many scores of learnt models, several distinct values
    # and versions, and moves of the intent segmentation they drive.
    assert len(scores) > 1000 and len({o.score for o in scores}) > 200
    assert len({o.version for o in scores}) >= 3
    moves = [orjson.loads(v) for out in served["outputs"] for _, v in out[1]]
    assert sum(m["segmentation"] == "intent" for m in moves) > 20
    assert served["ltv"] == reference["ltv"]
    assert len(set(served["ltv"])) > 20  # lifetime values predicted by the served models
