"""A learning next-best-action chooser: Thompson sampling per context, with exact propensities.

The engine asks :meth:`ThompsonChooser.choose` to pick one of the eligible actions for a
*context key* (a segment or cluster id); feedback teaches it which actions work in which
context. What it does, and why:

**Beta posteriors, rewards in [0, 1].** Each (context, action) has a Beta(alpha, beta)
posterior of its success rate, starting from Beta(1, 1). A reward ``r`` adds ``r`` to alpha and
``1 - r`` to beta (the "fractional" Bernoulli update), so a click or a conversion (1) and no
response (0) are the usual Beta-Bernoulli update, and a revenue-scaled reward (the learner
maps a revenue slot's amounts into [0, 1]: :class:`~streamproc.decisions.lessons.RevenueScale`)
moves the posterior mean towards the expected scaled revenue. Rewards outside [0, 1] are
clipped: revenue has a long tail and a single huge order must not swamp a posterior. (A
Normal-Gamma posterior on raw revenue was the alternative; it needs far more data before its
variance means anything.)

**Exact propensities.** Plain Thompson sampling draws once from every posterior and takes the
largest draw; the probability of each action winning has no closed form beyond two arms, and an
offline evaluation (IPS, doubly robust: :mod:`streamproc.decisions.evaluation`) needs it
exactly. So this chooser *defines* its policy as a probability vector and samples from it:

1. ``P_ts(a)`` = the share of :data:`MC_DRAWS` joint posterior draws in which ``a`` wins
   (a Monte Carlo estimate of Thompson sampling's own pick probabilities). The draws come from a
   generator seeded with a hash of the context, the candidates and the posterior parameters, so
   the same state always gives the same vector, in any process;
2. ``P(a) = (1 - exploration) * P_ts(a) + exploration / K`` over the K candidates: a floor of
   ``exploration / K`` (``STREAMPROC_BANDIT_EXPLORATION``) so no propensity is ever 0, which IPS
   needs, and the bandit keeps testing actions it believes worse;
3. the pick is the inverse CDF of :func:`~streamproc.decisions.chooser.unit_draw` of the seed
   (the decision id's bytes) over ``P`` in candidate order.

The logged propensity is ``P(pick)``: exact for the policy actually run (the Monte Carlo error
only makes it differ slightly from an ideal Thompson sampler, not from what was done). The
vector of a context is kept, and is part of the state (so a restored copy picks the same), until
the outcomes learnt in that context grew by :data:`REFRESH_SHARE` (2%, at least one): early on
it follows every outcome, later one redraw serves many decisions, whose cost is then a
dictionary look-up and a hash.

**Rewards that never come.** :meth:`expect` registers a decision's pick; :meth:`reward` learns
the first reward reported for it and closes it; :meth:`advance` (called with the event-time
watermark) closes every expectation older than ``reward_wait_ms``
(``STREAMPROC_BANDIT_REWARD_WAIT_MINUTES``) as a zero reward. Call :meth:`reward` for the
outcome counted as the reward (a click, a conversion), not for impressions.

**Snapshots.** :meth:`snapshot` signs the state (posteriors and open expectations) with HMAC
(:mod:`streamproc.models.snapshot`); :meth:`restore` refuses a snapshot whose signature does not
verify, before anything is unpickled. In a deployment the chooser travels inside the learner's
signed snapshots instead (see below); these two serve files (``streamproc bandit --snapshot``).

**Why not river.bandit.** River's ``ThompsonSampling`` keeps one random generator per policy
(a pick depends on every earlier pick, not on the decision), has no context key and reports no
propensity; the three things a replayable, offline-evaluable decision needs.

**One bandit for every worker.** The workers do not learn: their lessons (``expect`` at a
learning pick, ``reward`` on feedback) travel on the learning topic to the one learner
(:mod:`streamproc.decisions.lessons`, :mod:`streamproc.learning.learner`), whose chooser learns
from all of them; every worker picks with a :meth:`serving_copy` of it from the learner's latest
snapshot, swapped in place (:meth:`take_over`).

>>> bandit = ThompsonChooser(exploration=0.1, reward_wait_ms=60_000)
>>> for _ in range(30):
...     bandit.learn("cart_reminder", "prospect", 1.0)
...     bandit.learn("category_picks", "prospect", 0.0)
>>> pick = bandit.choose(["cart_reminder", "category_picks"], "prospect", b"decision-1")
>>> pick.action_id, pick.policy, round(pick.propensity, 2)
('cart_reminder', 'thompson-v1', 0.95)
>>> bandit.choose(["cart_reminder", "category_picks"], "prospect", b"decision-1") == pick
True
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamproc.decisions.chooser import Pick, draw_index
from streamproc.errors import StreamprocError
from streamproc.models.snapshot import SnapshotError, dump, load
from streamproc.settings import Settings

POLICY = "thompson-v1"
MC_DRAWS = 1000  # joint posterior draws per propensity vector: P_ts within about +-0.016
STATE_FORMAT = 1
MAX_PENDING = 200_000  # open expectations kept; beyond it the oldest close as zero
REFRESH_SHARE = 0.02  # a context's vector is redrawn once its outcomes grew by 2% (at least 1)
MAX_CLOSED = 50_000  # closed decision ids remembered, so a replayed expect is not learnt twice
DEFAULT_EXPLORATION = 0.1
DEFAULT_REWARD_WAIT_MS = 24 * 3600 * 1000


class BanditError(StreamprocError):
    """The bandit was given something it cannot use (no candidates, a bad setting or state)."""


@dataclass
class _Pending:
    action_id: str
    context: str
    ts_ms: int


class ThompsonChooser:
    """Thompson sampling per context key with exact, floored propensities (module docstring).

    A :class:`~streamproc.decisions.chooser.DelayedRewardChooser` (``expect``, ``reward``, and
    ``advance`` for rewards that never come), ``probabilities`` for offline evaluation, and
    signed ``snapshot``/``restore``.
    """

    version = POLICY
    name = "bandit"  # as a candidate policy of `streamproc evaluate`

    def __init__(self, exploration: float = DEFAULT_EXPLORATION,
                 reward_wait_ms: int = DEFAULT_REWARD_WAIT_MS,
                 mc_draws: int = MC_DRAWS) -> None:
        if not 0.0 < exploration <= 1.0:
            raise BanditError(f"exploration must be in (0, 1], got {exploration}: it is the "
                              "share of picks spread evenly, so that no propensity is 0")
        if reward_wait_ms <= 0:
            raise BanditError(f"reward_wait_ms must be positive, got {reward_wait_ms}")
        if mc_draws < 100:
            raise BanditError(f"mc_draws must be at least 100, got {mc_draws}")
        self.exploration = exploration
        self.reward_wait_ms = reward_wait_ms
        self.mc_draws = mc_draws
        # context -> action -> [alpha, beta]
        self.posteriors: dict[str, dict[str, list[float]]] = {}
        self.updates = 0  # rewards learnt, the snapshot's version
        self.expired = 0  # expectations closed as zero by advance (or by MAX_PENDING)
        self._pending: dict[str, _Pending] = {}
        self._closed: dict[str, None] = {}  # insertion-ordered set
        self._deadlines: list[tuple[int, str]] = []  # (ts_ms + wait, decision id), lazy heap
        # context -> outcomes learnt in it; context -> candidates -> (outcomes then, vector)
        self.outcomes: dict[str, int] = {}
        self._vectors: dict[str, dict[tuple[str, ...], tuple[int, list[float]]]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> ThompsonChooser:
        """A fresh chooser with ``STREAMPROC_BANDIT_*`` settings."""
        return cls(settings.bandit_exploration, settings.bandit_reward_wait_minutes * 60_000)

    # -- choosing ---------------------------------------------------------------------------

    def posterior(self, context: str, action_id: str) -> tuple[float, float]:
        """(alpha, beta) of an action in a context; Beta(1, 1) when it never learnt."""
        ab = self.posteriors.get(context, {}).get(action_id)
        return (1.0, 1.0) if ab is None else (ab[0], ab[1])

    def probabilities(self, candidates: Sequence[str], context: str) -> list[float]:
        """The pick probability of each candidate (same order), each at least exploration / K."""
        if not candidates:
            raise BanditError("choose needs at least one candidate action")
        key = tuple(candidates)
        if len(set(key)) != len(key):
            raise BanditError(f"candidate actions must be distinct, got {list(key)}")
        seen = self.outcomes.get(context, 0)
        cached = self._vectors.get(context, {}).get(key)
        if cached is not None and seen - cached[0] < max(1, math.ceil(REFRESH_SHARE * seen)):
            return cached[1]
        k = len(key)
        if k == 1:
            probs = [1.0]
        else:
            params = [self.posterior(context, a) for a in key]
            wins = self._thompson_wins(context, key, params)
            floor = self.exploration / k
            probs = [(1.0 - self.exploration) * w + floor for w in wins]
            total = math.fsum(probs)
            probs = [p / total for p in probs]
        self._vectors.setdefault(context, {})[key] = (seen, probs)
        return probs

    def _thompson_wins(self, context: str, key: tuple[str, ...],
                       params: list[tuple[float, float]]) -> list[float]:
        # Seeded by the state itself (repr of floats is exact and portable), never by a clock.
        material = repr((context, key, params)).encode()
        seed = int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "big")
        rng = np.random.Generator(np.random.PCG64(seed))
        alphas = np.array([a for a, _ in params])
        betas = np.array([b for _, b in params])
        draws = rng.beta(alphas, betas, size=(self.mc_draws, len(key)))
        counts = np.bincount(draws.argmax(axis=1), minlength=len(key))
        return [float(c) / self.mc_draws for c in counts]

    def choose(self, candidates: Sequence[str], context: str, seed: bytes) -> Pick:
        """One of ``candidates``, a deterministic function of this state and ``seed``."""
        probs = self.probabilities(candidates, context)
        index = draw_index(probs, seed, "thompson")
        action = candidates[index]
        alpha, beta = self.posterior(context, action)
        seen = alpha + beta - 2.0
        reason = (f"bandit ({POLICY}) in context {context}: {action} has a posterior "
                  f"success rate of {alpha / (alpha + beta):.3f} over {seen:.0f} outcomes; "
                  f"picked with probability {probs[index]:.3f} among {len(probs)} actions")
        return Pick(action, probs[index], POLICY, (reason,))

    # -- learning ---------------------------------------------------------------------------

    def learn(self, action_id: str, context: str, reward: float) -> None:
        """Update the (context, action) posterior with a reward, clipped to [0, 1]."""
        if not math.isfinite(reward):
            raise BanditError(f"reward must be a finite number, got {reward}")
        r = min(max(float(reward), 0.0), 1.0)
        ab = self.posteriors.setdefault(context, {}).setdefault(action_id, [1.0, 1.0])
        ab[0] += r
        ab[1] += 1.0 - r
        self.updates += 1
        self.outcomes[context] = self.outcomes.get(context, 0) + 1

    def expect(self, decision_id: str, action_id: str, context: str, ts_ms: int) -> None:
        """Wait for the reward of a pick made at event time ``ts_ms``; idempotent per id, also
        for a decision replayed after it closed (the last :data:`MAX_CLOSED` are remembered)."""
        if decision_id in self._pending or decision_id in self._closed:
            return
        self._pending[decision_id] = _Pending(action_id, context, int(ts_ms))
        heapq.heappush(self._deadlines, (int(ts_ms) + self.reward_wait_ms, decision_id))
        while len(self._pending) > MAX_PENDING:
            oldest = next(iter(self._pending))
            self._close(oldest, 0.0)
            self.expired += 1

    def reward(self, decision_id: str, reward: float) -> bool:
        """Learn the reward of an expected decision and close it; False when not expected
        (unknown, already rewarded, or already closed as zero after the wait)."""
        if decision_id not in self._pending:
            return False
        self._close(decision_id, reward)
        return True

    def advance(self, watermark_ms: int) -> int:
        """Close, as zero rewards, the expectations whose wait ended by event time
        ``watermark_ms``; return how many."""
        closed = 0
        while self._deadlines and self._deadlines[0][0] <= watermark_ms:
            _, decision_id = heapq.heappop(self._deadlines)
            if decision_id in self._pending:
                self._close(decision_id, 0.0)
                closed += 1
        self.expired += closed
        return closed

    def _close(self, decision_id: str, reward: float) -> None:
        pending = self._pending.pop(decision_id)
        self.learn(pending.action_id, pending.context, reward)
        self._closed[decision_id] = None
        if len(self._closed) > MAX_CLOSED:
            del self._closed[next(iter(self._closed))]

    @property
    def pending(self) -> int:
        """Expectations still open."""
        return len(self._pending)

    # -- state and snapshots ----------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything learnt, as plain data (posteriors, counters, open expectations)."""
        return {
            "format": STATE_FORMAT, "policy": POLICY, "exploration": self.exploration,
            "reward_wait_ms": self.reward_wait_ms, "mc_draws": self.mc_draws,
            "updates": self.updates, "expired": self.expired,
            "posteriors": {c: {a: list(ab) for a, ab in arms.items()}
                           for c, arms in self.posteriors.items()},
            "pending": [[d, p.action_id, p.context, p.ts_ms] for d, p in self._pending.items()],
            "closed": list(self._closed),
            "outcomes": dict(self.outcomes),
            "vectors": [[c, list(key), at, list(probs)] for c, by_key in self._vectors.items()
                        for key, (at, probs) in by_key.items()],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], exploration: float | None = None,
                   reward_wait_ms: int | None = None) -> ThompsonChooser:
        """A chooser from :meth:`to_state`; settings given here win over the stored ones."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise BanditError(f"not a bandit state of format {STATE_FORMAT}")
        chooser = cls(exploration if exploration is not None else state["exploration"],
                      reward_wait_ms if reward_wait_ms is not None else state["reward_wait_ms"],
                      state["mc_draws"])
        chooser.posteriors = {str(c): {str(a): [float(ab[0]), float(ab[1])]
                                       for a, ab in arms.items()}
                              for c, arms in state["posteriors"].items()}
        chooser.updates = int(state["updates"])
        chooser.expired = int(state["expired"])
        chooser._closed = dict.fromkeys(str(d) for d in state["closed"])
        chooser.outcomes = {str(c): int(n) for c, n in state["outcomes"].items()}
        for context, key, at, probs in state["vectors"]:
            chooser._vectors.setdefault(str(context), {})[tuple(map(str, key))] = (
                int(at), [float(p) for p in probs])
        for decision_id, action_id, context, ts_ms in state["pending"]:
            chooser.expect(str(decision_id), str(action_id), str(context), int(ts_ms))
        return chooser

    def serving_copy(self) -> ThompsonChooser:
        """What a worker needs to choose: the posteriors, the outcome counts, the kept vectors
        and the settings; not the open expectations nor the closed ids (the learner's)."""
        state = self.to_state()
        state["pending"], state["closed"] = [], []
        return ThompsonChooser.from_state(state)

    def take_over(self, other: ThompsonChooser) -> None:
        """Adopt ``other``'s state and settings in place, for holders of this object."""
        vars(self).update(vars(other))

    def snapshot(self, secret: bytes, created_ms: int | None = None) -> bytes:
        """The state, signed with ``secret`` (``STREAMPROC_MODEL_SECRET``)."""
        return dump(self.to_state(), secret, version=self.updates, created_ms=created_ms)

    @classmethod
    def restore(cls, blob: bytes, secret: bytes, exploration: float | None = None,
                reward_wait_ms: int | None = None) -> ThompsonChooser:
        """The chooser of a snapshot; SnapshotError when its signature or content is bad."""
        _, state = load(blob, secret)
        try:
            return cls.from_state(state, exploration, reward_wait_ms)
        except (BanditError, KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"the bandit snapshot is signed but not a bandit state: "
                                f"{exc}") from exc

    def summary(self) -> dict[str, Any]:
        """Figures for people: per context, each action's outcomes and posterior mean."""
        return {
            "policy": POLICY, "updates": self.updates, "expired": self.expired,
            "pending": self.pending, "exploration": self.exploration,
            "contexts": {c: {a: {"outcomes": round(ab[0] + ab[1] - 2.0, 3),
                                 "mean": round(ab[0] / (ab[0] + ab[1]), 4)}
                             for a, ab in sorted(arms.items())}
                         for c, arms in sorted(self.posteriors.items())},
        }

