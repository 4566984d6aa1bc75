"""How a running worker stops: when asked (SIGTERM, SIGINT), or on its own after Redis has been
unreachable for ``STREAMPROC_REDIS_OUTAGE_LEAVE_S``; and what it leaves behind either way.

Faust stops a worker by waiting until every message handed to the agent is acknowledged, then
committing. A batch retrying an unreachable Redis is never acknowledged, so the stop waited for
ever (and mode's worker ignores a second signal): the worker ignored SIGTERM and SIGINT, and in
a rebalance it never let go of its partitions. Now the retry loop gives up once the worker
stops (:class:`~streamproc.worker.agents.BatchAbandonedError`); the batch it gave up, and every
message after it, is *forgotten*: marked done for Faust's wait but never acknowledged, so
nothing from it on is committed, and whoever takes the partition reads it again.

A worker that gave up a batch exits with :data:`EXIT_UNFINISHED` (75, EX_TEMPFAIL: try again
later), with the reason, so that an orchestrator restarts it; a clean stop exits 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

EXIT_UNFINISHED = 75


@dataclass
class OutageClock:
    """How long Redis has been unreachable, from the outcomes of the worker's regular calls
    (the heartbeat), and whether that is longer than ``leave_after_s`` (0: never too long).

    >>> clock = OutageClock(leave_after_s=60)
    >>> clock.failed(100.0), clock.failed(130.0), clock.too_long(130.0), clock.too_long(160.0)
    (0.0, 30.0, False, True)
    >>> clock.succeeded(); clock.failed(200.0), clock.too_long(200.0)
    (0.0, False)
    >>> OutageClock(leave_after_s=0).too_long(1e9)
    False
    """

    leave_after_s: float
    since: float | None = None

    def failed(self, now: float) -> float:
        """Count a failed call; return how long the outage has lasted."""
        if self.since is None:
            self.since = now
        return now - self.since

    def succeeded(self) -> None:
        self.since = None

    def too_long(self, now: float) -> bool:
        return (self.leave_after_s > 0 and self.since is not None
                and now - self.since >= self.leave_after_s)


@dataclass
class Lifecycle:
    """One worker's stop: who asks for it (``request``, wired by ``run_worker`` to Faust's worker),
    whether it is under way (``stopping``) and, once a batch was given up, why (``gave_up``),
    which also means: forget, do not acknowledge, every batch from then on."""

    request: Callable[[], None] | None = None
    stopping: Callable[[], bool] = field(default=lambda: False)  # create_app: the app's
    gave_up: str | None = None
    reasons: list[str] = field(default_factory=list)

    def stop(self, reason: str) -> None:
        """Stop the worker as a signal would, for ``reason`` (logged, and printed at the exit)."""
        self.reasons.append(reason)
        log.error("stopping: %s", reason)
        if self.request is not None:
            self.request()

    def give_up(self, reason: str) -> None:
        if self.gave_up is None:
            self.gave_up = reason

    @property
    def exit_code(self) -> int:
        return EXIT_UNFINISHED if self.gave_up is not None or self.reasons else 0

    def exit_message(self) -> str | None:
        """What the worker prints last when it did not stop cleanly."""
        if self.exit_code == 0:
            return None
        parts = list(self.reasons)
        if self.gave_up is not None:
            parts.append(f"the batch in hand was not finished ({self.gave_up}); its messages "
                         "and those after them are not committed, and whoever takes the "
                         "partitions reads them again")
        return "worker stopped: " + "; ".join(parts)
