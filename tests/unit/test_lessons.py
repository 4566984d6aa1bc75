"""The one bandit on the learner's side: every worker's lessons, each learnt once, in any order."""

from __future__ import annotations

from streamproc.decisions.bandit import ThompsonChooser
from streamproc.decisions.engine import Lesson
from streamproc.decisions.lessons import BanditLearner

MIN = 60_000
WAIT = 30 * MIN


def expect(did: str, ts: int, action: str = "a") -> Lesson:
    return Lesson("expect", did, action, "ctx", ts)


def reward(did: str, ts: int, r: float = 1.0, action: str = "a") -> Lesson:
    return Lesson("reward", did, action, "ctx", ts, r)


def bandit() -> BanditLearner:
    return BanditLearner(ThompsonChooser(reward_wait_ms=WAIT))


def test_copies_of_a_lesson_are_learnt_once() -> None:
    b = bandit()
    for lesson in [expect("d1", 0), expect("d1", 0), reward("d1", 0), expect("d1", 0),
                   reward("d1", 0, 0.0), reward("d1", 0)]:
        b.apply(lesson, watermark=MIN)
    assert b.chooser.posterior("ctx", "a") == (2.0, 1.0)
    assert (b.expects, b.rewards, b.duplicates, b.chooser.updates) == (1, 1, 4, 1)
    assert b.advance(10 * WAIT) == 0  # rewarded: nothing left to close


def test_a_decision_without_reward_closes_as_zero_once_the_watermark_passes_its_wait() -> None:
    b = bandit()
    b.apply(expect("d1", 0), watermark=0)
    b.apply(expect("d2", 10 * MIN), watermark=0)
    assert b.advance(WAIT - 1) == 0 and b.chooser.pending == 2
    assert b.advance(WAIT) == 1
    assert b.chooser.posterior("ctx", "a") == (1.0, 2.0)
    # Its reward, after the wait: not learnt (the decision counted once, as a zero).
    b.apply(reward("d1", 0), watermark=WAIT)
    assert b.late == 1 and b.chooser.updates == 1
    b.apply(reward("d2", 10 * MIN), watermark=WAIT)  # within its wait
    assert b.chooser.posterior("ctx", "a") == (2.0, 2.0) and b.rewards == 1


def test_a_reward_before_its_expect_is_learnt_once() -> None:
    b = bandit()
    b.apply(reward("d1", 0, 1.0, action="b"), watermark=MIN)  # the expect is still on its way
    assert b.early == 1 and b.chooser.posterior("ctx", "b") == (2.0, 1.0)
    b.apply(expect("d1", 0, action="b"), watermark=2 * MIN)
    assert b.chooser.pending == 0 and b.advance(10 * WAIT) == 0
    assert b.chooser.updates == 1
    # A reward whose wait is over and whose expect never came counts as the zero it would be;
    # its expect, if it comes, is not learnt again.
    b.apply(reward("d2", 0, 1.0), watermark=WAIT)
    b.apply(expect("d2", 0), watermark=WAIT)
    assert b.chooser.posterior("ctx", "a") == (1.0, 2.0) and b.late == 1
    assert b.chooser.pending == 0


def test_lessons_two_waits_old_are_dropped_and_their_ids_forgotten() -> None:
    b = bandit()
    b.apply(expect("d1", 0), watermark=0)
    b.apply(reward("d1", 0), watermark=0)
    assert len(b.seen) == 2
    b.advance(2 * WAIT + 1)
    assert b.seen == {}
    b.apply(expect("d1", 0), watermark=2 * WAIT + 1)  # a copy that old cannot be told apart
    assert b.too_late == 1 and b.chooser.pending == 0 and b.chooser.updates == 1
