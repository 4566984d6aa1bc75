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

from streamproc.segments.rules import RuleSet, load_rules

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int]


def _stamp(path: Path) -> Stamp:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class RuleFile:
    """The current :class:`RuleSet` of a file.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = pathlib.Path(folder) / "rules.yaml"
    ...     _ = path.write_text("segments: [{name: vip, when: {field: device, op: exists}}]")
    ...     RuleFile(path, check_every_s=2.0).current().names
    ('vip',)
    """

    def __init__(
        self,
        path: str | Path,
        check_every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        activity_days: int = 30,
        event_types: Collection[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.check_every_s = check_every_s
        self.clock = clock
        self.activity_days = activity_days
        self.event_types = event_types
        self.last_error: str | None = None
        self.version = 1  # goes up by one with every successful reload
        self._stamp = _stamp(self.path) if self.path.exists() else (0, 0, 0)
        self._rules = self._load()  # raises: the first load must succeed
        self._checked = clock()

    def _load(self) -> RuleSet:
        return load_rules(self.path, activity_days=self.activity_days,
                          event_types=self.event_types)

    def current(self) -> RuleSet:
        """The rules in force, reloaded first if the file changed; never raises."""
        now = self.clock()
        if now - self._checked < self.check_every_s:
            return self._rules
        self._checked = now
        try:
            stamp = _stamp(self.path)
        except OSError as exc:
            self._fail(f"{self.path}: cannot read the segment rules: {exc.strerror}")
            return self._rules
        if stamp == self._stamp:
            return self._rules
        self._stamp = stamp  # a broken version is reported once, not every check
        try:
            rules = self._load()
        except Exception as exc:  # anything: while running, keep the rules we have
            self._fail(str(exc))
            return self._rules
        self._rules, self.last_error = rules, None
        self.version += 1
        log.info("segment rules reloaded from %s: %d rule(s)", self.path, len(rules))
        return rules

    def _fail(self, error: str) -> None:
        if error != self.last_error:
            log.error("segment rules not reloaded, keeping the previous %d rule(s): %s",
                      len(self._rules), error)
        self.last_error = error
