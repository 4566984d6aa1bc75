"""Item relations learnt online: viewed together, bought together, viewed then bought.

The learner feeds :class:`ItemRelations` the product ids of the scoring workers' observations
(a product view or cart add, :meth:`ItemRelations.view`; an order's lines,
:meth:`ItemRelations.purchase`), each event once (the learner drops a redelivered copy by its
event id). Three relations between products, each a weighted, decaying count:

* ``co_view``: both viewed (or carted) by one customer within ``session_gap_ms`` of each other
  (one browsing session), symmetric;
* ``co_buy``: in one order, or bought by one customer within ``buy_window_ms``, symmetric;
* ``view_buy``: ``a`` viewed, then ``b`` bought by the same customer within ``buy_window_ms``
  (directed: ``a`` leads to ``b``).

Bounded memory: each product keeps its ``k`` strongest neighbours per relation (a list grows to
``2 k`` and is then cut back to ``k``, so a pruning is paid every ``k`` insertions); the recent
products of at most ``max_customers`` customers are kept (least recently active dropped), at most
``recent`` each. Decay: every count is weighted ``2 ** (t / half_life_ms)`` in event time (forward
decay, Cormode et al. 2009), so a newer co-occurrence weighs more and the order of arrival does not
change the scores; they are rescaled when the weights grow large. Relations are aggregates over
customers: an erased customer's recent products go (:meth:`ItemRelations.forget`), the counts
they added stay, anonymous, until they decay.

The same object also keeps the product feed (:meth:`ItemRelations.upsert_product`: category,
price, margin, stock; the latest event time wins, so a replayed feed changes nothing) and
popularity (decayed purchases and views per product), for the ranking
(:mod:`streamproc.models.ranking`). It pickles whole (the learner's signed snapshot).

>>> rel = ItemRelations(k=5)
>>> for cid, pid in [("c1", "a"), ("c1", "b"), ("c2", "a"), ("c2", "b"), ("c2", "c")]:
...     rel.view(cid, pid, "shoes", 1_000)
>>> [n for n, _ in rel.neighbours("a", "co_view")]
['b', 'c']
>>> rel.purchase("c2", [("c", "shoes")], 2_000)
>>> [n for n, _ in rel.neighbours("a", "view_buy")]
['c']
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import Any

RELATIONS = ("co_view", "co_buy", "view_buy")
# How much a cart add counts against a view, in co_view and view_buy.
CART_WEIGHT = 2.0
# Forward-decay weights are rescaled past 2 ** this (floats stay far from overflow).
RESCALE_EXPONENT = 64.0
# What a purchase adds to a product's popularity, against a view.
BUY_POPULARITY = 5.0
# Length of the served lists of the most popular products (overall and per category).
TOP = 200


class ItemRelations:
    """Top-k decaying neighbours per product; see the module docstring."""

    def __init__(self, k: int = 30, half_life_days: float = 14.0,
                 session_gap_ms: int = 30 * 60_000, buy_window_ms: int = 7 * 86_400_000,
                 recent: int = 20, max_customers: int = 200_000,
                 max_items: int = 200_000, popularity_damping: float = 0.5) -> None:
        self.k = k
        self.half_life_days = half_life_days
        self.session_gap_ms = session_gap_ms
        self.buy_window_ms = buy_window_ms
        self.recent = recent
        self.max_customers = max_customers
        self.max_items = max_items
        self.popularity_damping = popularity_damping
        self.half_life_ms = half_life_days * 86_400_000
        self.landmark_ms: int | None = None
        self.tables: dict[str, dict[str, dict[str, float]]] = {r: {} for r in RELATIONS}
        self.popularity: dict[str, float] = {}
        self.category: dict[str, str] = {}
        self.products: dict[str, dict[str, Any]] = {}
        # customer -> [(product, category, event time, "view" | "cart" | "buy")], oldest first
        self.customers: OrderedDict[str, list[tuple[str, str, int, str]]] = OrderedDict()
        self.events = 0
        # Each product's neighbours per relation, strongest first, scores relative to the
        # strongest (1.0), cut to `k`: made by serving_copy(), so a ranking sorts nothing.
        self.ranked: dict[str, dict[str, list[tuple[str, float]]]] | None = None
        # Most popular products, overall and per category: computed by serving_copy().
        self.top: list[tuple[str, float]] | None = None
        self.top_by_category: dict[str, list[tuple[str, float]]] = {}

    # -- decay ---------------------------------------------------------------------------------

    def weight(self, ts_ms: int) -> float:
        """The forward-decay weight of an event at ``ts_ms`` (1 at the landmark)."""
        if self.landmark_ms is None:
            self.landmark_ms = ts_ms
        exponent = (ts_ms - self.landmark_ms) / self.half_life_ms
        if exponent > RESCALE_EXPONENT:
            self._rescale(ts_ms)
            exponent = 0.0
        return float(2.0 ** exponent)

    def _rescale(self, ts_ms: int) -> None:
        assert self.landmark_ms is not None
        factor = 2.0 ** (-(ts_ms - self.landmark_ms) / self.half_life_ms)
        for table in self.tables.values():
            for row in table.values():
                for n in row:
                    row[n] *= factor
        for pid in self.popularity:
            self.popularity[pid] *= factor
        self.landmark_ms = ts_ms

    def decayed(self, score: float, ts_ms: int) -> float:
        """A stored score as of event time ``ts_ms`` (for figures; rankings compare raw)."""
        if self.landmark_ms is None:
            return 0.0
        return float(score * 2.0 ** (-(ts_ms - self.landmark_ms) / self.half_life_ms))

    # -- learning ------------------------------------------------------------------------------

    def _add(self, relation: str, a: str, b: str, w: float) -> None:
        row = self.tables[relation].setdefault(a, {})
        row[b] = row.get(b, 0.0) + w
        if len(row) > 2 * self.k:
            keep = heapq.nlargest(self.k, row.items(), key=lambda kv: kv[1])
            row.clear()
            row.update(keep)

    def _seen(self, product_id: str, category: str, w: float) -> None:
        self.category[product_id] = category
        self.popularity[product_id] = self.popularity.get(product_id, 0.0) + w
        if len(self.popularity) > 2 * self.max_items:
            keep = heapq.nlargest(self.max_items, self.popularity.items(), key=lambda kv: kv[1])
            self.popularity = dict(keep)
            self.category = {p: self.category[p] for p in self.popularity if p in self.category}

    def _history(self, customer_id: str) -> list[tuple[str, str, int, str]]:
        history = self.customers.pop(customer_id, None) or []
        self.customers[customer_id] = history  # the most recently active last
        while len(self.customers) > self.max_customers:
            self.customers.popitem(last=False)
        return history

    def _remember(self, history: list[tuple[str, str, int, str]],
                  item: tuple[str, str, int, str]) -> None:
        history.append(item)
        if len(history) > self.recent:
            del history[: len(history) - self.recent]

    def view(self, customer_id: str, product_id: str, category: str, ts_ms: int,
             cart: bool = False) -> None:
        """A product view (``cart``: a cart add) by the customer at event time ``ts_ms``."""
        self.events += 1
        w = self.weight(ts_ms) * (CART_WEIGHT if cart else 1.0)
        self._seen(product_id, category, w)
        history = self._history(customer_id)
        together: set[str] = set()
        for other, _, ts, kind in history:
            if other == product_id or other in together or kind == "buy":
                continue
            if abs(ts_ms - ts) <= self.session_gap_ms:
                together.add(other)
                self._add("co_view", product_id, other, w)
                self._add("co_view", other, product_id, w)
        self._remember(history, (product_id, category, ts_ms, "cart" if cart else "view"))

    def purchase(self, customer_id: str, lines: list[tuple[str, str]], ts_ms: int) -> None:
        """An order's lines ``(product id, category)`` bought by the customer at ``ts_ms``."""
        self.events += 1
        w = self.weight(ts_ms)
        history = self._history(customer_id)
        bought = list(dict.fromkeys(pid for pid, _ in lines))
        for pid, category in dict(lines).items():
            self._seen(pid, category, w * BUY_POPULARITY)
        viewed: set[str] = set()
        before: set[str] = set()
        for other, _, ts, kind in history:
            if ts_ms - ts > self.buy_window_ms or ts > ts_ms:
                continue
            (before if kind == "buy" else viewed).add(other)
        for pid in bought:
            for other in bought:
                if other != pid:
                    self._add("co_buy", pid, other, w)
            for other in before - {pid}:
                self._add("co_buy", pid, other, w)
                self._add("co_buy", other, pid, w)
            for other in viewed - {pid}:
                self._add("view_buy", other, pid, w)
        for pid, category in dict(lines).items():
            self._remember(history, (pid, category, ts_ms, "buy"))

    def forget(self, customer_id: str, until_ms: int | None = None) -> None:
        """An erased customer: their recent products go (the aggregate counts stay); with
        ``until_ms`` (the erasure's event time) only those seen until then, so that a copy of
        the erasure read again later (a batch republished by a worker that lost its
        partition) leaves what the customer did after it.

        >>> r = ItemRelations()
        >>> r.view("c1", "p1", "shoes", 1_000); r.view("c1", "p2", "shoes", 3_000)
        >>> r.forget("c1", until_ms=2_000); [item[0] for item in r.customers["c1"]]
        ['p2']
        >>> r.forget("c1"); "c1" in r.customers
        False
        """
        if until_ms is None:
            self.customers.pop(customer_id, None)
            return
        history = self.customers.get(customer_id)
        if history is None:
            return
        history[:] = [item for item in history if item[2] > until_ms]
        if not history:
            del self.customers[customer_id]

    # -- the product feed ----------------------------------------------------------------------

    def upsert_product(self, product: dict[str, Any], ts_ms: int) -> bool:
        """A ``product`` event's state; False (ignored) when an equal or later one was applied,
        so a replayed or redelivered feed changes nothing."""
        pid = product["product_id"]
        have = self.products.get(pid)
        if have is not None and have["ts_ms"] >= ts_ms:
            return False
        self.products[pid] = {"category": product["category"], "price": product["price"],
                              "in_stock": product["in_stock"],
                              "margin": product.get("margin"), "brand": product.get("brand"),
                              "ts_ms": ts_ms}
        self.category[pid] = product["category"]
        return True

    def in_stock(self, product_id: str) -> bool:
        """False only when the feed says so: a product the feed never named is assumed sold."""
        state = self.products.get(product_id)
        return state is None or bool(state["in_stock"])

    # -- reading -------------------------------------------------------------------------------

    def neighbours(self, product_id: str, relation: str) -> list[tuple[str, float]]:
        """The product's neighbours in ``relation``, strongest first (at most ``k``); in a
        serving copy, with scores relative to the strongest."""
        if self.ranked is not None:
            return self.ranked[relation].get(product_id, [])
        row = self.tables[relation].get(product_id)
        if not row:
            return []
        return heapq.nlargest(self.k, row.items(), key=lambda kv: kv[1])

    def popular(self, n: int, category: str | None = None) -> list[tuple[str, float]]:
        """The ``n`` most popular products (of ``category``), most popular first (from the
        lists :meth:`serving_copy` keeps, when it made them: at most :data:`TOP` each)."""
        if self.top is not None:
            return (self.top if category is None else self.top_by_category.get(category, []))[:n]
        items = self.popularity.items() if category is None else (
            (p, s) for p, s in self.popularity.items() if self.category.get(p) == category)
        return heapq.nlargest(n, items, key=lambda kv: kv[1])

    def serving_copy(self) -> ItemRelations:
        """What the scoring workers need: each product's ranked neighbours (not the tables
        they come from), the product feed, popularity and its top lists; not the customers'
        recent products (the learner's alone)."""
        served = ItemRelations.__new__(ItemRelations)
        served.__dict__.update(self.__dict__)
        served.customers = OrderedDict()
        served.tables = {r: {} for r in RELATIONS}  # the workers read `ranked`
        served.popularity = dict(self.popularity)
        served.category = dict(self.category)
        served.products = {p: dict(s) for p, s in self.products.items()}
        by_category: dict[str, list[tuple[str, float]]] = {}
        for pid, score in sorted(self.popularity.items(), key=lambda kv: -kv[1]):
            cat = by_category.setdefault(self.category.get(pid, ""), [])
            if len(cat) < TOP:
                cat.append((pid, score))
        served.top_by_category = by_category
        served.top = heapq.nlargest(TOP, self.popularity.items(), key=lambda kv: kv[1])
        served.ranked = {}
        damping = self.popularity_damping
        popularity = self.popularity

        def pop(pid: str) -> float:
            return float(max(popularity.get(pid, 1.0), 1e-12) ** damping)

        for relation, table in self.tables.items():
            lists = served.ranked[relation] = {}
            for pid, row in table.items():
                best = heapq.nlargest(self.k, ((n, score / pop(n)) for n, score in row.items()),
                                      key=lambda kv: kv[1])
                if best and best[0][1] > 0:
                    top = best[0][1]
                    lists[pid] = [(n, round(score / top, 4)) for n, score in best]
        return served

    def stats(self) -> dict[str, int]:
        return {"relation_items": len(self.popularity), "relation_events": self.events,
                "relation_pairs": sum(len(row) for table in self.tables.values()
                                      for row in table.values()),
                "relation_customers": len(self.customers), "products": len(self.products)}
