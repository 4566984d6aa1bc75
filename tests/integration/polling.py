"""Waiting on the real stack: poll a condition with a deadline, never sleep in its place."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def until(what: str, check: Callable[[], Any], timeout: float = 60.0,
                log: Callable[[], str] | None = None, every: float = 0.3) -> Any:
    """Call ``check`` (plain or async) every ``every`` s until it returns something truthy, and
    return that; after ``timeout`` s fail with ``what`` and ``log()`` (a worker's log)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        assert time.monotonic() < deadline, (
            f"{what}: not within {timeout:.0f}s" + (f"\n{log()}" if log is not None else ""))
        await asyncio.sleep(every)
