"""How the engine picks one action among the eligible ones: the seam between engine and bandit."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Pick:
    action_id: str
    propensity: float          # probability this chooser had of picking action_id, in (0, 1]
    policy: str                # e.g. "thompson-v1", "uniform", "neutral"
    reasons: tuple[str, ...] = field(default=())

class Chooser(Protocol):
    version: str
    def choose(self, candidates: Sequence[str], context: str, seed: bytes) -> Pick:
        """Pick one of candidates (non-empty, in catalogue order) for a context key (e.g. a
        segment or cluster id). The draw is a deterministic function of the chooser's state and
        seed (the decision id's bytes), so the same state and decision give the same pick."""
    def learn(self, action_id: str, context: str, reward: float) -> None:
        """Feedback for an earlier pick (reward 0 for no response, 1 for a click/conversion,
        or revenue-scaled; the engine decides the scale)."""

def unit_draw(seed: bytes, salt: str = "") -> float:
    """A deterministic number in [0, 1) from a seed: the source of every random choice."""
    digest = hashlib.blake2b(seed + salt.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64

class UniformChooser:
    version = "uniform-v1"
    def choose(self, candidates: Sequence[str], context: str, seed: bytes) -> Pick:
        i = min(int(unit_draw(seed) * len(candidates)), len(candidates) - 1)
        return Pick(candidates[i], 1.0 / len(candidates), "uniform")
    def learn(self, action_id: str, context: str, reward: float) -> None:
        return None
