"""``streamproc bench``: throughput and latency against baselines, on the real local stack.

``run`` orchestrates the stages (``stages``: raw aiokafka, worker subprocesses, paced latency),
``bare`` is the bare Faust app, ``offsets`` watches consumer groups, ``measure`` holds the
arithmetic, ``report`` renders the table, ``machine`` and ``profiling`` describe the machine and
where the time goes (shared with ``bench/state_bench.py``).
"""

from __future__ import annotations

from streamproc.benchmark.report import render
from streamproc.benchmark.run import STAGES, Bench, BenchOptions
from streamproc.benchmark.workers import BenchError

__all__ = ["STAGES", "Bench", "BenchError", "BenchOptions", "render"]
