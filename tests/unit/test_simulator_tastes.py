"""Hidden item-level tastes in the simulator: off by default (the events of earlier versions),
on for the recommendations' benchmark, where liked products are picked more often."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from streamproc.simulator import Population, generate_events
from streamproc.simulator.sessions import TASTE_BOOST, ItemTastes

START = datetime(2026, 3, 1, tzinfo=UTC)


def views(population: Population, tastes: bool, n: int = 6000) -> list[tuple[str, str]]:
    return [(e.event["customer_id"], e.event["product"]["product_id"])
            for e in itertools.islice(generate_events(population, START, seed=3,
                                                      item_tastes=tastes), n)
            if e.event["type"] == "product_view"]


def test_tastes_change_which_products_but_not_how_customers_behave():
    population = Population.generate(40, seed=3)
    plain = list(itertools.islice(generate_events(population, START, seed=3), 3000))
    assert plain == list(itertools.islice(generate_events(population, START, seed=3,
                                                          item_tastes=False), 3000))
    tasted = list(itertools.islice(generate_events(population, START, seed=3,
                                                   item_tastes=True), 3000))
    # The same sessions, event types and times (the sessions' stream draws the same), until a
    # customer's cart differs (a product carted twice is one line, and steps depend on it) ...
    assert [(e.event["type"], e.event["ts"]) for e in tasted[:100]] == [
        (e.event["type"], e.event["ts"]) for e in plain[:100]]
    # ... other products.
    assert [e.event.get("product") for e in tasted] != [e.event.get("product") for e in plain]


def test_liked_products_are_viewed_more_often():
    population = Population.generate(40, seed=3)
    tastes = ItemTastes(population)
    index = {c.customer_id: i for i, c in enumerate(population.customers)}

    def liked_share(seen: list[tuple[str, str]]) -> float:
        return sum(tastes.weight(index[c], p) == TASTE_BOOST for c, p in seen) / len(seen)

    assert liked_share(views(population, True)) > liked_share(views(population, False)) + 0.2


def test_customers_come_back_to_what_they_considered_and_cart_complements():
    population = Population.generate(60, seed=3)
    tastes = ItemTastes(population)

    def habits(with_tastes: bool) -> tuple[float, float]:
        """Share of views of a product the customer viewed before; share of cart adds
        followed by the add of one of that product's complements in the same session."""
        seen: dict[str, set[str]] = {}
        again = views_n = 0
        carts: dict[str, list[str]] = {}
        for e in itertools.islice(generate_events(population, START, seed=3,
                                                  item_tastes=with_tastes), 40_000):
            ev = e.event
            if ev["type"] == "product_view":
                pid = ev["product"]["product_id"]
                mine = seen.setdefault(ev["customer_id"], set())
                again += pid in mine
                views_n += 1
                mine.add(pid)
            elif ev["type"] == "cart_add":
                carts.setdefault(ev["context"]["session_id"], []).append(
                    ev["product"]["product_id"])
        pairs = [(a, b) for added in carts.values() for a, b in itertools.pairwise(added)]
        paired = sum(b in {p.product_id for p in tastes.complements[a]} for a, b in pairs)
        return again / views_n, paired / max(1, len(pairs))

    plain, tasted = habits(False), habits(True)
    assert tasted[0] > plain[0]  # already high without: 30 products a category, brands liked
    assert tasted[1] > plain[1] + 0.1
