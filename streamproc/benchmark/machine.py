"""The machine a benchmark ran on: CPU, cores, RAM, OS, Python, Redis and Kafka versions."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamproc.stack.jars import KAFKA_VERSION


def _first_line_value(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine(redis_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the figures were measured on (``redis_info``: Redis ``INFO server`` + ``memory``).

    >>> sorted(machine())[:3]
    ['cores', 'cpu', 'kafka_local_stack']
    """
    redis_info = redis_info or {}
    mem_kb = _first_line_value("/proc/meminfo", "MemTotal:")
    return {
        "cpu": _first_line_value("/proc/cpuinfo", "model name") or "unknown",
        "cores": os.cpu_count(),
        "ram_gb": round(int(mem_kb.split()[0]) / 1024 / 1024, 1) if mem_kb else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "redis": redis_info.get("redis_version"),
        "redis_allocator": redis_info.get("mem_allocator"),
        "kafka_local_stack": KAFKA_VERSION,
    }
