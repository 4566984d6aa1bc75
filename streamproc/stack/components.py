"""What the local stack's components are doing, as data (for code) and as a table (for people)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# running: ours and accepting connections; starting: ours, not accepting yet; stopped: nothing
# there; stale: a pid file whose process is dead or not ours; port-taken: something that is not
# ours holds the port; other-stack: another streamproc stack (another STREAMPROC_STACK_DIR) holds
# it (the pid is that stack's process); external: configured to a non-local host, which the stack
# does not manage.
State = Literal["running", "starting", "stopped", "stale", "port-taken", "other-stack",
                "external"]


@dataclass(frozen=True)
class ComponentStatus:
    """One component (``kafka`` or ``redis``): its state, pid, address and a hint for people."""

    name: str
    state: State
    address: str
    pid: int | None = None
    detail: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class StackStatus:
    """The whole stack; ``running`` only when every component accepts connections.
    ``brokers`` are Kafka's nodes 2 to N of a local cluster (``stack up --kafka-brokers N``)."""

    kafka: ComponentStatus
    redis: ComponentStatus
    # The local Redis Cluster (`stack up --redis-cluster N`), when one was made beside the
    # single Redis (a redis+cluster:// STREAMPROC_REDIS_URL makes it the ``redis`` above).
    redis_cluster: ComponentStatus | None = None
    brokers: tuple[ComponentStatus, ...] = ()

    @property
    def components(self) -> tuple[ComponentStatus, ...]:
        extra = () if self.redis_cluster is None else (self.redis_cluster,)
        return (self.kafka, *self.brokers, self.redis, *extra)

    @property
    def running(self) -> bool:
        return all(c.running for c in self.components)

    def render(self) -> str:
        """A fixed-width table, one line per component."""
        rows = [("COMPONENT", "STATE", "PID", "ADDRESS", "DETAIL")] + [
            (c.name, c.state, str(c.pid) if c.pid else "-", c.address, c.detail)
            for c in self.components
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
            + ("  " + row[4] if row[4] else "")
            for row in rows
        ).rstrip()
