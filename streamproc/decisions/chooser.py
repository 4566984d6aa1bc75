"""How the engine picks one action among the eligible ones: the seam between engine and bandit."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Pick:
    action_id: str
    propensity: float          # probability this chooser had of picking action_id, in (0, 1]
    policy: str                # e.g. "thompson-v1", "uniform", "neutral"
    reasons: tuple[str, ...] = field(default=())

class Chooser(Protocol):
    """What the engine needs of any chooser: a pick among candidates, and learning from a
    reward as soon as it is known."""

    version: str
    def choose(self, candidates: Sequence[str], context: str, seed: bytes) -> Pick:
        """Pick one of candidates (non-empty, in catalogue order) for a context key (e.g. a
        segment or cluster id). The draw is a deterministic function of the chooser's state and
        seed (the decision id's bytes), so the same state and decision give the same pick."""
    def learn(self, action_id: str, context: str, reward: float) -> None:
        """Feedback for an earlier pick (reward 0 for no response, 1 for a click/conversion,
        or revenue-scaled; the engine decides the scale)."""


@runtime_checkable
class DelayedRewardChooser(Chooser, Protocol):
    """A chooser that waits for its rewards (the learning bandit,
    :class:`~streamproc.decisions.bandit.ThompsonChooser`): a pick's reward comes later, or never.

    The engine tells it each pick to wait for (``expect``), each reward that comes (``reward``,
    instead of ``learn``) and how far event time has gone (``advance``, which closes the waits
    that ran out as zero rewards). A chooser without these learns through ``learn`` alone.
    """

    def expect(self, decision_id: str, action_id: str, context: str, ts_ms: int) -> None:
        """Wait for the reward of the pick ``decision_id`` made at event time ``ts_ms``."""

    def reward(self, decision_id: str, reward: float) -> bool:
        """Learn the reward of an expected pick; False when it was not expected."""

    def advance(self, watermark_ms: int) -> int:
        """Close the waits that ended by ``watermark_ms`` as zero rewards; return how many."""

def unit_draw(seed: bytes, salt: str = "") -> float:
    """A deterministic number in [0, 1) from a seed: the source of every random choice."""
    digest = hashlib.blake2b(seed + salt.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64

def draw_index(probs: Sequence[float], seed: bytes, salt: str) -> int:
    """The index the inverse CDF of :func:`unit_draw` picks in a probability vector."""
    u = unit_draw(seed, salt)
    cumulative = 0.0
    for i, p in enumerate(probs):
        cumulative += p
        if u < cumulative:
            return i
    return len(probs) - 1

class UniformChooser:
    version = "uniform-v1"
    def choose(self, candidates: Sequence[str], context: str, seed: bytes) -> Pick:
        i = min(int(unit_draw(seed) * len(candidates)), len(candidates) - 1)
        return Pick(candidates[i], 1.0 / len(candidates), "uniform")
    def learn(self, action_id: str, context: str, reward: float) -> None:
        return None
