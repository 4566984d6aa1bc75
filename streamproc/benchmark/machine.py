"""The machine a benchmark ran on: CPU, cores, RAM, OS, Python, Redis and Kafka versions."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


def machine_jiffies(stat: str | None = None) -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine so far, in clock ticks, from the ``cpu`` line
    of ``/proc/stat`` (``stat``: its text); None where there is none (not Linux).

    >>> machine_jiffies("cpu  100 5 50 800 45 0 0 0 0 0\\ncpu0 1 2 3 4 5 6 7 8 9 10\\n")
    (155, 1000)
    """
    if stat is None:
        try:
            stat = Path("/proc/stat").read_text()
        except OSError:
            return None
    for line in stat.splitlines():
        if line.startswith("cpu "):
            ticks = [int(x) for x in line.split()[1:]]
            # user nice system idle iowait irq softirq steal (guest time is inside user/nice)
            busy = sum(ticks[:3]) + sum(ticks[5:8])
            return busy, sum(ticks[:8])
    return None


# CPU time is counted in clock ticks (10 ms): a shorter span than this says nothing.
MIN_CPU_WINDOW_S = 1.0


def cpu_seconds(pids: Sequence[int]) -> float | None:
    """CPU time (user and system) the processes ``pids`` used so far, from ``/proc/<pid>/stat``;
    None when one of them cannot be read (not Linux, or it has ended)."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3
        total += int(fields[11]) + int(fields[12])  # utime and stime, fields 14 and 15
    return total / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    """The CPU used so far by some processes (seconds) and by the machine (ticks)."""

    processes_s: float | None
    machine: tuple[int, int] | None


def cpu_sample(pids: Sequence[int]) -> CpuSample:
    return CpuSample(cpu_seconds(pids), machine_jiffies())


def cores_between(a: CpuSample, b: CpuSample, wall_s: float,
                  cores: int | None = None) -> dict[str, float | None]:
    """Cores used between two samples ``wall_s`` seconds apart: CPU seconds per second, by the
    processes and by the whole machine of ``cores`` cores (default: this one's; None where
    unknown).

    >>> cores_between(CpuSample(10.0, (1000, 4000)), CpuSample(13.0, (1600, 4800)), 2.0, 2)
    {'processes_cores': 1.5, 'machine_busy_cores': 1.5}
    >>> cores_between(CpuSample(None, None), CpuSample(1.0, (1, 2)), 2.0, 2)
    {'processes_cores': None, 'machine_busy_cores': None}
    >>> cores_between(CpuSample(10.0, (1000, 4000)), CpuSample(10.1, (1010, 4010)), 0.05, 2)
    {'processes_cores': None, 'machine_busy_cores': None}
    """
    out: dict[str, float | None] = {"processes_cores": None, "machine_busy_cores": None}
    if wall_s < MIN_CPU_WINDOW_S:
        return out
    if a.processes_s is not None and b.processes_s is not None:
        out["processes_cores"] = round((b.processes_s - a.processes_s) / wall_s, 2)
    if a.machine is not None and b.machine is not None and b.machine[1] > a.machine[1]:
        share = (b.machine[0] - a.machine[0]) / (b.machine[1] - a.machine[1])
        out["machine_busy_cores"] = round(share * (cores or os.cpu_count() or 1), 2)
    return out
