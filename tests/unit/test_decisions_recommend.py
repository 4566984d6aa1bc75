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
