"""A contextual policy: LinUCB per (slot, action) over the customer's and the moment's features.

The bucketed bandit (:mod:`.bandit`) gives two customers of one segment the same odds. This
chooser scores each candidate from a feature vector ``x`` of the customer and the moment
(:func:`context_features`: purchase intent and its tier, behaviour cluster, value tier, recency
of the last order, basket, device, local hour and weekday, engagement with messages, and the
weather and temperature of a fresh ``context_update``: the customer's own or their region's),
with one ridge regression per (slot, action) ("disjoint" LinUCB, Li et al. 2010):

    score(a) = theta_a . x + alpha * sqrt(x' A_a^-1 x),   theta_a = A_a^-1 b_a

where ``A_a = I + sum x x'`` and ``b_a = sum r x`` over the outcomes learnt for the action in
that slot (``A_a^-1`` is kept directly, updated by Sherman-Morrison: no inversion per pick).

**Exact propensities.** The policy is a probability vector, ``P(a) = (1 - eps) [a = best] +
eps / K`` with ``best`` the highest score (the first in candidate order on a tie) and
``eps`` = ``STREAMPROC_BANDIT_EXPLORATION``: exploration is bounded to that share, every
propensity is at least ``eps / K`` (IPS needs it above 0), and the logged propensity is the
probability the policy really had. The pick is the inverse CDF of
:func:`~streamproc.decisions.chooser.unit_draw` of the decision id, so a replay picks the same.
(Linear Thompson sampling would need Monte Carlo estimates of its pick probabilities.)

**Cold start.** While any candidate has fewer than ``min_outcomes`` outcomes in the slot
(``STREAMPROC_CONTEXTUAL_MIN_OUTCOMES``), :meth:`choose` returns None and the engine asks the
bucketed bandit instead; both learn from every learning pick, so the contextual policy warms up
behind it.

**Why it chose.** A pick's reasons name the features that drove it: those whose contribution
``theta_best[i] x[i] - theta_next[i] x[i]`` most favoured the chosen action over the runner-up.

**State.** Plain numbers only (:meth:`to_state`: lists of floats, JSON-able); it travels in the
learner's signed snapshot as that state, never as an object of its own. The state names its
feature set; a state of an older set (:data:`FEATURE_SETS`, one a subset of the current) is
embedded exactly: a feature it did not have was 0 in every outcome it learnt, so its row and
column of ``A`` are the identity's and its weight 0 (:func:`embed`). A lesson's vector of an
older set (a worker not yet upgraded) is embedded the same way.

>>> chooser = ContextualChooser(exploration=0.1, min_outcomes=5)
>>> mobile = context_features({"device": "mobile"}, 0)
>>> desktop = context_features({"device": "desktop"}, 0)
>>> for _ in range(20):
...     chooser.learn("hero", "app_offer", mobile, 1.0)
...     chooser.learn("hero", "app_offer", desktop, 0.0)
...     chooser.learn("hero", "web_offer", mobile, 0.0)
...     chooser.learn("hero", "web_offer", desktop, 1.0)
>>> pick = chooser.choose(["app_offer", "web_offer"], "hero", mobile, b"d1")
>>> pick.action_id, round(pick.propensity, 2), pick.policy
('app_offer', 0.95, 'linucb-v1')
>>> chooser.choose(["app_offer", "web_offer"], "hero", desktop, b"d1").action_id
'web_offer'
>>> "device_mobile" in pick.reasons[0]
True
>>> chooser.choose(["app_offer", "new_offer"], "hero", mobile, b"d1") is None  # cold
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from streamproc.days import local_time
from streamproc.decisions.bandit import BanditError
from streamproc.decisions.chooser import Pick, draw_index
from streamproc.segments.intent_tier import SEGMENTS as INTENT_TIERS
from streamproc.segments.tiers import SEGMENTS as VALUE_TIERS
from streamproc.settings import Settings

POLICY = "linucb-v1"
STATE_FORMAT = 1
DEFAULT_ALPHA = 0.1
DEFAULT_MIN_OUTCOMES = 30
MAX_PENDING = 200_000  # open expectations kept with their features; beyond, the oldest go
CLUSTERS = 8  # cluster ids "0" to "7" get a feature each (more are folded in by id % 8)
DEVICES = ("desktop", "mobile", "tablet")
# Local day parts: [start hour, end hour).
DAY_PARTS = (("night", 0, 6), ("morning", 6, 11), ("lunch", 11, 14), ("afternoon", 14, 18),
             ("evening", 18, 24))
DAY_MS = 86_400_000
BASKET_SCALE = math.log1p(500.0)  # a basket of 500 scores 1
# The weather of a context_update, as features: wet (rain, snow, storm) or fair (clear, heat),
# and the temperature in three buckets (cold below 10 °C, warm from 22 °C). A report older than
# WEATHER_FRESH_MS at the event is no longer the moment's weather: none of them then.
WET, FAIR = frozenset({"rain", "snow", "storm"}), frozenset({"clear", "heat"})
TEMPERATURES = (("cold", -math.inf, 10.0), ("mild", 10.0, 22.0), ("warm", 22.0, math.inf))
WEATHER_FRESH_MS = 6 * 3_600_000

# Every feature set a state or a lesson may carry, oldest first; the last is the current one.
FEATURE_SETS: tuple[tuple[str, ...], ...] = (
    (
        "bias", "intent",
        *(f"intent_{t}" for t in INTENT_TIERS),
        *(f"cluster_{i}" for i in range(CLUSTERS)),
        *(f"value_{t}" for t in VALUE_TIERS),
        "recency", "basket", "basket_items",
        *(f"device_{d}" for d in DEVICES),
        *(f"hour_{name}" for name, _, _ in DAY_PARTS),
        "weekend", "engagement",
    ),
)
FEATURE_SETS += ((*FEATURE_SETS[0], "weather_wet", "weather_fair",
                  *(f"temp_{name}" for name, _, _ in TEMPERATURES)),)
FEATURE_NAMES: tuple[str, ...] = FEATURE_SETS[-1]
INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}
DIMENSIONS = len(FEATURE_NAMES)
# The features a context_update drives, for reasons that say where the weather came from.
WEATHER_FEATURES = frozenset(name for name in FEATURE_NAMES
                             if name.startswith(("weather_", "temp_")))


def context_features(p: Mapping[str, Any], ts_ms: int) -> dict[str, float]:
    """The features of a customer (profile ``p``) at event time ``ts_ms``, all in [0, 1]; only
    the non-zero ones (``bias`` always).

    >>> p = {"scores": {"intent": 0.8}, "segments": {"intent": "hot", "cluster": "2"},
    ...      "cart": {"value": 40.0, "items": {"p1": {}}}, "device": "mobile"}
    >>> x = context_features(p, 12 * 3_600_000)  # 1 January 1970, a Thursday, at noon UTC
    >>> " ".join(sorted(x))
    'basket basket_items bias cluster_2 device_mobile hour_lunch intent intent_hot'
    """
    x: dict[str, float] = {"bias": 1.0}
    intent = (p.get("scores") or {}).get("intent")
    if isinstance(intent, int | float) and intent > 0:
        x["intent"] = min(float(intent), 1.0)
    segments = p.get("segments") or {}
    tier = segments.get("intent")
    if tier in INTENT_TIERS:
        x[f"intent_{tier}"] = 1.0
    cluster = segments.get("cluster")
    if isinstance(cluster, str) and cluster.isdigit():
        x[f"cluster_{int(cluster) % CLUSTERS}"] = 1.0
    value = segments.get("value_tier")
    if value in VALUE_TIERS:
        x[f"value_{value}"] = 1.0
    last = (p.get("purchases") or {}).get("last_ms")
    if isinstance(last, int | float):
        x["recency"] = math.exp(-max(0.0, ts_ms - last) / (30 * DAY_MS))
    cart = p.get("cart") or {}
    basket = cart.get("value") or 0.0
    if basket > 0:
        x["basket"] = min(math.log1p(float(basket)) / BASKET_SCALE, 1.0)
        x["basket_items"] = min(len(cart.get("items") or ()), 5) / 5
    device = p.get("device")
    if device in DEVICES:
        x[f"device_{device}"] = 1.0
    now = local_time(p, ts_ms)
    hour = now.minute // 60
    x[next(f"hour_{name}" for name, start, end in DAY_PARTS if start <= hour < end)] = 1.0
    if datetime.fromordinal(now.day).weekday() >= 5:
        x["weekend"] = 1.0
    sent = clicked = 0
    for channel in (p.get("engagement") or {}).values():
        sent += channel.get("sent", 0) + channel.get("opened", 0)
        clicked += channel.get("clicked", 0) + channel.get("converted", 0)
    if clicked:
        x["engagement"] = min(clicked / max(sent, clicked), 1.0)
    x.update(weather_features(p.get("surroundings"), ts_ms))
    return x


def weather_features(around: Mapping[str, Any] | None, ts_ms: int) -> dict[str, float]:
    """The weather features of surroundings (``surroundings`` of a profile: a context_update's
    weather, temperature_c and ts_ms) at event time ``ts_ms``; none when the report is older
    than :data:`WEATHER_FRESH_MS` (or dated after the event).

    >>> weather_features({"weather": "rain", "temperature_c": 8.0, "ts_ms": 0}, 3_600_000)
    {'weather_wet': 1.0, 'temp_cold': 1.0}
    >>> weather_features({"weather": "rain", "ts_ms": 0}, 7 * 3_600_000)
    {}
    """
    if not around:
        return {}
    reported = around.get("ts_ms")
    if not isinstance(reported, int | float) or not 0 <= ts_ms - reported <= WEATHER_FRESH_MS:
        return {}
    x: dict[str, float] = {}
    weather = around.get("weather")
    if weather in WET:
        x["weather_wet"] = 1.0
    elif weather in FAIR:
        x["weather_fair"] = 1.0
    temperature = around.get("temperature_c")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        x[next(f"temp_{name}" for name, low, high in TEMPERATURES
               if low <= temperature < high)] = 1.0
    return x


def embed(values: Sequence[float] | np.ndarray, names: Sequence[str]) -> np.ndarray:
    """A vector over the feature ``names`` of an older set, as a vector of the current set
    (the features it lacks are 0); BanditError when a name is not a current feature.

    >>> v = embed([1.0, 0.5], ["bias", "intent"])
    >>> float(v[INDEX["bias"]]), float(v[INDEX["intent"]]), float(v.sum())
    (1.0, 0.5, 1.5)
    """
    if any(n not in INDEX for n in names) or len(names) != len(values):
        raise BanditError("the contextual policy state has another feature set")
    where = [INDEX[n] for n in names]
    v = np.zeros(DIMENSIONS)
    v[where] = np.asarray(values, dtype=float)
    return v


def current_vector(values: Sequence[float] | np.ndarray) -> np.ndarray | None:
    """A lesson's feature vector in the current set: as it is, embedded from the older set
    of its length, or None (a length no set has)."""
    if len(values) == DIMENSIONS:
        return np.asarray(values, dtype=float)
    older = next((names for names in FEATURE_SETS if len(names) == len(values)), None)
    return None if older is None else embed(values, older)


def as_vector(features: Mapping[str, float]) -> np.ndarray:
    """The dense vector of a feature dict (names not in :data:`FEATURE_NAMES` are ignored)."""
    v = np.zeros(DIMENSIONS)
    for name, value in features.items():
        i = INDEX.get(name)
        if i is not None:
            v[i] = float(value)
    return v


class _Arm:
    __slots__ = ("a_inv", "b", "n")

    def __init__(self) -> None:
        self.a_inv = np.eye(DIMENSIONS)
        self.b = np.zeros(DIMENSIONS)
        self.n = 0

    def theta(self) -> np.ndarray:
        return np.asarray(self.a_inv @ self.b)


class ContextualChooser:
    """LinUCB per (slot, action) with epsilon exploration and exact propensities (see the module
    docstring). Learns with :meth:`learn`, or :meth:`expect` then :meth:`reward` (the learner)."""

    version = POLICY
    name = "contextual"  # as a candidate policy of `streamproc evaluate`

    def __init__(self, exploration: float = 0.1, alpha: float = DEFAULT_ALPHA,
                 min_outcomes: int = DEFAULT_MIN_OUTCOMES,
                 reward_wait_ms: int = 24 * 3_600_000) -> None:
        if not 0.0 < exploration <= 1.0:
            raise BanditError(f"exploration must be in (0, 1], got {exploration}")
        if alpha < 0 or not math.isfinite(alpha):
            raise BanditError(f"alpha must be a finite number >= 0, got {alpha}")
        if min_outcomes < 0:
            raise BanditError(f"min_outcomes must be >= 0, got {min_outcomes}")
        self.exploration = exploration
        self.alpha = alpha
        self.min_outcomes = min_outcomes
        self.reward_wait_ms = reward_wait_ms
        self.arms: dict[str, _Arm] = {}  # "slot/action" -> its regression
        self.updates = 0
        self.expired = 0
        # decision id -> (slot, action, x, event time), in arrival order
        self._pending: dict[str, tuple[str, str, np.ndarray, int]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> ContextualChooser:
        return cls(settings.bandit_exploration, settings.contextual_alpha,
                   settings.contextual_min_outcomes, settings.bandit_reward_wait_minutes * 60_000)

    # -- choosing ---------------------------------------------------------------------------

    def outcomes(self, slot: str, action_id: str) -> int:
        arm = self.arms.get(f"{slot}/{action_id}")
        return 0 if arm is None else arm.n

    def cold(self, candidates: Sequence[str], slot: str) -> list[str]:
        """The candidates with fewer than ``min_outcomes`` outcomes in ``slot``."""
        return [a for a in candidates if self.outcomes(slot, a) < self.min_outcomes]

    def _scores(self, candidates: Sequence[str], slot: str,
                x: np.ndarray) -> tuple[list[float], list[float]]:
        means, bonuses = [], []
        for a in candidates:
            arm = self.arms.get(f"{slot}/{a}") or _Arm()
            means.append(float(arm.theta() @ x))
            bonuses.append(self.alpha * math.sqrt(max(float(x @ arm.a_inv @ x), 0.0)))
        return means, bonuses

    def probabilities(self, candidates: Sequence[str], slot: str,
                      features: Mapping[str, float]) -> list[float]:
        """The exact pick probability of each candidate (same order), warm or not."""
        if not candidates:
            raise BanditError("choose needs at least one candidate action")
        means, bonuses = self._scores(candidates, slot, as_vector(features))
        return self._vector(means, bonuses)

    def _vector(self, means: list[float], bonuses: list[float]) -> list[float]:
        k = len(means)
        scores = [m + u for m, u in zip(means, bonuses, strict=True)]
        best = scores.index(max(scores))
        floor = self.exploration / k
        return [floor + (1.0 - self.exploration if i == best else 0.0) for i in range(k)]

    def choose(self, candidates: Sequence[str], slot: str, features: Mapping[str, float],
               seed: bytes, weather_from: str | None = None) -> Pick | None:
        """A pick among ``candidates``, or None while one of them is cold (see the module
        docstring): a deterministic function of this state, the features and ``seed``.
        ``weather_from``: where the weather features came from (``region london``), named in
        the reasons when they drove the pick."""
        if not candidates:
            raise BanditError("choose needs at least one candidate action")
        if self.cold(candidates, slot):
            return None
        x = as_vector(features)
        means, bonuses = self._scores(candidates, slot, x)
        probs = self._vector(means, bonuses)
        index = draw_index(probs, seed, "contextual")
        action = candidates[index]
        return Pick(action, probs[index], POLICY,
                    (self._why(candidates, slot, x, means, bonuses, index, probs,
                               weather_from),))

    def _why(self, candidates: Sequence[str], slot: str, x: np.ndarray, means: list[float],
             bonuses: list[float], index: int, probs: list[float],
             weather_from: str | None = None) -> str:
        action = candidates[index]
        propensity = probs[index]
        best = probs.index(max(probs))
        if index != best:
            return (f"contextual ({POLICY}) in slot {slot}: explored {action} (expects "
                    f"{means[index]:.3f}; the best, {candidates[best]}, expects "
                    f"{means[best]:.3f}); picked with probability {propensity:.3f} among "
                    f"{len(candidates)} actions")
        theta = self.arms[f"{slot}/{action}"].theta()
        others = [i for i in range(len(candidates)) if i != index]
        if others:
            runner = max(others, key=lambda i: means[i] + bonuses[i])
            contribution = (theta - self.arms[f"{slot}/{candidates[runner]}"].theta()) * x
            against = f" against {means[runner]:.3f} for {candidates[runner]}"
        else:
            contribution, against = theta * x, ""
        drivers = [i for i in np.argsort(-contribution) if i != INDEX["bias"]
                   and x[i] != 0 and contribution[i] >= 0.0005][:3]
        named = ", ".join(f"{FEATURE_NAMES[i]}={x[i]:.2f} ({contribution[i]:+.3f}"
                          + (f", {weather_from}" if weather_from
                             and FEATURE_NAMES[i] in WEATHER_FEATURES else "") + ")"
                          for i in drivers) or "none (the actions' baselines)"
        return (f"contextual ({POLICY}) in slot {slot}: {action} expects {means[index]:.3f} "
                f"(+{bonuses[index]:.3f} for uncertainty){against}; features that drove it: "
                f"{named}; picked with probability {propensity:.3f} among "
                f"{len(candidates)} actions")

    # -- learning ---------------------------------------------------------------------------

    def learn(self, slot: str, action_id: str, features: Mapping[str, float] | np.ndarray,
              reward: float) -> None:
        """One outcome: ``reward`` (clipped to [0, 1]) of ``action_id`` in ``slot`` for ``x``."""
        if not math.isfinite(reward):
            raise BanditError(f"reward must be a finite number, got {reward}")
        x = features if isinstance(features, np.ndarray) else as_vector(features)
        r = min(max(float(reward), 0.0), 1.0)
        arm = self.arms.setdefault(f"{slot}/{action_id}", _Arm())
        ax = arm.a_inv @ x
        arm.a_inv -= np.outer(ax, ax) / (1.0 + float(x @ ax))
        arm.b += r * x
        arm.n += 1
        self.updates += 1

    def expect(self, decision_id: str, slot: str, action_id: str,
               features: Sequence[float] | np.ndarray, ts_ms: int) -> None:
        """Keep a pick's features until its reward (or its wait) comes; idempotent per id."""
        x = current_vector(features)
        if decision_id in self._pending or x is None:
            return
        self._pending[decision_id] = (slot, action_id, x, int(ts_ms))
        while len(self._pending) > MAX_PENDING:
            self._close(next(iter(self._pending)), 0.0)
            self.expired += 1

    def reward(self, decision_id: str, reward: float) -> bool:
        """Learn the reward of an expected pick; False when it was not expected."""
        if decision_id not in self._pending:
            return False
        self._close(decision_id, reward)
        return True

    def advance(self, watermark_ms: int) -> int:
        """Close as zero rewards the expectations whose wait ended by ``watermark_ms`` (in
        arrival order, which is nearly event-time order)."""
        closed = 0
        for decision_id, (_, _, _, ts_ms) in list(self._pending.items()):
            if ts_ms + self.reward_wait_ms > watermark_ms:
                break
            self._close(decision_id, 0.0)
            closed += 1
        self.expired += closed
        return closed

    def _close(self, decision_id: str, reward: float) -> None:
        slot, action_id, x, _ = self._pending.pop(decision_id)
        self.learn(slot, action_id, x, reward)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- state ------------------------------------------------------------------------------

    def to_state(self, pending: bool = True) -> dict[str, Any]:
        """Everything learnt, as plain JSON-able data (``pending=False``: what serving needs)."""
        return {
            "format": STATE_FORMAT, "policy": POLICY, "features": list(FEATURE_NAMES),
            "exploration": self.exploration, "alpha": self.alpha,
            "min_outcomes": self.min_outcomes, "reward_wait_ms": self.reward_wait_ms,
            "updates": self.updates, "expired": self.expired,
            "arms": {key: {"a_inv": arm.a_inv.tolist(), "b": arm.b.tolist(), "n": arm.n}
                     for key, arm in self.arms.items()},
            "pending": [[d, s, a, x.tolist(), ts] for d, (s, a, x, ts) in self._pending.items()]
            if pending else [],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> ContextualChooser:
        """A chooser from :meth:`to_state`; BanditError when it is not one of this feature set."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise BanditError(f"not a contextual policy state of format {STATE_FORMAT}")
        names = [str(name) for name in state.get("features") or ()]
        if not names or any(n not in INDEX for n in names) or len(set(names)) != len(names):
            raise BanditError("the contextual policy state has another feature set (names "
                              "this version does not know): it cannot be served")
        k, where = len(names), [INDEX[n] for n in names]
        chooser = cls(float(state["exploration"]), float(state["alpha"]),
                      int(state["min_outcomes"]), int(state["reward_wait_ms"]))
        chooser.updates, chooser.expired = int(state["updates"]), int(state["expired"])
        try:
            for key, arm_state in state["arms"].items():
                arm = _Arm()  # A^-1 block diagonal: the older set's block, the identity's rest
                arm.a_inv[np.ix_(where, where)] = np.asarray(arm_state["a_inv"],
                                                             dtype=float).reshape(k, k)
                arm.b = embed(np.asarray(arm_state["b"], dtype=float).reshape(k), names)
                arm.n = int(arm_state["n"])
                chooser.arms[str(key)] = arm
            for decision_id, slot, action_id, x, ts_ms in state["pending"]:
                chooser.expect(str(decision_id), str(slot), str(action_id),
                               embed(x, names), int(ts_ms))
        except (ValueError, TypeError, KeyError) as exc:
            raise BanditError(f"the contextual policy state's numbers do not fit its {k} "
                              f"features ({type(exc).__name__}: {exc})") from None
        return chooser

    # Pickled (inside the learner's signed snapshot) as its plain state, never as arrays.
    def __getstate__(self) -> dict[str, Any]:
        return self.to_state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(vars(ContextualChooser.from_state(state)))

    def take_over(self, other: ContextualChooser) -> None:
        """Adopt ``other``'s state in place, keeping this chooser's settings (a worker's)."""
        self.arms, self.updates, self.expired = other.arms, other.updates, other.expired

    def summary(self) -> dict[str, Any]:
        """Figures for people: per slot and action, the outcomes and the strongest weights."""
        out: dict[str, Any] = {"policy": POLICY, "updates": self.updates,
                               "pending": self.pending, "min_outcomes": self.min_outcomes,
                               "arms": {}}
        for key, arm in sorted(self.arms.items()):
            theta = arm.theta()
            top = np.argsort(-np.abs(theta))[:5]
            out["arms"][key] = {"outcomes": arm.n,
                                "weights": {FEATURE_NAMES[i]: round(float(theta[i]), 4)
                                            for i in top}}
        return out
