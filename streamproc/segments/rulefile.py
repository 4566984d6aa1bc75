"""A rules file that reloads itself when it changes, without ever stopping the worker.

The first load raises :class:`~streamproc.errors.ConfigError` (a worker must not start with
broken rules). After that, :meth:`RuleFile.current` looks at the file at most every
``check_every_s`` seconds and reloads it when its modification time, size or inode changed; an
invalid new version keeps the previous rules, is logged once and is kept in ``last_error`` until
a valid version loads. A file rewritten within the file system's time resolution with the same
size is not noticed until it changes again; editors and ``mv`` replacements change the inode.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Generic, TypeVar

from streamproc.segments.rules import RuleSet, load_rules

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int]
T = TypeVar("T")


def _stamp(path: Path) -> Stamp:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class WatchedFile(Generic[T]):
    """What a file holds, loaded once (raising) and reloaded when it changes (never raising).

    Subclasses say how to load (``_load``), what the file is (``what``) and how to summarise
    what it holds in the log (``_summary``).
    """

    what = "file"

    def __init__(
        self,
        path: str | Path,
        check_every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.check_every_s = check_every_s
        self.clock = clock
        self.last_error: str | None = None
        self.version = 1  # goes up by one with every successful reload
        self._stamp = _stamp(self.path) if self.path.exists() else (0, 0, 0)
        self._value = self._load()  # raises: the first load must succeed
        self._checked = clock()

    def _load(self) -> T:
        raise NotImplementedError

    def _summary(self, value: T) -> str:
        return ""

    def current(self) -> T:
        """What is in force, reloaded first if the file changed; never raises."""
        now = self.clock()
        if now - self._checked < self.check_every_s:
            return self._value
        self._checked = now
        try:
            stamp = _stamp(self.path)
        except OSError as exc:
            self._fail(f"{self.path}: cannot read {self.what}: {exc.strerror}")
            return self._value
        if stamp == self._stamp:
            return self._value
        self._stamp = stamp  # a broken version is reported once, not every check
        try:
            value = self._load()
        except Exception as exc:  # anything: while running, keep what we have
            self._fail(str(exc))
            return self._value
        self._value, self.last_error = value, None
        self.version += 1
        log.info("%s reloaded from %s: %s", self.what, self.path, self._summary(value))
        return value

    def _fail(self, error: str) -> None:
        if error != self.last_error:
            log.error("%s not reloaded, keeping the previous %s: %s", self.what,
                      self._summary(self._value), error)
        self.last_error = error


class RuleFile(WatchedFile[RuleSet]):
    """The current :class:`RuleSet` of a file.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = pathlib.Path(folder) / "rules.yaml"
    ...     _ = path.write_text("segments: [{name: vip, when: {field: device, op: exists}}]")
    ...     RuleFile(path, check_every_s=2.0).current().names
    ('vip',)
    """

    what = "segment rules"

    def __init__(
        self,
        path: str | Path,
        check_every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        activity_days: int = 30,
        event_types: Collection[str] | None = None,
    ) -> None:
        self.activity_days = activity_days
        self.event_types = event_types
        super().__init__(path, check_every_s, clock)

    def _load(self) -> RuleSet:
        return load_rules(self.path, activity_days=self.activity_days,
                          event_types=self.event_types)

    def _summary(self, value: RuleSet) -> str:
        return f"{len(value)} rule(s)"
