"""Behaviour clusters: they find planted groups, keep their ids, and describe themselves."""

from __future__ import annotations

import pickle
import random

from streamproc.models.clusters import BehaviourClusters, majority, purity
from streamproc.models.features import DEVICE_WEIGHT, TRAIT_WEIGHTS

F, P = TRAIT_WEIGHTS["buy_freq"], TRAIT_WEIGHTS["price"]

# Four planted kinds of customers, as behaviour_vector would describe them.
KINDS: dict[str, dict[str, float]] = {
    "sporty": {"cat:shoes": 0.5, "cat:sports": 0.5, "dev_mobile": DEVICE_WEIGHT,
               "buy_freq": 0.6 * F, "price": 0.6 * P},
    "reader": {"cat:books": 0.9, "cat:home": 0.1, "dev_tablet": DEVICE_WEIGHT,
               "buy_freq": 0.2 * F, "price": 0.4 * P},
    "techie": {"cat:electronics": 1.0, "dev_desktop": DEVICE_WEIGHT,
               "buy_freq": 0.05 * F, "price": 0.8 * P},
    "parent": {"cat:baby": 0.6, "cat:toys": 0.2, "cat:grocery": 0.2,
               "dev_mobile": DEVICE_WEIGHT, "buy_freq": 0.7 * F,
               "price": 0.45 * P},
}


def sample(rng: random.Random, kind: str) -> dict[str, float]:
    return {k: max(0.0, v + rng.gauss(0, 0.03)) for k, v in KINDS[kind].items()}


def stream(seed: int, n: int) -> list[tuple[str, dict[str, float]]]:
    rng = random.Random(seed)
    kinds = sorted(KINDS)
    return [(kind, sample(rng, kind)) for kind in (rng.choice(kinds) for _ in range(n))]


def trained(seed: int = 1, n: int = 1500, **kwargs: int) -> BehaviourClusters:
    clusters = BehaviourClusters(k=4, warmup=200, refit_every=300, reservoir=600, seed=seed,
                                 **kwargs)
    for _, v in stream(seed, n):
        clusters.learn_one(v)
    return clusters


def ids(clusters: BehaviourClusters) -> dict[str, int]:
    return {kind: clusters.assign(v) for kind, v in KINDS.items()}


def test_nothing_is_assigned_before_the_warm_up() -> None:
    clusters = BehaviourClusters(k=4, warmup=50)
    for _, v in stream(0, 49):
        clusters.learn_one(v)
    assert clusters.assign(KINDS["reader"]) == -1 and clusters.centers == {}
    assert clusters.describe(0) == "unknown"
    clusters.learn_one(KINDS["reader"])
    assert clusters.ready and clusters.assign(KINDS["reader"]) in range(4)


def test_planted_groups_are_found() -> None:
    clusters = trained()
    assert len(set(ids(clusters).values())) == 4
    held_out = stream(99, 400)
    assigned = {str(i): clusters.assign(v) for i, (_, v) in enumerate(held_out)}
    truth = {str(i): kind for i, (kind, _) in enumerate(held_out)}
    assert purity(assigned, truth) == 1.0
    assert {persona for persona, _ in majority(assigned, truth).values()} == set(KINDS)


def test_ids_stay_the_same_across_refits_and_snapshots() -> None:
    clusters = trained(n=600)
    before = ids(clusters)
    refits = clusters.refits
    snapshot = pickle.loads(pickle.dumps(clusters))
    for _, v in stream(7, 3000):  # ten more refits on new data from the same groups
        clusters.learn_one(v)
    assert clusters.refits >= refits + 10
    assert ids(clusters) == before
    assert ids(snapshot) == before


def test_a_serving_copy_assigns_and_describes_like_the_original() -> None:
    clusters = trained()
    served = clusters.serving_copy()
    assert ids(served) == ids(clusters)
    assert [served.describe(i) for i in range(4)] == [clusters.describe(i) for i in range(4)]
    assert len(served.recent) == 0 < len(clusters.recent)
    assert len(pickle.dumps(served)) < len(pickle.dumps(clusters)) / 5
    clusters.learn_one(KINDS["reader"])  # the copy does not share the centers
    assert served.model.centers is not clusters.model.centers


def test_a_rebuilt_model_is_aligned_to_the_previous_ids() -> None:
    old = trained(seed=1)
    for seed in range(2, 8):
        new = trained(seed=seed)
        new.align_to(old)
        assert ids(new) == ids(old)


def test_descriptions_name_the_dominant_traits() -> None:
    clusters = trained()
    described = {kind: clusters.describe(i) for kind, i in ids(clusters).items()}
    assert described["sporty"].startswith(("shoes & sports", "sports & shoes"))
    assert "mobile" in described["sporty"] and "frequent" in described["sporty"]
    assert described["reader"].startswith("books") and "tablet" in described["reader"]
    assert described["techie"] == "electronics, desktop, rare, high-price"
    assert described["parent"].startswith("baby & ")
    assert "low-price" in described["parent"]


def test_purity_counts_majorities() -> None:
    assert purity({}, {}) == 0.0
    assert purity({"a": 0, "b": 1}, {"a": "x", "b": "x"}) == 1.0
    assert purity({"a": 0, "b": 0, "c": 0, "d": 1}, {"a": "x", "b": "x", "c": "y", "d": "y"}) \
        == 0.75
