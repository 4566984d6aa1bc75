"""Worker subprocesses of the benchmark: started with the bench's settings, stopped by SIGTERM.

Each stage runs its workers as separate processes, as in production: ``python -m streamproc.cli
worker`` for the pipeline, ``python -m streamproc.benchmark.bare`` for the bare Faust app, and
the pipeline under ``python -m cProfile`` for ``--profile`` (cProfile writes its file when the
worker exits after SIGTERM), and ``python -m streamproc.cli learner`` beside the pipeline's
workers when its learner runs in a process of its own.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamproc.errors import StreamprocError
from streamproc.settings import Settings

PIPELINE = ("-m", "streamproc.cli", "worker")
LEARNER = ("-m", "streamproc.cli", "learner")
BARE_FAUST = ("-m", "streamproc.benchmark.bare")
STOP_TIMEOUT_S = 60.0
LOG_TAIL_CHARS = 3000


class BenchError(StreamprocError):
    """The benchmark could not run or finish a stage."""


def profiled(argv: Sequence[str], path: Path) -> tuple[str, ...]:
    """``argv`` (a ``-m module ...`` command) run under cProfile, stats written to ``path``.

    >>> profiled(PIPELINE, Path("/tmp/w.prof"))
    ('-m', 'cProfile', '-o', '/tmp/w.prof', '-m', 'streamproc.cli', 'worker')
    """
    return ("-m", "cProfile", "-o", str(path), *argv)


def worker_env(base: Mapping[str, str], settings: Settings, prefix: str) -> dict[str, str]:
    """A worker's environment: ``base`` with the bench's topic prefix, group, Redis, no web.

    Explicit topic names (``STREAMPROC_TOPIC_BROWSING`` ...) are dropped: the bench's topics are
    its prefix plus the standard names.
    """
    env = {k: v for k, v in base.items() if not k.startswith("STREAMPROC_TOPIC_")}
    env.update({
        "STREAMPROC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STREAMPROC_REDIS_URL": settings.redis_url,
        "STREAMPROC_APP_ID": settings.app_id,
        "STREAMPROC_TOPIC_PREFIX": prefix,
        "STREAMPROC_PARTITIONS": str(settings.partitions),
        "STREAMPROC_WEB_PORT": "0",
        "STREAMPROC_STACK_DIR": str(settings.stack_dir),
        # The simulated event time runs ahead of the clock the records are stamped with.
        "STREAMPROC_MAX_FUTURE_SKEW_S": str(settings.max_future_skew_s),
    })
    return env


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return "(no log)"


def start_workers(name: str, argv: Sequence[str], count: int, env: Mapping[str, str],
                  logs: Path) -> list[Worker]:
    workers = []
    for i in range(count):
        log_path = logs / f"{name}-{i}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, *argv], env=dict(env), stdout=log,
                                    stderr=subprocess.STDOUT, cwd=logs)
        workers.append(Worker(f"{name} worker {i}", proc, log_path))
    return workers


def check_alive(workers: Sequence[Worker]) -> None:
    for w in workers:
        if w.proc.poll() is not None:
            raise BenchError(f"{w.name} exited with code {w.proc.returncode}; the end of its log "
                             f"({w.log_path}):\n{w.log_tail()}")


def stop_workers(workers: Sequence[Worker], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM every worker, wait for all of them, SIGKILL those still running after ``timeout``."""
    for w in workers:
        if w.proc.poll() is None:
            w.proc.terminate()
    for w in workers:
        try:
            w.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()
