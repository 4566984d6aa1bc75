"""The worker's learning bandit: loaded from its signed snapshot at start, snapshotted as it learns.

What the engine's wiring needs to run the :class:`~streamproc.decisions.bandit.ThompsonChooser`
in a worker, the way :class:`streamproc.intent.IntentScorer` runs the intent model:

* ``keeper.chooser``: the chooser to give the engine (``STREAMPROC_BANDIT_*`` settings);
* ``await keeper.refresh()`` before the first batch: the snapshot in Redis (key
  :func:`~streamproc.decisions.bandit.snapshot_key`) when its signature verifies with
  ``STREAMPROC_MODEL_SECRET``; otherwise (none, refused, no secret) a fresh chooser, with the
  reason logged. A Redis error is raised, so the batch is retried;
* ``await keeper.checkpoint()`` after each batch: a new snapshot every
  ``STREAMPROC_MODEL_SNAPSHOT_SECONDS`` when the chooser learnt or expected something since the
  last one (``force=True`` at shutdown). A failed write is logged, never raised.

Without a secret nothing is written and a restarted worker's bandit starts from scratch (a
warning at start). Each worker keeps its own chooser; the snapshot is one key, so with several
workers the last writer wins (see the bandit's known limits).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from streamproc.blobs import Blobs
from streamproc.decisions.bandit import ThompsonChooser, snapshot_key
from streamproc.models.snapshot import SnapshotError
from streamproc.settings import Settings

log = logging.getLogger(__name__)


class BanditKeeper:
    def __init__(self, settings: Settings, blobs: Blobs | None,
                 clock: Callable[[], float] = time.monotonic, key: str | None = None) -> None:
        self.settings = settings
        self.secret = settings.model_secret.encode()
        self.blobs = blobs if self.secret else None
        self.key = key or snapshot_key(settings)
        self.clock = clock
        self.interval_s = float(settings.model_snapshot_seconds)
        self.chooser = ThompsonChooser.from_settings(settings)
        self.loaded = False
        self._written: tuple[int, int] | None = None  # (updates, pending) of the last snapshot
        self._next_snapshot = 0.0
        if not self.secret:
            log.warning("STREAMPROC_MODEL_SECRET is not set: the bandit is not snapshotted, "
                        "and starts from scratch whenever the worker starts")

    async def refresh(self) -> None:
        """Before the first batch: load the bandit's snapshot, if there is a trusted one."""
        if self.loaded:
            return
        if self.blobs is not None:
            blob = await self.blobs.get(self.key)
            if blob is None:
                log.info("no bandit snapshot in Redis (%s): starting a fresh bandit", self.key)
            else:
                self._restore(blob)
        self.loaded = True
        self._written = self._mark()
        self._next_snapshot = self.clock() + self.interval_s

    def _restore(self, blob: bytes) -> None:
        try:
            restored = ThompsonChooser.restore(
                blob, self.secret, self.settings.bandit_exploration,
                self.settings.bandit_reward_wait_minutes * 60_000)
        except SnapshotError as exc:
            log.error("refusing the bandit snapshot in Redis key %s: %s. Starting from a fresh "
                      "bandit (check STREAMPROC_MODEL_SECRET: every worker needs the same)",
                      self.key, exc)
            return
        self.chooser.take_over(restored)  # in place: the engine may already hold the chooser
        log.info("bandit loaded from %s: %d rewards learnt, %d awaiting their reward",
                 self.key, self.chooser.updates, self.chooser.pending)

    def _mark(self) -> tuple[int, int]:
        return self.chooser.updates, self.chooser.pending

    async def checkpoint(self, force: bool = False) -> bool:
        """Write the snapshot when one is due (or ``force``) and something changed since the
        last one; True when written."""
        if self.blobs is None or not self.loaded or self._mark() == self._written:
            return False
        now = self.clock()
        if not force and now < self._next_snapshot:
            return False
        self._next_snapshot = now + self.interval_s
        mark = self._mark()
        try:
            await self.blobs.set(self.key, self.chooser.snapshot(self.secret))
        except Exception as exc:  # a snapshot is an optimisation: never stop the stream for it
            log.warning("could not write the bandit snapshot to %s (%s: %s); retrying in %.0fs",
                        self.key, type(exc).__name__, exc, self.interval_s)
            return False
        self._written = mark
        return True
