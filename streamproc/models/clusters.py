"""Behaviour clusters: online k-means over :func:`~streamproc.models.features.behaviour_vector`.

River's :class:`~river.cluster.KMeans` moves the nearest center towards each vector it learns
(an exponential moving average with weight ``halflife``): cheap, and it follows slow changes.
On its own it clusters the simulator's customers poorly (persona purity 0.43 with k=8): it
starts from random centers, most of which never win a point in a space of category shares, and
sequential updates settle in whichever local optimum the first customers lead to (0.77 even
when seeded well, then left alone). So:

* **Refits.** The last ``reservoir`` learnt vectors are kept. When ``warmup`` vectors have been
  seen, and then every ``refit_every`` vectors, the centers are recomputed by batch k-means on
  that sample (the best of ``restarts`` k-means++ seedings with Lloyd iterations, in numpy:
  about 50 ms with the defaults; with 10 restarts the result depended on the seed), and River's
  updates carry on from them. Before
  the first refit, :meth:`BehaviourClusters.assign` returns ``-1`` (not enough data yet).
* **Stable ids.** A refit's centers are matched to the current ones by distance (greedy, closest
  pairs first) and take their ids, so an id that meant "baby & grocery, mobile" keeps meaning
  that across refits and snapshots. :meth:`BehaviourClusters.align_to` does the same against
  another model (a rebuilt one, or one learnt elsewhere).

With both, purity against the simulator's 8 personas is 0.86 (``bench/models_bench.py``), as
good as batch k-means with 20 restarts on the final vectors; a learn costs about 30 µs for
River's update plus 30 µs amortised for the refits (more on a busy machine), and customers are
learnt once per session, not per event. DBSTREAM was measured as well: its macro-clusters are
recomputed from micro-clusters and their number follows the density (about 65 here), not
``k``; with that many it reaches the same purity, costs 130 to 170 µs per vector, and its ids
would need the alignment on every read.

>>> clusters = BehaviourClusters(k=2, warmup=4)
>>> for v in [{"cat:books": 1.0}, {"cat:shoes": 1.0}, {"cat:books": 0.9, "cat:home": 0.1},
...           {"cat:shoes": 0.8, "cat:sports": 0.2}]:
...     clusters.learn_one(v)
>>> clusters.assign({"cat:books": 1.0}) != clusters.assign({"cat:shoes": 1.0})
True
>>> clusters.describe(clusters.assign({"cat:shoes": 1.0}))
'shoes'
"""

from __future__ import annotations

import copy as copy_module
from collections import Counter, defaultdict, deque
from collections.abc import Mapping
from typing import Any

import numpy as np
from river import cluster

from streamproc.models.features import DEVICE_WEIGHT, TRAIT_WEIGHTS

Vector = dict[str, float]
CATEGORY = "cat:"
# A category is named in a description when it holds at least this share of the center.
NAMED_SHARE = 0.2
LLOYD_PASSES = 30


def _distance(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    return sum((a.get(k, 0.0) - b.get(k, 0.0)) ** 2 for k in {*a, *b})


class BehaviourClusters:
    """Online k-means with refits and stable ids; see the module docstring."""

    def __init__(
        self,
        k: int = 8,
        halflife: float = 0.02,
        warmup: int = 500,
        refit_every: int = 2000,
        reservoir: int = 2000,
        restarts: int = 20,
        seed: int = 42,
    ) -> None:
        if k < 1 or warmup < k or reservoir < warmup:
            raise ValueError(
                f"need k >= 1, warmup >= k and reservoir >= warmup; got k={k}, "
                f"warmup={warmup}, reservoir={reservoir}"
            )
        self.k = k
        self.halflife = halflife
        self.warmup = warmup
        self.refit_every = refit_every
        self.reservoir = reservoir
        self.restarts = restarts
        self.seed = seed
        # sigma=0: a key a center has not seen yet starts at 0, not at a random position.
        self.model = cluster.KMeans(n_clusters=k, halflife=halflife, sigma=0.0, seed=seed)
        self.recent: deque[Vector] = deque(maxlen=reservoir)
        self.learned = 0
        self.refits = 0

    @property
    def ready(self) -> bool:
        return self.refits > 0

    @property
    def centers(self) -> dict[int, Vector]:
        """Center of each cluster id (empty before the first refit)."""
        if not self.ready:
            return {}
        return {i: {k: v for k, v in c.items() if v} for i, c in self.model.centers.items()}

    def learn_one(self, x: Vector) -> None:
        self.recent.append(dict(x))
        self.learned += 1
        if not self.ready:
            if self.learned >= self.warmup:
                self.refit()
            return
        self.model.learn_one(x)
        if self.refit_every and self.learned % self.refit_every == 0:
            self.refit()

    def assign(self, x: Vector) -> int:
        """The cluster id of ``x`` (``-1`` before the first refit); no side effects."""
        if not self.ready:
            return -1
        centers = self.model.centers
        return int(min(centers, key=lambda i: _distance(centers[i], x)))

    def refit(self) -> None:
        """Batch k-means on the recent vectors; the new centers keep the current ids."""
        points = list(self.recent)
        if len(points) < self.k:
            return
        keys = sorted({key for p in points for key in p})
        data = np.array([[p.get(key, 0.0) for key in keys] for p in points])
        rng = np.random.default_rng([self.seed, self.refits])
        found = _best_kmeans(data, self.k, self.restarts, rng)
        new = {i: {key: float(v) for key, v in zip(keys, row, strict=True) if v}
               for i, row in enumerate(found)}
        ids = _match(new, self.centers) if self.ready else {i: i for i in new}
        for i, center in new.items():
            target = self.model.centers[ids[i]]
            target.clear()
            target.update(center)
        self.refits += 1

    def serving_copy(self) -> BehaviourClusters:
        """A copy without the reservoir of recent vectors: enough to assign and describe.

        What to snapshot for workers that only assign (a few kB instead of about 0.5 MB with
        the default reservoir of 2,000 vectors).
        """
        served = copy_module.copy(self)
        served.model = copy_module.deepcopy(self.model)
        served.recent = deque(maxlen=self.reservoir)
        return served

    def align_to(self, previous: BehaviourClusters) -> dict[int, int]:
        """Renumber this model's centers after the nearest centers of ``previous``.

        Returns {old id here: new id}. Ids follow ``previous`` wherever a center has a
        counterpart; the others take ids ``previous`` does not use.
        """
        mapping = _match(self.centers, previous.centers)
        self.model.centers = {mapping[i]: c for i, c in self.model.centers.items()}
        return mapping

    def describe(self, cluster_id: int) -> str:
        """A readable summary of a center: ``"shoes & sports, mobile, frequent, mid-price"``."""
        center = self.centers.get(cluster_id)
        if center is None:
            return "unknown"
        shares = sorted(
            ((v, k[len(CATEGORY):]) for k, v in center.items() if k.startswith(CATEGORY)),
            reverse=True,
        )
        named = [name for share, name in shares[:3] if share >= NAMED_SHARE]
        parts = [" & ".join(named or [name for _, name in shares[:1]])] if shares else []
        devices = {k[4:]: v / DEVICE_WEIGHT for k, v in center.items() if k.startswith("dev_")}
        if devices and max(devices.values()) >= 0.5:
            parts.append(max(devices, key=lambda d: devices[d]))
        if "buy_freq" in center or "price" in center:
            freq = center.get("buy_freq", 0.0) / TRAIT_WEIGHTS["buy_freq"]
            parts.append("frequent" if freq >= 0.5 else "occasional" if freq >= 0.15 else "rare")
        price = center.get("price", 0.0) / TRAIT_WEIGHTS["price"]
        if price:
            # log1p(EUR) / log1p(1000): 0.5 is about 30 EUR, 0.68 about 110 EUR
            parts.append("high-price" if price >= 0.68 else "mid-price" if price >= 0.5
                         else "low-price")
        return ", ".join(parts) or "no activity"


def _best_kmeans(
    data: np.ndarray[Any, Any], k: int, restarts: int, rng: np.random.Generator
) -> np.ndarray[Any, Any]:
    """The lowest-inertia result of ``restarts`` k-means++ seedings refined by Lloyd."""
    best: tuple[float, np.ndarray[Any, Any]] | None = None
    norms = (data**2).sum(axis=1)
    for _ in range(max(1, restarts)):
        centers = _kmeans_pp(data, k, rng)
        labels = np.full(len(data), -1)
        for _ in range(LLOYD_PASSES):
            d2 = norms[:, None] - 2 * data @ centers.T + (centers**2).sum(axis=1)[None, :]
            new_labels = d2.argmin(axis=1)
            if np.array_equal(new_labels, labels):
                break
            labels = new_labels
            onehot = np.eye(k)[labels]
            counts = onehot.sum(axis=0)
            sums = onehot.T @ data
            filled = counts > 0  # an emptied cluster keeps its center
            centers[filled] = sums[filled] / counts[filled, None]
        d2 = norms[:, None] - 2 * data @ centers.T + (centers**2).sum(axis=1)[None, :]
        inertia = float(d2.min(axis=1).sum())
        if best is None or inertia < best[0]:
            best = (inertia, centers)
    assert best is not None
    return best[1]


def _kmeans_pp(
    data: np.ndarray[Any, Any], k: int, rng: np.random.Generator
) -> np.ndarray[Any, Any]:
    centers = [data[rng.integers(len(data))]]
    nearest = ((data - centers[0]) ** 2).sum(axis=1)
    while len(centers) < k:
        total = nearest.sum()
        pick = rng.choice(len(data), p=nearest / total) if total > 0 else rng.integers(len(data))
        centers.append(data[pick])
        nearest = np.minimum(nearest, ((data - data[pick]) ** 2).sum(axis=1))
    return np.array(centers, dtype=float)


def _match(new: Mapping[int, Vector], old: Mapping[int, Vector]) -> dict[int, int]:
    """Ids for ``new``'s centers: the nearest unused id of ``old`` (closest pairs first)."""
    pairs = sorted((_distance(c, o), i, j) for i, c in new.items() for j, o in old.items())
    mapping: dict[int, int] = {}
    used: set[int] = set()
    for _, i, j in pairs:
        if i not in mapping and j not in used:
            mapping[i] = j
            used.add(j)
    spare = (n for n in range(len(new) + len(old)) if n not in used)
    for i in new:
        if i not in mapping:
            mapping[i] = next(spare)
    return mapping


def purity(assignments: Mapping[str, int], personas: Mapping[str, str]) -> float:
    """Share of customers whose cluster's majority persona is their own (1.0 = perfect).

    >>> purity({"a": 0, "b": 0, "c": 1}, {"a": "x", "b": "y", "c": "y"})
    0.6667
    """
    by_cluster: dict[int, Counter[str]] = defaultdict(Counter)
    for customer, cluster_id in assignments.items():
        by_cluster[cluster_id][personas[customer]] += 1
    total = sum(sum(c.values()) for c in by_cluster.values())
    best = sum(c.most_common(1)[0][1] for c in by_cluster.values())
    return round(best / total, 4) if total else 0.0


def majority(
    assignments: Mapping[str, int], personas: Mapping[str, str]
) -> dict[int, tuple[str, float]]:
    """For each cluster id, its most common persona and that persona's share (for reports)."""
    by_cluster: dict[int, Counter[str]] = defaultdict(Counter)
    for customer, cluster_id in assignments.items():
        by_cluster[cluster_id][personas[customer]] += 1
    out: dict[int, tuple[str, float]] = {}
    for i, counts in sorted(by_cluster.items()):
        name, n = counts.most_common(1)[0]
        out[i] = (name, round(n / sum(counts.values()), 2))
    return out
