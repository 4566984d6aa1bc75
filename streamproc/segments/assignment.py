"""What a segmentation decides for one customer, and how a membership changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Assignment(NamedTuple):
    """The segment a customer is in, and a short sentence saying why."""

    segment: str
    reason: str


class Deferred(NamedTuple):
    """A segment whose reason is built only when read: the segmenter publishes a reason only
    for a move, and most events move nothing (formatting every reason was a tenth of the
    segmentation's time)."""

    segment: str
    explain: Callable[[], str]
    # The first event time from which the segment may change by time alone, its other inputs
    # unchanged (None: never): the segmenter skips the segmentation until then.
    until_ms: int | None = None

    @property
    def reason(self) -> str:
        return self.explain()

    def assignment(self) -> Assignment:
        return Assignment(self.segment, self.explain())


class Transition(NamedTuple):
    """A customer moved in one segmentation; ``from_`` is None the first time, ``to`` is None when
    the segmentation (a deleted custom rule) no longer exists."""

    segmentation: str
    from_: str | None
    to: str | None
    reason: str
