"""What a segmentation decides for one customer, and how a membership changed."""

from __future__ import annotations

from typing import NamedTuple


class Assignment(NamedTuple):
    """The segment a customer is in, and a short sentence saying why."""

    segment: str
    reason: str


class Transition(NamedTuple):
    """A customer moved in one segmentation; ``from_`` is None the first time, ``to`` is None when
    the segmentation (a deleted custom rule) no longer exists."""

    segmentation: str
    from_: str | None
    to: str | None
    reason: str
