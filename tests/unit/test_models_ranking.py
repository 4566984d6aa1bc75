"""Per-customer ranking: related products first, with their reasons; exclusions; diversity;
the popular fallback for a cold customer."""

from __future__ import annotations

from streamproc.models.ranking import COLD, POPULAR, Recommender
from streamproc.models.relations import ItemRelations
from streamproc.state.profile import Profile, apply_event, new_profile

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000


def shop() -> ItemRelations:
    """tent -> stove (viewed together), tent -> lamp (bought after viewing), crib (baby) with
    tent; popular books; a popular bestseller nobody relates to anything."""
    rel = ItemRelations()
    for i in range(6):
        rel.view(f"v{i}", "tent", "outdoor", 0)
        rel.view(f"v{i}", "stove", "outdoor", MIN)
        rel.view(f"v{i}", "crib", "baby", 2 * MIN)
    for i in range(3):
        rel.view(f"b{i}", "tent", "outdoor", 0)
        rel.purchase(f"b{i}", [("lamp", "outdoor")], HOUR)
    for i in range(20):
        rel.view(f"r{i}", f"book{i % 4}", "books", i * MIN)
        rel.purchase(f"r{i}", [("bestseller", "books")], i * MIN + 1)
    return rel


def viewed(*products: tuple[str, str], ts: int = 0) -> Profile:
    p = new_profile("c1")
    for i, (pid, cat) in enumerate(products):
        apply_event(p, "product_view", ts + i, {"product": {"product_id": pid, "category": cat,
                                                            "price": 10.0}})
    return p


def ids(recs: list[dict[str, str]]) -> list[str]:
    return [r["id"] for r in recs]


def test_related_products_come_first_with_the_relation_as_reason():
    p = viewed(("tent", "outdoor"))
    recs = Recommender(shop().serving_copy()).recommend(p, 2 * HOUR, 5)
    first = {r["id"]: r["reason"] for r in recs[:4]}
    assert set(first) == {"stove", "lamp", "crib", "tent"}
    assert first["stove"] == "viewed together with tent"
    assert first["lamp"] == "bought by those who viewed tent"
    assert first["tent"] == "you viewed it recently"  # in an earlier session
    assert len(recs) == 5


def test_what_the_customer_is_looking_at_now_is_not_recommended_to_them():
    p = viewed(("tent", "outdoor"))
    ranker = Recommender(shop().serving_copy())
    assert "tent" not in ids(ranker.recommend(p, 10 * MIN, 10))
    # A session later it may come back, as a popular product of a favourite category.
    assert "tent" in ids(ranker.recommend(p, 2 * HOUR, 10))


def test_what_viewers_bought_ranks_above_what_they_only_viewed_together():
    # Viewed together says little on the simulator's stream (docs/benchmarks.md, recs_bench):
    # co-views weigh a tenth of bought-after-viewing when cold, less when hot.
    p = viewed(("tent", "outdoor"))
    p["affinities"]["categories"] = {}  # relations only
    ranker = Recommender(shop().serving_copy())
    p["scores"] = {"intent": 0.0}
    cold = ids(ranker.recommend(p, 2 * HOUR, 4))
    p["scores"] = {"intent": 1.0}
    hot = ids(ranker.recommend(p, 2 * HOUR, 4))
    assert cold.index("lamp") < cold.index("stove")
    assert hot.index("lamp") < hot.index("stove")


def test_out_of_stock_sensitive_cart_and_bought_products_are_left_out():
    rel = shop()
    rel.upsert_product({"product_id": "stove", "category": "outdoor", "price": 30.0,
                        "in_stock": False}, 5)
    p = viewed(("tent", "outdoor"))
    apply_event(p, "cart_add", 10, {"product": {"product_id": "lamp", "category": "outdoor",
                                                "price": 9.0}, "quantity": 1})
    recs = ids(Recommender(rel.serving_copy(), sensitive=["baby"]).recommend(p, 2 * HOUR, 10))
    assert not {"stove", "lamp", "crib"} & set(recs)
    assert recs  # the popular fill is still there


def test_already_bought_is_left_out_unless_the_category_is_replenishable():
    rel = ItemRelations()
    for i in range(4):
        rel.view(f"v{i}", "milk", "grocery", 0)
        rel.view(f"v{i}", "bread", "grocery", MIN)
        rel.view(f"v{i}", "tv", "electronics", 2 * MIN)
    p = new_profile("c1")
    apply_event(p, "purchase", 0, {"amount": 2.0, "lines": [
        {"product_id": "bread", "category": "grocery", "quantity": 1, "unit_price": 1.0},
        {"product_id": "tv", "category": "electronics", "quantity": 1, "unit_price": 1.0}]})
    apply_event(p, "product_view", DAY, {"product": {"product_id": "milk",
                                                     "category": "grocery", "price": 1.0}})
    ranker = Recommender(rel.serving_copy(), replenishable=["grocery"])
    recs = ids(ranker.recommend(p, 2 * DAY, 5))
    assert "bread" in recs and "tv" not in recs


def test_one_category_does_not_fill_the_list_while_others_have_candidates():
    rel = ItemRelations()
    for i in range(5):
        rel.view(f"v{i}", "seed", "a", 0)
        for j in range(8):
            rel.view(f"v{i}", f"a{j}", "a", MIN + j)
        rel.view(f"v{i}", "b0", "b", 9 * MIN)
    p = viewed(("seed", "a"))
    recs = Recommender(rel.serving_copy(), max_category_share=0.4).recommend(p, 2 * HOUR, 5)
    assert [rel.category[r["id"]] for r in recs[:2]] == ["a", "a"]
    assert ids(recs)[2] == "b0"  # ninth by score, third for diversity
    assert len(recs) == 5


def test_a_cold_customer_gets_popular_products_with_that_reason():
    recs = Recommender(shop().serving_copy()).recommend(new_profile("new"), HOUR, 3)
    assert ids(recs)[0] == "bestseller"
    assert {r["reason"] for r in recs} == {COLD}


def test_a_customer_with_history_but_few_relations_is_filled_with_popular_ones():
    p = viewed(("stranger", "misc"), ts=0)
    recs = Recommender(shop().serving_copy()).recommend(p, DAY, 4)
    assert recs[0] == {"id": "stranger", "reason": "you viewed it recently"}
    assert len(recs) == 4 and {r["reason"] for r in recs[1:]} == {POPULAR}


def test_favourite_categories_bring_their_popular_products():
    p = new_profile("c1")
    p["affinities"]["categories"] = {"books": 5.0}
    recs = Recommender(shop().serving_copy()).recommend(p, DAY, 2)
    assert recs[0] == {"id": "bestseller", "reason": "popular in books, a favourite category"}


def test_an_untrained_recommender_recommends_only_what_was_viewed_before():
    assert Recommender().recommend(new_profile("c1"), DAY, 5) == []
    assert Recommender().recommend(viewed(("tent", "outdoor")), DAY, 5) == [
        {"id": "tent", "reason": "you viewed it recently"}]
