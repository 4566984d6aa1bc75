"""Recommendations benchmark: learnt item relations against two popularity baselines, offline.

    .venv/bin/python -m bench.recs_bench [--customers N] [--days D] [--train-days T]

Method. The simulator's stream with hidden item-level tastes (``generate_events(...,
item_tastes=True)``: products have a style, customers like two of eight styles and pick a liked
product six times as readily; nothing of it is in the events), fixed seed, is replayed in event
time. Every event updates the customer's profile (``apply_event``) and the item relations
(:class:`~streamproc.models.relations.ItemRelations`: product views, cart adds and orders, as
the learner gets them); the workers' copy (``serving_copy``) is refreshed every ``--refresh``
events, as snapshots would be. The first ``--train-days`` only train. After them, at each
customer's session start (30 minutes without an event), three rankings of 10 are taken with
the profile as it is then, and the session's purchases are scored against them: for each
product bought that was not in the cart already at the session's start (no ranking shows what
is in the cart: those are left out of the count, not counted as misses), a hit when it is in
the top 10 (hit rate@10) and ``1 / log2(rank + 1)`` (NDCG@10 with one relevant item).
Learning goes on through the test days (prequential). The rankings:

* **relations**: :class:`~streamproc.models.ranking.Recommender` (what the engine serves);
* **popularity**: the most popular products (decayed views and purchases);
* **category popularity**: the most popular products of the customer's favourite categories
  (profile affinities, top three, weighted by affinity), then the most popular.

All three leave out the same products (in the cart, already bought in a category that is not
replenishable). Also printed: the cost of one ranking (µs, wall-time mean and p99, and the
CPU-time mean, the relations ranker on the served copy) and the memory per product (pickled
snapshot bytes, and Python heap bytes of the served copy by tracemalloc). Figures in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import pickle
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from streamproc.events.codec import parse_ts
from streamproc.models.ranking import Recommender
from streamproc.models.relations import ItemRelations
from streamproc.settings import Settings
from streamproc.simulator import Population, generate_events
from streamproc.simulator.sessions import ItemTastes, product_weights
from streamproc.state.profile import SESSION_GAP_MS, Profile, apply_event, new_profile

START = datetime(2026, 3, 1, tzinfo=UTC)
TOP = 10
METHODS = ("relations", "popularity", "category popularity", "ceiling")


def excluded(p: Profile, replenishable: frozenset[str]) -> set[str]:
    """What every ranking leaves out: the cart, and bought products of other categories."""
    out = set(p["cart"]["items"])
    out |= {pid for pid, cat, kind, _ in p.get("recent_products") or []
            if kind == "buy" and cat not in replenishable}
    return out


def popular(rel: ItemRelations, skip: set[str], n: int) -> list[str]:
    return [pid for pid, _ in rel.popular(n + len(skip)) if pid not in skip][:n]


def category_popular(rel: ItemRelations, p: Profile, skip: set[str], n: int) -> list[str]:
    affinities = p["affinities"]["categories"]
    scores: dict[str, float] = {}
    if affinities:
        favourite = sorted(affinities.items(), key=lambda kv: -kv[1])[:3]
        strongest = favourite[0][1]
        for category, affinity in favourite:
            items = rel.popular(n + len(skip), category)
            if items:
                top = items[0][1]
                for pid, score in items:
                    if pid not in skip:
                        scores[pid] = affinity / strongest * score / top
    ranked = sorted(scores, key=lambda pid: -scores[pid])[:n]
    return ranked + [pid for pid in popular(rel, skip | set(ranked), n)][: n - len(ranked)]


def ceilings(population: Population) -> dict[str, list[str]]:
    """Every product, by how likely the simulator makes each customer pick it (category
    weight times the product's share of the category's choice weights): the best any ranking
    can do without knowing which category a session is about."""
    tastes = ItemTastes(population)
    out = {}
    for index, customer in enumerate(population.customers):
        scores: dict[str, float] = {}
        for category, items in population.catalogue.products.items():
            weights = product_weights(population, index, category, tastes)
            total = sum(weights)
            for product, weight in zip(items, weights, strict=True):
                scores[product.product_id] = customer.category_weights[category] * weight / total
        out[customer.customer_id] = sorted(scores, key=scores.__getitem__, reverse=True)
    return out


class Scores:
    def __init__(self) -> None:
        self.hits = {m: 0 for m in METHODS}
        self.ndcg = {m: 0.0 for m in METHODS}
        self.items = 0

    def judge(self, rankings: dict[str, list[str]], bought: list[str]) -> None:
        for pid in bought:
            self.items += 1
            for method, ranked in rankings.items():
                if pid in ranked:
                    self.hits[method] += 1
                    self.ndcg[method] += 1.0 / math.log2(ranked.index(pid) + 2)


def replay(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings()
    replenishable = settings.categories("replenishable")
    population = Population.generate(args.customers, seed=args.seed)
    rel = ItemRelations()
    served = rel.serving_copy()
    ranker = Recommender(served, replenishable=replenishable)
    ceiling = ceilings(population)
    profiles: dict[str, Profile] = {}
    last_ms: dict[str, int] = {}
    pending: dict[str, dict[str, list[str]]] = {}
    in_cart: dict[str, set[str]] = {}  # at the session's start
    scores = Scores()
    costs: list[float] = []
    cpu: list[float] = []  # the same rankings in CPU time (less noisy on a shared machine)
    start_ms = int(START.timestamp() * 1000)
    split_ms = start_ms + args.train_days * 86_400_000
    end_ms = start_ms + args.days * 86_400_000
    events = 0
    for sim in generate_events(population, START, seed=args.seed, item_tastes=True):
        event = sim.event
        ts = parse_ts(event["ts"])
        if ts >= end_ms:
            break
        events += 1
        cid, type_ = event["customer_id"], event["type"]
        p = profiles.get(cid)
        if p is None:
            p = profiles[cid] = new_profile(cid)
        if ts >= split_ms and ts - last_ms.get(cid, -SESSION_GAP_MS - 1) > SESSION_GAP_MS:
            skip = excluded(p, replenishable)
            began, began_cpu = time.perf_counter(), time.process_time()
            ranked = [r["id"] for r in ranker.recommend(p, ts, TOP)]
            costs.append(time.perf_counter() - began)
            cpu.append(time.process_time() - began_cpu)
            in_cart[cid] = set(p["cart"]["items"])
            pending[cid] = {"relations": ranked, "popularity": popular(served, skip, TOP),
                            "category popularity": category_popular(served, p, skip, TOP),
                            "ceiling": [pid for pid in ceiling[cid] if pid not in skip][:TOP]}
        last_ms[cid] = max(last_ms.get(cid, ts), ts)
        if type_ == "purchase" and cid in pending:
            carted = in_cart.get(cid, set())
            bought = [pid for pid in dict.fromkeys(line["product_id"] for line in event["lines"])
                      if pid not in carted]
            scores.judge(pending[cid], bought)
        apply_event(p, type_, ts, event)
        if type_ in ("product_view", "cart_add"):
            product = event["product"]
            rel.view(cid, product["product_id"], product["category"], ts,
                     cart=type_ == "cart_add")
        elif type_ == "purchase":
            rel.purchase(cid, [(line["product_id"], line["category"])
                               for line in event["lines"]], ts)
        if events % args.refresh == 0:
            served = ranker.relations = rel.serving_copy()
    served = rel.serving_copy()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    copy = rel.serving_copy()
    heap = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    items = max(1, len(copy.popularity))
    return {"events": events, "scores": scores, "costs": costs, "cpu": cpu, "items": items,
            "pickled_per_item": len(pickle.dumps(served)) / items, "heap_per_item": heap / items,
            "pairs": rel.stats()["relation_pairs"], "customers": len(profiles)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.recs_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=1000)
    p.add_argument("--days", type=int, default=14, help="simulated days in all (14)")
    p.add_argument("--train-days", type=int, default=10, help="of which training only (10)")
    p.add_argument("--refresh", type=int, default=2000,
                   help="events between two refreshes of the served copy (2,000)")
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args(argv)
    if not 0 < args.train_days < args.days:
        p.error("--train-days must be between 0 and --days")
    began = time.perf_counter()
    got = replay(args)
    scores: Scores = got["scores"]
    n = max(1, scores.items)
    costs_us = sorted(c * 1e6 for c in got["costs"])
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()} "
          f"({sys.executable}); {got['events']:,} events of {got['customers']:,} customers over "
          f"{args.days} simulated days ({args.train_days} training), seed {args.seed}; "
          f"{time.perf_counter() - began:.0f} s", file=sys.stderr)
    print(f"| ranking | hit rate@{TOP} | NDCG@{TOP} |")
    print("| --- | ---: | ---: |")
    for method in METHODS:
        print(f"| {method} | {scores.hits[method] / n:.3f} | {scores.ndcg[method] / n:.3f} |")
    print(f"{scores.items:,} products bought in the test days, judged against the rankings at "
          f"their session's start")
    if costs_us:
        p99 = costs_us[min(len(costs_us) - 1, int(len(costs_us) * 0.99))]
        print(f"one ranking (relations, top {TOP}): {statistics.fmean(costs_us):.0f} µs mean, "
              f"{p99:.0f} µs p99 wall time; {statistics.fmean(got['cpu']) * 1e6:.0f} µs mean "
              f"CPU time; over {len(costs_us):,} rankings")
    print(f"memory: {got['items']:,} products, {got['pairs']:,} relation pairs; "
          f"{got['pickled_per_item']:,.0f} snapshot bytes and {got['heap_per_item']:,.0f} heap "
          f"bytes per product")
    return 0


if __name__ == "__main__":
    sys.exit(main())
