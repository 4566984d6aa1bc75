"""The Thompson-sampling chooser: determinism, propensities, learning, timeouts, snapshots."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from streamproc.decisions.bandit import BanditError, ThompsonChooser
from streamproc.decisions.chooser import Chooser, UniformChooser, unit_draw
from streamproc.models.snapshot import SnapshotError

ACTIONS = ["cart_reminder", "category_picks", "thank_you_cross_sell", "free_delivery"]
SECRET = b"test-secret-0123456789"


def trained(rates: dict[str, float], n: int = 200, context: str = "ctx") -> ThompsonChooser:
    """A chooser that saw ``n`` outcomes of each action at the given success rates."""
    bandit = ThompsonChooser(exploration=0.1, reward_wait_ms=60_000)
    for action, rate in rates.items():
        wins = round(rate * n)
        for i in range(n):
            bandit.learn(action, context, 1.0 if i < wins else 0.0)
    return bandit


def test_is_a_chooser() -> None:
    chooser: Chooser = ThompsonChooser()
    assert chooser.version == "thompson-v1"
    assert isinstance(UniformChooser().version, str)


def test_same_state_and_seed_give_the_same_pick_even_in_a_fresh_copy() -> None:
    bandit = trained({"cart_reminder": 0.3, "category_picks": 0.25, "free_delivery": 0.2})
    copy = ThompsonChooser.from_state(bandit.to_state())
    for i in range(200):
        seed = f"decision-{i}".encode()
        assert bandit.choose(ACTIONS, "ctx", seed) == copy.choose(ACTIONS, "ctx", seed)
        assert bandit.choose(ACTIONS, "ctx", seed) == bandit.choose(ACTIONS, "ctx", seed)


def test_different_seeds_explore_every_action() -> None:
    bandit = trained({"cart_reminder": 0.5, "category_picks": 0.1, "thank_you_cross_sell": 0.1,
                      "free_delivery": 0.1})
    picks = Counter(bandit.choose(ACTIONS, "ctx", f"d{i}".encode()).action_id for i in range(2000))
    assert set(picks) == set(ACTIONS)
    assert picks.most_common(1)[0][0] == "cart_reminder"


def test_propensities_sum_to_one_and_respect_the_floor() -> None:
    bandit = trained({"cart_reminder": 0.9, "category_picks": 0.01}, n=500)
    probs = bandit.probabilities(ACTIONS, "ctx")
    assert math.isclose(sum(probs), 1.0, abs_tol=1e-12)
    assert min(probs) >= 0.1 / len(ACTIONS) - 1e-12
    # The pick's propensity is the vector's entry for the picked action.
    for i in range(50):
        pick = bandit.choose(ACTIONS, "ctx", f"x{i}".encode())
        assert pick.propensity == probs[ACTIONS.index(pick.action_id)]
        assert 0 < pick.propensity <= 1


def test_propensities_match_empirical_pick_frequencies() -> None:
    bandit = trained({"cart_reminder": 0.2, "category_picks": 0.22, "thank_you_cross_sell": 0.1,
                      "free_delivery": 0.15}, n=60)
    probs = bandit.probabilities(ACTIONS, "ctx")
    n = 20_000
    counts = Counter(bandit.choose(ACTIONS, "ctx", f"s{i}".encode()).action_id for i in range(n))
    for action, p in zip(ACTIONS, probs, strict=True):
        tolerance = 4 * math.sqrt(p * (1 - p) / n)
        assert abs(counts[action] / n - p) < tolerance, (action, counts[action] / n, p)


def test_thompson_probabilities_follow_the_posteriors() -> None:
    # Two arms with known posteriors: P(Beta(31,71) > Beta(21,81)) is about 0.94.
    bandit = trained({"cart_reminder": 0.3, "category_picks": 0.2}, n=100)
    probs = bandit.probabilities(["cart_reminder", "category_picks"], "ctx")
    thompson = (probs[0] - 0.05) / 0.9
    assert 0.90 < thompson < 0.97


def test_learning_moves_picks_towards_the_best_action() -> None:
    truth = {"cart_reminder": 0.05, "category_picks": 0.25, "thank_you_cross_sell": 0.1,
             "free_delivery": 0.08}
    bandit = ThompsonChooser(exploration=0.05)

    def share_of_best(start: int, rounds: int) -> float:
        best = 0
        for i in range(start, start + rounds):
            pick = bandit.choose(ACTIONS, "ctx", f"d{i}".encode())
            best += pick.action_id == "category_picks"
            # The reward is a deterministic function of the decision: reproducible test.
            won = unit_draw(f"d{i}".encode(), "reward") < truth[pick.action_id]
            bandit.learn(pick.action_id, "ctx", 1.0 if won else 0.0)
        return best / rounds

    early = share_of_best(0, 200)
    share_of_best(200, 1500)
    late = share_of_best(1700, 500)
    assert late > 0.75
    assert late > early + 0.3


def test_contexts_learn_separately() -> None:
    bandit = ThompsonChooser()
    for _ in range(100):
        bandit.learn("cart_reminder", "parents", 1.0)
        bandit.learn("category_picks", "parents", 0.0)
        bandit.learn("cart_reminder", "gamers", 0.0)
        bandit.learn("category_picks", "gamers", 1.0)
    pair = ["cart_reminder", "category_picks"]
    assert bandit.probabilities(pair, "parents")[0] > 0.9
    assert bandit.probabilities(pair, "gamers")[1] > 0.9
    assert bandit.probabilities(pair, "unseen") == pytest.approx([0.5, 0.5], abs=0.03)


def test_revenue_rewards_are_clipped_into_the_unit_interval() -> None:
    bandit = ThompsonChooser()
    bandit.learn("a", "c", 250.0)
    bandit.learn("a", "c", -3.0)
    bandit.learn("b", "c", 0.4)
    assert bandit.posterior("c", "a") == (2.0, 2.0)
    assert bandit.posterior("c", "b") == pytest.approx((1.4, 1.6))
    with pytest.raises(BanditError, match="finite"):
        bandit.learn("a", "c", float("nan"))


def test_a_single_candidate_has_propensity_one_and_bad_input_is_refused() -> None:
    bandit = ThompsonChooser()
    assert bandit.choose(["only"], "c", b"x").propensity == 1.0
    with pytest.raises(BanditError, match="at least one"):
        bandit.choose([], "c", b"x")
    with pytest.raises(BanditError, match="distinct"):
        bandit.choose(["a", "a"], "c", b"x")
    with pytest.raises(BanditError, match="exploration"):
        ThompsonChooser(exploration=0.0)


def test_a_reward_closes_the_expectation_and_counts_once() -> None:
    bandit = ThompsonChooser(reward_wait_ms=1000)
    bandit.expect("d1", "a", "c", ts_ms=10_000)
    assert bandit.pending == 1
    assert bandit.reward("d1", 1.0) is True
    assert bandit.reward("d1", 1.0) is False
    assert bandit.posterior("c", "a") == (2.0, 1.0)
    assert bandit.advance(1_000_000) == 0  # already closed: nothing more to learn
    bandit.expect("d1", "a", "c", ts_ms=10_000)  # a replayed decision
    assert bandit.pending == 0
    assert bandit.posterior("c", "a") == (2.0, 1.0)


def test_rewards_that_never_come_close_as_zero_after_the_wait_in_event_time() -> None:
    bandit = ThompsonChooser(reward_wait_ms=60_000)
    bandit.expect("d1", "a", "c", ts_ms=0)
    bandit.expect("d2", "a", "c", ts_ms=30_000)
    bandit.expect("d3", "b", "c", ts_ms=50_000)
    assert bandit.advance(59_999) == 0
    assert bandit.advance(60_000) == 1  # d1's wait is over
    assert bandit.posterior("c", "a") == (1.0, 2.0)
    assert bandit.reward("d1", 1.0) is False  # too late: already counted as zero
    assert bandit.reward("d2", 1.0) is True
    assert bandit.advance(200_000) == 1  # d3
    assert bandit.posterior("c", "a") == (2.0, 2.0)
    assert bandit.posterior("c", "b") == (1.0, 2.0)
    assert bandit.expired == 2 and bandit.pending == 0


def test_snapshot_round_trip_keeps_posteriors_and_open_expectations() -> None:
    bandit = trained({"cart_reminder": 0.3, "category_picks": 0.1}, n=50)
    bandit.expect("open-1", "category_picks", "ctx", ts_ms=5_000)
    bandit.expect("done-1", "category_picks", "ctx", ts_ms=5_000)
    bandit.reward("done-1", 1.0)
    blob = bandit.snapshot(SECRET, created_ms=0)
    restored = ThompsonChooser.restore(blob, SECRET)
    assert restored.to_state() == bandit.to_state()
    assert restored.probabilities(ACTIONS, "ctx") == bandit.probabilities(ACTIONS, "ctx")
    assert restored.pending == 1
    restored.expect("done-1", "category_picks", "ctx", ts_ms=5_000)
    assert restored.pending == 1  # the closed id is remembered across the snapshot
    assert restored.advance(5_000 + restored.reward_wait_ms) == 1


def test_snapshot_with_a_wrong_secret_or_tampered_bytes_is_refused() -> None:
    blob = trained({"cart_reminder": 0.3}).snapshot(SECRET)
    with pytest.raises(SnapshotError, match="signature"):
        ThompsonChooser.restore(blob, b"another-secret")
    tampered = bytearray(blob)
    tampered[-5] ^= 0xFF
    with pytest.raises(SnapshotError, match="signature"):
        ThompsonChooser.restore(bytes(tampered), SECRET)


def test_a_signed_snapshot_of_something_else_is_refused() -> None:
    from streamproc.models.snapshot import dump

    with pytest.raises(SnapshotError, match="not a bandit state"):
        ThompsonChooser.restore(dump({"weights": [1, 2]}, SECRET, version=1), SECRET)


def test_summary_reports_outcomes_and_means() -> None:
    bandit = trained({"cart_reminder": 0.5}, n=10)
    summary = bandit.summary()
    assert summary["contexts"]["ctx"]["cart_reminder"] == {"outcomes": 10.0, "mean": 0.5}
    assert summary["updates"] == 10


def test_the_serving_copy_picks_like_the_original_without_its_open_expectations() -> None:
    from streamproc.settings import Settings

    settings = Settings.from_env({"STREAMPROC_BANDIT_EXPLORATION": "0.2",
                                  "STREAMPROC_BANDIT_REWARD_WAIT_MINUTES": "5"})
    bandit = ThompsonChooser.from_settings(settings)
    assert (bandit.exploration, bandit.reward_wait_ms) == (0.2, 300_000)
    for i in range(40):
        bandit.learn("cart_reminder" if i % 3 else "category_picks", "ctx", float(i % 2))
    bandit.expect("open", "cart_reminder", "ctx", ts_ms=0)
    bandit.expect("done", "cart_reminder", "ctx", ts_ms=0)
    bandit.reward("done", 1.0)
    copy = bandit.serving_copy()
    assert copy.posteriors == bandit.posteriors and copy.updates == bandit.updates
    assert (copy.exploration, copy.reward_wait_ms) == (0.2, 300_000)
    assert copy.pending == 0 and copy.to_state()["closed"] == []
    for i in range(100):
        seed = f"d{i}".encode()
        assert copy.choose(ACTIONS[:2], "ctx", seed) == bandit.choose(ACTIONS[:2], "ctx", seed)
    # Swapped in place into the object an engine holds.
    held = ThompsonChooser()
    held.take_over(copy)
    assert held.posterior("ctx", "cart_reminder") == bandit.posterior("ctx", "cart_reminder")
    assert held.probabilities(ACTIONS[:2], "ctx") == bandit.probabilities(ACTIONS[:2], "ctx")


def test_the_vector_is_redrawn_once_the_context_grew_by_two_percent() -> None:
    bandit = trained({"cart_reminder": 0.3, "category_picks": 0.28}, n=500)  # 1,000 outcomes
    pair = ["cart_reminder", "category_picks"]
    before = bandit.probabilities(pair, "ctx")
    for _ in range(20):  # 20 new outcomes < 2% of 1,020 (20.4): the kept vector still serves
        bandit.learn("category_picks", "ctx", 1.0)
    assert bandit.probabilities(pair, "ctx") == before
    bandit.learn("category_picks", "ctx", 1.0)  # 21 >= 2% of 1,021: redrawn
    after = bandit.probabilities(pair, "ctx")
    assert after[1] > before[1]
    # A copy restored from the state keeps the vectors too, so it picks the same.
    copy = ThompsonChooser.from_state(bandit.to_state())
    bandit.learn("category_picks", "ctx", 1.0)
    copy.learn("category_picks", "ctx", 1.0)
    assert copy.probabilities(pair, "ctx") == bandit.probabilities(pair, "ctx") == after


def test_a_young_context_follows_every_outcome() -> None:
    bandit = ThompsonChooser()
    pair = ["a", "b"]
    first = bandit.probabilities(pair, "new")
    bandit.learn("a", "new", 1.0)
    assert bandit.probabilities(pair, "new")[0] > first[0]
