"""Waiting on the real stack: poll a condition with a deadline, never sleep in its place."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

from .test_web import get, sample


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


async def serves_version(port: int, version: int, timeout: float = 60.0,
                         log: Callable[[], str] | None = None) -> None:
    """Until the worker whose web server listens on ``port`` (its ``STREAMPROC_WEB_PORT``) says
    on /metrics that it serves the learner's snapshot ``version`` or a newer one."""
    async def serves() -> bool:
        _, body = await asyncio.to_thread(get, port, "/metrics")
        served = sample(body.decode(errors="replace"), "streamproc_model_version")
        return served is not None and served >= version

    await until(f"the worker on port {port} serves model snapshot v{version} or newer", serves,
                timeout, log)
