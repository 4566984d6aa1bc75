"""Per-customer product ranking at decision time: related products first, popular ones after.

Pure: a profile, the served :class:`~streamproc.models.relations.ItemRelations` and the event
time in, ordered ``{"id", "reason"}`` out. :meth:`Recommender.recommend`:

1. **Seeds**: the profile's recent products (``recent_products``: viewed, carted, bought), each
   weighted by its kind (:data:`SEED_WEIGHTS`) and its recency (half-life
   ``seed_half_life_hours``).
2. **Candidates**: a product viewed or carted in an earlier session itself
   (:data:`SEEN_WEIGHT`, :data:`SEEN_AFFINITY` of it in proportion to its category's
   affinity: on the simulator's stream, what a customer viewed before is what they most often
   buy), and each seed's :data:`PER_SEED` strongest neighbours in the three relations
   (scores damped by the neighbour's popularity, relative to the seed's strongest neighbour,
   so a popular seed does not drown the others), times the relation's weight.
   "Viewed together" weighs a tenth of the others (it predicted few purchases in the replay);
   purchase intent shifts the weights: the hotter (``scores.intent``), the more "bought after
   viewing" and "bought together" count against "viewed together". Then the
   popular products of the customer's favourite categories (``affinities.categories``),
   weighted by the affinity. Each candidate keeps the reason of its first contribution, from
   the latest recent product on (its own history or a relation), else its favourite category.
3. **Exclusions**: out of stock (the product feed), a sensitive category, already bought in a
   category that is not replenishable, in the cart now (the cart reminder's job), viewed in
   the last ``SESSION_GAP_MS`` (what the customer is looking at now).
4. **Diversity**: at most ``max(2, ceil(n * max_category_share))`` per category while other
   categories have candidates left.
5. **Fallback**: filled up with the most popular products, with that reason (all of them for a
   customer with no history: "popular right now").

>>> from streamproc.models.relations import ItemRelations
>>> from streamproc.state.profile import new_profile, apply_event
>>> rel = ItemRelations()
>>> for cid in ("a", "b", "c"):
...     rel.view(cid, "tent", "outdoor", 0)
...     rel.view(cid, "stove", "outdoor", 1000)
>>> rel.view("d", "novel", "books", 0)
>>> served = rel.serving_copy()
>>> p = new_profile("c9")
>>> _ = apply_event(p, "product_view", 5000, {"product": {"product_id": "tent",
...     "category": "outdoor", "price": 99.0}})
>>> [(r["id"], r["reason"]) for r in Recommender(served).recommend(p, 6000, 2)]
[('stove', 'viewed together with tent'), ('novel', 'popular right now')]
>>> [r["reason"] for r in Recommender(served).recommend(new_profile("new"), 6000, 1)]
['popular right now: no browsing history yet']
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from streamproc.models.relations import ItemRelations
from streamproc.settings import Settings
from streamproc.state.profile import SESSION_GAP_MS, Profile

SEED_WEIGHTS = {"view": 1.0, "cart": 2.0, "buy": 1.5}
# (relation, weight when intent is cold, weight when hot), and the reason a relation gives.
RELATION_WEIGHTS = (("co_view", 0.1, 0.05), ("view_buy", 0.8, 1.2), ("co_buy", 0.6, 1.0))
REASONS = {"co_view": "viewed together with {}", "view_buy": "bought by those who viewed {}",
           "co_buy": "bought together with {}"}
# What a product viewed (or carted) before, in an earlier session, scores by itself against
# its seed weight, and the reason; how many neighbours of each seed and relation are taken.
# Of that score, the share that follows its category's affinity (relative to the strongest).
SEEN_WEIGHT, SEEN_AFFINITY = 10.0, 0.5
SEEN_REASONS = {"view": "you viewed it recently", "cart": "you added it to a cart recently"}
PER_SEED = 10
# What a favourite category's most popular product scores (its others in proportion to
# their popularity), times the category's affinity relative to the strongest.
AFFINITY_WEIGHT = 3.0
# Favourite categories looked at, and popular products taken from each.
AFFINITY_CATEGORIES, PER_CATEGORY = 3, 10
POPULAR, COLD = "popular right now", "popular right now: no browsing history yet"


class Recommender:
    """Ranks products for a customer with the served relations; see the module docstring.

    ``relations`` is swapped when a newer model snapshot is served (the scorer does it), so
    the engine keeps one object."""

    def __init__(self, relations: ItemRelations | None = None,
                 sensitive: Iterable[str] = (), replenishable: Iterable[str] = (),
                 seed_half_life_hours: float = 72.0, max_category_share: float = 0.5) -> None:
        self.relations = relations or ItemRelations()
        self.sensitive = frozenset(sensitive)
        self.replenishable = frozenset(replenishable)
        self.seed_half_life_hours = seed_half_life_hours
        self.max_category_share = max_category_share

    @classmethod
    def from_settings(cls, settings: Settings, relations: ItemRelations | None = None
                      ) -> Recommender:
        """With the categories ``STREAMPROC_RECS_SENSITIVE_CATEGORIES`` and
        ``STREAMPROC_RECS_REPLENISHABLE_CATEGORIES`` name: the worker's and the CLI's."""
        return cls(relations, sensitive=settings.categories("sensitive"),
                   replenishable=settings.categories("replenishable"))

    def recommend(self, p: Profile, ts_ms: int, n: int = 10) -> list[dict[str, str]]:
        """At most ``n`` products, best first, each ``{"id": ..., "reason": ...}``."""
        rel = self.relations
        recent = p.get("recent_products") or []
        excluded = set((p.get("cart") or {}).get("items") or ())
        excluded |= {pid for pid, _, kind, seen_ms in recent
                     if kind == "view" and ts_ms - seen_ms <= SESSION_GAP_MS}
        bought = {pid for pid, cat, kind, _ in recent
                  if kind == "buy" and cat not in self.replenishable}
        excluded |= bought
        scores: dict[str, float] = {}
        reasons: dict[str, str] = {}
        intent = float((p.get("scores") or {}).get("intent", 0.5))
        half_life_ms = self.seed_half_life_hours * 3_600_000
        relations = [(relation, cold + (hot - cold) * intent, REASONS[relation])
                     for relation, cold, hot in RELATION_WEIGHTS]
        get = scores.get
        affinities = (p.get("affinities") or {}).get("categories") or {}
        strongest = max(affinities.values(), default=0.0) or 1.0
        for pid, category, kind, seen_ms in reversed(recent):  # the latest first: the reason
            seed = SEED_WEIGHTS.get(kind, 1.0) * 0.5 ** (max(0, ts_ms - seen_ms) / half_life_ms)
            if kind != "buy":  # viewed or carted before: interest shown in the product itself
                liking = 1.0 - SEEN_AFFINITY + SEEN_AFFINITY * affinities.get(category, 0.0) / (
                    strongest)
                scores[pid] = get(pid, 0.0) + seed * SEEN_WEIGHT * liking
                reasons.setdefault(pid, SEEN_REASONS[kind])
            for relation, weight, reason in relations:
                neighbours = rel.neighbours(pid, relation)
                if not neighbours:
                    continue
                scale = seed * weight / neighbours[0][1]
                why = reason.format(pid)
                for other, score in neighbours[:PER_SEED]:
                    scores[other] = get(other, 0.0) + scale * score
                    if other not in reasons:
                        reasons[other] = why
        if affinities:
            favourite = sorted(affinities.items(), key=lambda kv: -kv[1])[:AFFINITY_CATEGORIES]
            strongest = favourite[0][1]
            for category, affinity in favourite:
                items = rel.popular(PER_CATEGORY, category)
                if not items:
                    continue
                top = items[0][1]
                why = f"popular in {category}, a favourite category"
                for other, score in items:
                    value = AFFINITY_WEIGHT * affinity / strongest * score / top
                    scores[other] = scores.get(other, 0.0) + value
                    reasons.setdefault(other, why)  # a relation's reason says more
        # Best first (ties in the order found: deterministic), checked only as far as needed.
        ranked = (pid for pid in sorted(scores, key=scores.__getitem__, reverse=True)
                  if self._allowed(pid, excluded))
        chosen = self._diverse(ranked, n)
        out = [{"id": pid, "reason": reasons[pid]} for pid in chosen]
        if len(out) < n:
            fill = COLD if not recent and not affinities else POPULAR
            taken = set(chosen)
            for pid, _ in rel.popular(n + len(excluded) + len(taken) + 20):
                if len(out) >= n:
                    break
                if pid not in taken and self._allowed(pid, excluded):
                    out.append({"id": pid, "reason": fill})
                    taken.add(pid)
        return out

    def _allowed(self, pid: str, excluded: set[str]) -> bool:
        rel = self.relations
        return (pid not in excluded and rel.in_stock(pid)
                and rel.category.get(pid) not in self.sensitive)

    def _diverse(self, ranked: Iterable[str], n: int) -> list[str]:
        """The best ``n``, at most a share of them per category while others are left."""
        cap = max(2, math.ceil(n * self.max_category_share))
        per: dict[str, int] = {}
        chosen: list[str] = []
        held: list[str] = []
        category = self.relations.category
        for pid in ranked:
            if len(chosen) >= n:
                break
            cat = category.get(pid, "")
            if per.get(cat, 0) >= cap:
                held.append(pid)
                continue
            per[cat] = per.get(cat, 0) + 1
            chosen.append(pid)
        return chosen + held[: n - len(chosen)]

