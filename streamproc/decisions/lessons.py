"""The one bandit, on the learner's side: every worker's lessons, each learnt once.

The workers pick with a served copy of the bandit and learn nothing themselves: the engine's
lessons (:class:`~streamproc.decisions.engine.Lesson`: ``expect`` when a learning pick is made,
``reward`` when feedback rewards one) travel as observations on the learning topic
(:func:`streamproc.learning.observations.lesson_record`), through the customer's outbox, to the one
learner (:mod:`streamproc.learning.learner`), which applies them here to its
:class:`~streamproc.decisions.bandit.ThompsonChooser`, closes the expectations whose wait ended
as zero rewards with its event-time watermark (:meth:`BanditLearner.advance`) and publishes a
serving copy in its snapshots.

**Once each.** A redelivered batch publishes its lessons again: a second lesson of one kind for
one decision is dropped (``duplicates``). Each decision counts once: the reward reported for it
within ``STREAMPROC_BANDIT_REWARD_WAIT_MINUTES`` of event time after it, else a zero.

**In any order.** A decision's reward can reach the learner before its ``expect`` (a worker
published the decision, then died before its learning record went out; the redelivered batch
publishes the ``expect`` later). A reward carries the decision's action, context and event
time, so it is learnt at once (``early``) and the ``expect`` that follows is dropped. A reward
that comes after its decision was closed as zero, or whose wait is over by the watermark, is not
learnt (``late``; when its ``expect`` was never seen, the zero is learnt then).

**Two policies, one stream of lessons.** The contextual policy
(:class:`~streamproc.decisions.contextual.ContextualChooser`) learns from the same lessons: an
``expect`` that carries its features waits there too, and its reward (or its zero) teaches both.

**Revenue, scaled robustly.** A slot whose reward is revenue sends the conversion's amount
(``revenue``); :class:`RevenueScale` caps it at the 95th percentile of the slot's last
:data:`REVENUE_WINDOW` amounts and divides by that cap, so the reward is in [0, 1] and one huge
order counts like a large one, not like a hundred.

**Bounded.** The ids seen are kept until the watermark is two waits past their decision (a
lesson older than that is dropped as ``too_late``: no copy could be told from a first sight),
and at most :data:`MAX_SEEN` of them.

>>> from streamproc.decisions.engine import Lesson
>>> bandit = BanditLearner(ThompsonChooser(reward_wait_ms=60_000))
>>> bandit.apply(Lesson("expect", "d1", "cart_reminder", "drawer:new", 0), watermark=None)
>>> bandit.apply(Lesson("expect", "d1", "cart_reminder", "drawer:new", 0), watermark=None)
>>> bandit.apply(Lesson("reward", "d1", "cart_reminder", "drawer:new", 0, 1.0), watermark=None)
>>> bandit.chooser.posterior("drawer:new", "cart_reminder"), bandit.duplicates
((2.0, 1.0), 1)
"""

from __future__ import annotations

from collections import deque

import numpy as np

from streamproc.decisions.bandit import ThompsonChooser
from streamproc.decisions.contextual import ContextualChooser
from streamproc.decisions.engine import Lesson

MAX_SEEN = 400_000  # (kind, decision) pairs remembered: twice the chooser's open expectations
REVENUE_WINDOW = 1000  # a slot's last amounts, whose 95th percentile caps the next
REVENUE_QUANTILE = 95.0


class RevenueScale:
    """Revenue to a reward in [0, 1]: capped at the 95th percentile of the slot's recent amounts
    (this one included), divided by that cap.

    >>> scale = RevenueScale()
    >>> [round(scale.reward("email", r), 2) for r in (50.0, 100.0, 50.0)]
    [1.0, 1.0, 0.53]
    >>> for _ in range(100):
    ...     _ = scale.reward("email", 100.0)
    >>> scale.reward("email", 10_000.0), scale.reward("email", 0.0)
    (1.0, 0.0)
    """

    def __init__(self) -> None:
        self.recent: dict[str, deque[float]] = {}

    def reward(self, slot: str, revenue: float) -> float:
        if revenue <= 0:
            return 0.0
        amounts = self.recent.setdefault(slot, deque(maxlen=REVENUE_WINDOW))
        amounts.append(revenue)
        cap = float(np.percentile(np.fromiter(amounts, float), REVENUE_QUANTILE))
        return min(revenue, cap) / cap


class BanditLearner:
    """The learner's bandit: lessons in, once each; see the module docstring."""

    def __init__(self, chooser: ThompsonChooser,
                 contextual: ContextualChooser | None = None) -> None:
        self.chooser = chooser
        self.contextual = contextual or ContextualChooser(chooser.exploration,
                                                          reward_wait_ms=chooser.reward_wait_ms)
        self.revenue = RevenueScale()
        # "kind:decision id" -> the decision's event time, in arrival order.
        self.seen: dict[str, int] = {}
        self.expects = 0  # expectations opened
        self.rewards = 0  # rewards learnt (early ones included)
        self.early = 0  # rewards learnt before their decision's expect arrived
        self.late = 0  # rewards after their decision closed, or after its wait
        self.duplicates = 0
        self.too_late = 0

    def apply(self, lesson: Lesson, watermark: int | None) -> None:
        """One lesson, with the learner's event-time watermark (None before it has one)."""
        key = f"{lesson.kind}:{lesson.decision_id}"
        if key in self.seen:
            self.duplicates += 1
            return
        wait = self.chooser.reward_wait_ms
        if watermark is not None and lesson.ts_ms + 2 * wait < watermark:
            self.too_late += 1
            return
        self.seen[key] = lesson.ts_ms
        if len(self.seen) > MAX_SEEN:
            del self.seen[next(iter(self.seen))]
        chooser = self.chooser
        if lesson.kind == "expect":
            if f"reward:{lesson.decision_id}" not in self.seen:
                chooser.expect(lesson.decision_id, lesson.action_id, lesson.context,
                               lesson.ts_ms)
                if lesson.features is not None:
                    self.contextual.expect(lesson.decision_id, lesson.context.split(":", 1)[0],
                                           lesson.action_id, lesson.features, lesson.ts_ms)
                self.expects += 1
            return
        reward = (self.revenue.reward(lesson.context.split(":", 1)[0], lesson.reward)
                  if lesson.revenue else lesson.reward)
        self.contextual.reward(lesson.decision_id, reward)
        if chooser.reward(lesson.decision_id, reward):
            self.rewards += 1
        elif f"expect:{lesson.decision_id}" in self.seen:
            self.late += 1  # closed as zero before its reward came
        elif watermark is not None and lesson.ts_ms + wait <= watermark:
            self.late += 1  # its wait is over and its expect was never seen: the zero it is
            chooser.learn(lesson.action_id, lesson.context, 0.0)
        else:
            self.early += 1
            self.rewards += 1
            chooser.learn(lesson.action_id, lesson.context, reward)

    def advance(self, watermark: int | None) -> int:
        """Close, as zero rewards, the expectations whose wait ended by ``watermark``, and forget
        the ids two waits old; returns how many closed."""
        if watermark is None:
            return 0
        horizon = watermark - 2 * self.chooser.reward_wait_ms
        seen = self.seen
        while seen:
            key = next(iter(seen))
            if seen[key] >= horizon:
                break  # arrival order is nearly event-time order: the rest goes later
            del seen[key]
        self.contextual.advance(watermark)
        return self.chooser.advance(watermark)

    def stats(self) -> dict[str, int]:
        chooser = self.chooser
        return {"bandit_outcomes": chooser.updates, "bandit_expects": self.expects,
                "bandit_rewards": self.rewards, "bandit_expired": chooser.expired,
                "bandit_pending": chooser.pending, "bandit_early": self.early,
                "bandit_late": self.late, "bandit_duplicates": self.duplicates,
                "bandit_too_late": self.too_late,
                "contextual_outcomes": self.contextual.updates,
                "contextual_pending": self.contextual.pending}
