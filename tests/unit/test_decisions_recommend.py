"""The ``recommendation`` action kind: a candidate only with products to show, its decision
carrying them, with reasons, in ``action.params.products``."""

from __future__ import annotations

from typing import Any

from streamproc.decisions.chooser import UniformChooser
from streamproc.decisions.engine import Engine
from streamproc.models.ranking import Recommender
from streamproc.models.relations import ItemRelations
from tests.unit.helpers import GRANTED
from tests.unit.test_decisions_engine import SHIPPED, Customer, catalogue

MIN = 60_000
RECS = "recommended_for_you"


def recs_only() -> Any:
    """The shipped catalogue with its neutral actions and the recommendation only."""
    kept = [a for a in SHIPPED["actions"] if a.get("neutral") or a["id"] == RECS]
    return catalogue(actions=kept, experiments=[])


def related() -> ItemRelations:
    rel = ItemRelations()
    for i in range(5):
        rel.view(f"v{i}", "tent", "outdoor", 0)
        rel.view(f"v{i}", "stove", "outdoor", MIN)
    rel.upsert_product({"product_id": "gone", "category": "outdoor", "price": 1.0,
                        "in_stock": False}, 0)
    rel.view("v9", "tent", "outdoor", 0)
    rel.view("v9", "gone", "outdoor", MIN)
    return rel.serving_copy()


def test_a_recommendation_decision_names_related_in_stock_products_with_reasons() -> None:
    engine = Engine(recs_only(), UniformChooser(), recommender=Recommender(related()),
                    consent_defaults=GRANTED)
    c = Customer(engine)
    c.event("product_view", "2026-03-01T10:00:00Z",
            product={"product_id": "tent", "category": "outdoor", "price": 99.0})
    record = c.request("product_recs", "2026-03-01T10:01:00Z")  # validated by the schema
    assert record["action"]["id"] == RECS and record["action"]["kind"] == "recommendation"
    products = record["action"]["params"]["products"]
    assert products[0] == {"id": "stove", "reason": "viewed together with tent"}
    assert "gone" not in [p["id"] for p in products] and "tent" not in [p["id"] for p in products]
    assert record["action"]["params"]["count"] == 6 and len(products) <= 6


def test_without_products_to_recommend_the_slot_gets_its_neutral_action_with_the_reason() -> None:
    engine = Engine(recs_only(), UniformChooser(), recommender=Recommender(),
                    consent_defaults=GRANTED)
    record = Customer(engine).request("product_recs", "2026-03-01T10:01:00Z")
    assert record["action"]["id"] == "popular_products"
    assert any("no products to recommend" in r for r in record["reasons"])


def test_served_relations_reach_the_engine_through_the_scorer() -> None:
    from streamproc.learning.scorer import IntentScorer, ServedModels
    from streamproc.models.intent import IntentModel
    from streamproc.settings import Settings

    engine = Engine(recs_only(), UniformChooser(), consent_defaults=GRANTED)
    scorer = IntentScorer(Settings(), recommender=engine.recommender)
    served = related()
    scorer.adopt(ServedModels(IntentModel(), relations=served), 3, 0)
    assert engine.recommender.relations is served


def test_the_recommendation_takes_part_in_the_shipped_experiment_and_its_uplift_is_reported(
        ) -> None:
    """The shipped hero-2026 experiment covers product_recs: its control group gets the
    neutral popular_products, its treated arms the recommendation; the report gives the
    treated arms' uplift over that fallback."""
    from streamproc.decisions.decision_log import join
    from streamproc.decisions.report import arm_results

    kept = [a for a in SHIPPED["actions"] if a.get("neutral") or a["id"] == RECS]
    assert [e["id"] for e in SHIPPED["experiments"] if "product_recs" in e["slots"]] == [
        "hero-2026"]
    engine = Engine(catalogue(actions=kept), UniformChooser(),
                    recommender=Recommender(related()), consent_defaults=GRANTED)
    decisions, feedback = [], []
    for i in range(300):
        c = Customer(engine, f"c{i}")
        c.event("product_view", "2026-03-01T10:00:00Z",
                product={"product_id": "tent", "category": "outdoor", "price": 99.0})
        record = c.request("product_recs", "2026-03-01T10:01:00Z")
        decisions.append(record)
        # Half the customers shown the recommendation buy, one in five of the others.
        if i % (2 if record["action"]["id"] == RECS else 5) == 0:
            feedback.append({"event_id": f"f{i}", "type": "feedback",
                             "decision_id": record["decision_id"], "outcome": "conversion",
                             "revenue": 20.0})
    served = {(r["experiment"]["arm"], r["action"]["id"]) for r in decisions}
    assert {action for arm, action in served if arm == "control"} == {"popular_products"}
    assert {action for arm, action in served if arm != "control"} == {RECS}
    rows = {r.arm: r for r in arm_results(join(decisions, feedback))
            if r.experiment == "hero-2026"}
    assert "control" in rows and rows["control"].conversion_uplift is None
    treated = [r for arm, r in rows.items() if arm != "control"]
    assert treated and all(r.conversion_uplift is not None for r in treated)
    assert all(r.conversion_uplift.value > 0 for r in treated)  # type: ignore[union-attr]
