"""Off-policy evaluation: what a candidate policy would have earned, from logged decisions.

Every decision logs the propensity ``p`` of its action (the probability the logging policy had
of choosing it). For a candidate policy ``pi`` and logged samples ``(x, a, p, r)`` (context,
action, propensity, reward):

* **IPS** (inverse propensity scoring): the mean of ``pi(a|x) / p * r``. Unbiased when every
  action ``pi`` can choose had a propensity above 0 in the log; noisy when ``pi`` and the log
  disagree (see the effective sample size).
* **DR** (doubly robust): the mean of
  ``sum_b pi(b|x) q(x, b) + pi(a|x) / p * (r - q(x, a))``, where ``q(x, b)`` is a reward model:
  the mean reward of action ``b`` in context ``x`` in the log (falling back to the action's mean,
  then the overall mean). ``q`` is *cross-fitted*: decisions are split in two halves by a hash
  of their id and each half uses the ``q`` learnt on the other, so a sample never corrects its
  own prediction. Unbiased if either the propensities or ``q`` are right, and usually tighter
  than IPS.

Both come with a 95% normal-approximation interval (``mean +- 1.96 sd / sqrt(n)`` over the
per-decision terms). The **effective sample size** ``(sum w)^2 / sum w^2`` of the importance
weights ``w = pi(a|x) / p`` says how many decisions the estimate is really worth.

Which decisions are used: personalised decisions of a stochastic policy; decisions of the
control group or of the neutral policy (``personalised: false``) and forced choices (policy
``reuse``, or an empty ``candidates`` list) are left out and counted. The
candidate chooses among the same actions as the logged policy did: a record's ``candidates``
list when it has one, otherwise every action the log shows for the same slot (or channel).

Rewards: ``conversion`` (1 if the decision led to a conversion), ``click`` (1 for a click or a
conversion) or ``revenue`` (the conversions' revenue).

**Would it have done better?** Each estimate comes with the candidate's **gain** over the
logging policy on the same decisions: the mean of the paired differences ``dr_i - r_i`` (the
candidate's doubly-robust term minus the reward the logged action earned), with its interval,
and a verdict: better or worse when the interval excludes 0, else "cannot tell".

**The contextual policy** (:class:`ContextualFit`): LinUCB
(:mod:`streamproc.decisions.contextual`) learnt from the log itself, on the features each
decision logged, cross-fitted like the reward model (each half is judged by the policy learnt
on the other half), so no decision judges a policy that learnt from it; it picks greedily on
what it learnt (no uncertainty bonus: its estimates are final), plus the exploration share
(``STREAMPROC_BANDIT_EXPLORATION``) spread evenly. Decisions logged
without features are left out (counted) when it is a candidate.

>>> samples = [Sample("d1", "c", "a", 0.5, ("a", "b"), 1.0),
...            Sample("d2", "c", "b", 0.5, ("a", "b"), 0.0)]
>>> result = evaluate(samples, FixedActionPolicy("a"))
>>> result.ips.value, result.logged.value
(1.0, 0.5)
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from streamproc.decisions.contextual import ContextualChooser
from streamproc.decisions.decision_log import DecisionLog, DecisionOutcome, field_at
from streamproc.decisions.experiments import CONTROL
from streamproc.decisions.stats import Interval, mean_ci
from streamproc.errors import StreamprocError

REWARDS = ("conversion", "click", "revenue")
DEFAULT_CONTEXT = "context"
NO_CONTEXT = "all"
FORCED_POLICIES = ("reuse",)  # the engine re-showing a still-fresh action: nobody chose


class EvaluationError(StreamprocError):
    """The log cannot support the estimate asked for (no samples, missing propensities)."""


class Policy(Protocol):
    """A candidate: the probability of each candidate action in a context (summing to 1)."""

    name: str

    def probabilities(self, candidates: Sequence[str], context: str) -> list[float]: ...


class UniformPolicy:
    name = "uniform"

    def probabilities(self, candidates: Sequence[str], context: str) -> list[float]:
        return [1.0 / len(candidates)] * len(candidates)


class FixedActionPolicy:
    """Always the same action (when it is a candidate; otherwise uniform among the others)."""

    def __init__(self, action_id: str) -> None:
        self.action_id = action_id
        self.name = f"action:{action_id}"

    def probabilities(self, candidates: Sequence[str], context: str) -> list[float]:
        if self.action_id in candidates:
            return [1.0 if c == self.action_id else 0.0 for c in candidates]
        return [1.0 / len(candidates)] * len(candidates)


@dataclass(frozen=True)
class Sample:
    decision_id: str
    context: str
    action: str
    propensity: float
    candidates: tuple[str, ...]
    reward: float
    slot: str = ""
    features: Mapping[str, float] | None = None  # the context features the decision logged


@runtime_checkable
class SamplePolicy(Protocol):
    """A candidate that needs the whole sample (its slot and features), not only the context."""

    name: str

    def probabilities_for(self, sample: Sample) -> list[float]: ...


@dataclass
class Evaluation:
    candidate: str
    reward: str
    n: int
    logged: Interval  # the logging policy's own mean reward
    ips: Interval
    dr: Interval
    effective_sample_size: float
    excluded: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    gain: Interval | None = None  # DR minus the logged reward, per decision (paired)

    @property
    def verdict(self) -> str:
        """Whether the candidate would have done better than the logged policy."""
        if self.gain is None or math.isnan(self.gain.low):
            return "cannot tell"
        if self.gain.low > 0:
            return "better"
        if self.gain.high < 0:
            return "worse"
        return "cannot tell (the interval of the gain includes 0)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate, "reward": self.reward, "decisions": self.n,
            "logged_policy": self.logged.as_dict(), "ips": self.ips.as_dict(),
            "dr": self.dr.as_dict(),
            "effective_sample_size": round(self.effective_sample_size, 1),
            "gain_over_logged": None if self.gain is None else self.gain.as_dict(),
            "verdict": self.verdict, "excluded": self.excluded, "notes": self.notes,
        }

    def render(self) -> str:
        def line(label: str, iv: Interval) -> str:
            return f"  {label:<26} {iv.value:10.4f}   95% CI [{iv.low:.4f}, {iv.high:.4f}]"

        lines = [
            f"candidate policy {self.candidate}, reward {self.reward}, {self.n:,} logged "
            "decisions",
            line("logged policy (observed)", self.logged),
            line("IPS estimate", self.ips),
            line("doubly robust estimate", self.dr),
            f"  effective sample size      {self.effective_sample_size:10.1f}",
        ]
        if self.gain is not None:
            lines += [line("gain over logged (DR)", self.gain),
                      f"  would it have done better? {self.verdict}"]
        lines += [f"  left out: {n:,} {why}" for why, n in sorted(self.excluded.items())]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def reward_value(outcome: DecisionOutcome, reward: str) -> float:
    if reward == "conversion":
        return 1.0 if outcome.converted else 0.0
    if reward == "click":
        return 1.0 if outcome.clicked else 0.0
    if reward == "revenue":
        return outcome.revenue
    raise EvaluationError(f"unknown reward {reward!r}: use one of {', '.join(REWARDS)}")


def _where(record: dict[str, Any]) -> str:
    return str(record.get("slot") or record.get("channel") or "")


def samples_from_log(log: DecisionLog, reward: str = "conversion",
                     context: str = DEFAULT_CONTEXT, experiment: str | None = None,
                     arm: str | None = None,
                     features: bool = False) -> tuple[list[Sample], dict[str, int]]:
    """The usable samples of a log and what was left out (reason -> count).

    ``context`` is a dotted path into the record giving the context key (``context``,
    ``segments.rfm``, ...); records without it share the context ``"all"``. Raises
    EvaluationError when a decision that should be used has no usable propensity.
    ``features``: leave out the decisions that logged no context features.
    """
    reward_value(DecisionOutcome(), reward)  # reject an unknown reward before reading anything
    excluded: dict[str, int] = defaultdict(int)
    kept: list[dict[str, Any]] = []
    for record in log.decisions:
        exp = record.get("experiment") if isinstance(record.get("experiment"), dict) else None
        if experiment is not None and (exp is None or exp.get("id") != experiment):
            excluded["decisions of other experiments"] += 1
        elif arm is not None and (exp is None or exp.get("arm") != arm):
            excluded["decisions of other arms"] += 1
        elif (exp is not None and exp.get("arm") == CONTROL) or record.get("policy") == "neutral":
            excluded["control-group or neutral-policy decisions"] += 1
        elif record.get("policy") in FORCED_POLICIES or record.get("candidates") == []:
            excluded["forced choices (re-use of a fresh action, nothing to choose among)"] += 1
        elif record.get("personalised") is False:
            excluded["non-personalised decisions (no consent, missing data)"] += 1
        elif not isinstance(field_at(record, "action.id"), str):
            excluded["decisions without an action id"] += 1
        elif features and not isinstance(record.get("features"), dict):
            excluded["decisions without context features (logged before the contextual "
                     "policy, or by a policy that does not learn)"] += 1
        else:
            kept.append(record)
    bad = [(r["decision_id"], r.get("propensity")) for r in kept
           if not isinstance(r.get("propensity"), int | float)
           or isinstance(r.get("propensity"), bool)
           or not 0.0 < float(r["propensity"]) <= 1.0]
    if bad:
        shown = ", ".join(f"{d} ({'missing' if p is None else repr(p)})" for d, p in bad[:3])
        raise EvaluationError(
            f"{len(bad):,} of {len(kept):,} decisions have no usable propensity (it must be in "
            f"(0, 1]), e.g. {shown}. IPS and doubly-robust estimates need the probability the "
            "logging policy had of each logged action: restrict the log to decisions of a "
            "stochastic policy (--experiment/--arm), or fix the policy that wrote them"
        )
    actions_at: dict[str, dict[str, None]] = defaultdict(dict)
    for record in kept:
        actions_at[_where(record)][record["action"]["id"]] = None
    samples = []
    for record in kept:
        action = record["action"]["id"]
        listed = record.get("candidates")
        if isinstance(listed, list) and action in listed and all(isinstance(c, str)
                                                                  for c in listed):
            candidates = tuple(dict.fromkeys(listed))
        else:
            candidates = tuple(sorted(actions_at[_where(record)]))
        key = field_at(record, context)
        samples.append(Sample(
            record["decision_id"], NO_CONTEXT if key is None else str(key), action,
            float(record["propensity"]), candidates,
            reward_value(log.outcome(record["decision_id"]), reward), _where(record),
            record.get("features") if isinstance(record.get("features"), dict) else None,
        ))
    return samples, dict(excluded)


def _fold(decision_id: str) -> int:
    return hashlib.blake2b(decision_id.encode(), digest_size=1).digest()[0] & 1


class _RewardModel:
    """Mean reward per (context, action), then per action, then overall."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.by_pair: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.by_action: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        total = 0.0
        for s in samples:
            for acc in (self.by_pair[(s.context, s.action)], self.by_action[s.action]):
                acc[0] += s.reward
                acc[1] += 1
            total += s.reward
        self.overall = total / len(samples) if samples else 0.0

    def predict(self, context: str, action: str) -> float:
        for acc in (self.by_pair.get((context, action)), self.by_action.get(action)):
            if acc is not None and acc[1] > 0:
                return acc[0] / acc[1]
        return self.overall


def evaluate(samples: Sequence[Sample], policy: Policy | SamplePolicy, reward: str = "conversion",
             excluded: dict[str, int] | None = None) -> Evaluation:
    """IPS and doubly-robust estimates of ``policy``'s mean reward per decision."""
    if not samples:
        raise EvaluationError("no logged decisions to evaluate: the log is empty, or every "
                              "decision was left out (see --experiment/--arm)")
    folds = [[s for s in samples if _fold(s.decision_id) == f] for f in (0, 1)]
    # Each half is predicted by the model of the other half (or of all, if one half is empty).
    models = [_RewardModel(folds[1] or samples), _RewardModel(folds[0] or samples)]
    ips_terms: list[float] = []
    dr_terms: list[float] = []
    weights: list[float] = []
    if isinstance(policy, ContextualFit):
        policy.fit(samples)
    for s in samples:
        probs = (policy.probabilities_for(s) if isinstance(policy, SamplePolicy)
                 else policy.probabilities(s.candidates, s.context))
        pi = probs[s.candidates.index(s.action)] if s.action in s.candidates else 0.0
        w = pi / s.propensity
        q = models[_fold(s.decision_id)]
        direct = math.fsum(p * q.predict(s.context, b) for b, p in zip(s.candidates, probs,
                                                                       strict=True))
        ips_terms.append(w * s.reward)
        dr_terms.append(direct + w * (s.reward - q.predict(s.context, s.action)))
        weights.append(w)
    squares = math.fsum(w * w for w in weights)
    ess = math.fsum(weights) ** 2 / squares if squares > 0 else 0.0
    notes = []
    if ess < 0.1 * len(samples):
        notes.append(f"the candidate rarely agrees with the logged policy (effective sample "
                     f"size {ess:.0f} of {len(samples):,}): the IPS interval is wide; trust DR "
                     "more, or log more decisions with exploration")
    gain = mean_ci([d - s.reward for d, s in zip(dr_terms, samples, strict=True)])
    return Evaluation(policy.name, reward, len(samples), mean_ci([s.reward for s in samples]),
                      mean_ci(ips_terms), mean_ci(dr_terms), ess, dict(excluded or {}), notes,
                      gain)


class ContextualFit:
    """The contextual policy learnt from the log, cross-fitted (see the module docstring).

    >>> xs = [{"bias": 1.0, "device_mobile": 1.0}, {"bias": 1.0, "device_desktop": 1.0}]
    >>> samples = [Sample(f"d{i}", "all", a, 0.5, ("app", "web"),
    ...                   float((a == "app") == (i % 2 == 0)), "hero", xs[i % 2])
    ...            for i in range(200) for a in ("app", "web")]
    >>> result = evaluate(samples, ContextualFit(exploration=0.1))
    >>> round(result.logged.value, 2), round(result.dr.value, 2), result.verdict
    (0.5, 0.95, 'better')
    """

    name = "contextual"

    def __init__(self, exploration: float = 0.1, alpha: float = 0.0) -> None:
        self.exploration = exploration
        self.alpha = alpha
        self.models: list[ContextualChooser] = []

    def fit(self, samples: Sequence[Sample]) -> None:
        """One model per half of the decisions (by :func:`_fold`), each learnt on that half;
        rewards capped at their 95th percentile and scaled to [0, 1] (revenue)."""
        self.models = []
        for fold in (0, 1):
            train = [s for s in samples if _fold(s.decision_id) == fold and s.features]
            positive = [s.reward for s in train if s.reward > 0]
            cap = float(np.percentile(positive, 95)) if positive else 1.0
            model = ContextualChooser(self.exploration, self.alpha, min_outcomes=0)
            for s in train:
                model.learn(s.slot, s.action, s.features or {}, min(s.reward, cap) / cap)
            self.models.append(model)

    def probabilities_for(self, sample: Sample) -> list[float]:
        if not self.models:
            raise EvaluationError("the contextual policy is fitted by evaluate(): call it")
        model = self.models[1 - _fold(sample.decision_id)]  # learnt on the other half
        return model.probabilities(sample.candidates, sample.slot, sample.features or {})
