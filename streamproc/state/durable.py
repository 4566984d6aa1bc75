"""Writes on a Redis Cluster that a primary's failure does not lose once they are acknowledged.

Redis replicates asynchronously: a primary answers a write before its replica has it, and a
primary killed in between takes the write with it when the replica is promoted. The worker
commits a batch's Kafka offsets once its state write is answered, so such a write would be
lost for good: the events are never read again. :meth:`Replication.run` sends each primary its
commands on one connection followed by ``WAIT <replicas> <ms>``, which returns once the
primary's replicas acknowledged every write of that connection (Redis docs, WAIT).

The commands are sent once, without redis-py's cluster retries: a retry would resend the
``WAIT`` alone, on another connection or to the promoted replica, where it answers at once
whatever became of the writes. Any error (a connection lost before the ``WAIT`` answered, a
slot moved, a node down) raises instead, and the caller's batch is done again from a fresh
read, which the compare-and-set writes make safe (the read goes through redis-py's own
retries, which follow the failover).

A replica that does not answer in time (slow, or down and not yet marked failed by the
cluster) is logged, not waited for: the write stands on its primary alone, as any Redis write
without WAIT does. A primary without replicas is not asked to WAIT.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.exceptions import SlotNotCoveredError

log = logging.getLogger(__name__)

# Seconds between two warnings of replicas that did not acknowledge in time.
_WARN_EVERY_S = 10.0
_WAIT, _ROLE = -1, -2  # the positions of the WAIT and the ROLE among a node's commands


class Replication:
    """How a store's writes wait for the replicas of their primaries (``wait_ms``; 0: they do
    not), the replicas each primary has, and the waits that came back short.

    A primary's replicas are counted by ``ROLE`` (the replicas connected to it now): asked
    once when the primary is first written to, then in the same round trip as every batch's
    writes, for the next. The cluster's slot map is no guide: a replica is left out of it
    until it has synchronised, and the client reads the map again only after an error.
    """

    def __init__(self, wait_ms: int) -> None:
        self.wait_ms = wait_ms
        self.replicas: dict[str, int] = {}
        self.short = 0
        self._warned = -_WARN_EVERY_S

    async def run(self, client: RedisCluster,
                  commands: Sequence[tuple[int, tuple[Any, ...]]]) -> list[Any]:
        """Run each command ``(slot, args)`` on its slot's primary, every primary's commands
        on one connection in order, followed there by WAIT for its replicas; return the
        replies in the order of ``commands``.

        Raises the first error of any command or node (see the module's docstring); nothing
        is retried here.
        """
        await client.initialize()  # a topology refresh an earlier error asked for, when due
        slots = client.nodes_manager.slots_cache
        groups: dict[str, tuple[ClusterNode, list[PipelineCommand]]] = {}
        for position, (slot, args) in enumerate(commands):
            nodes = slots.get(slot)
            if not nodes:
                raise SlotNotCoveredError(f"slot {slot} is not covered by the Redis Cluster")
            group = groups.get(nodes[0].name)
            if group is None:
                group = groups[nodes[0].name] = (nodes[0], [])
            group[1].append(PipelineCommand(position, *args))
        if self.wait_ms:
            unknown = [node for node, _ in groups.values() if node.name not in self.replicas]
            for node, role in zip(unknown, await asyncio.gather(
                    *(node.execute_command("ROLE") for node in unknown)), strict=True):
                self.replicas[node.name] = _replica_count(role)
            for node, queued in groups.values():
                if self.replicas[node.name]:
                    queued.append(PipelineCommand(_WAIT, "WAIT", self.replicas[node.name],
                                                  self.wait_ms))
                queued.append(PipelineCommand(_ROLE, "ROLE"))
        outcomes = await asyncio.gather(*(node.execute_pipeline(queued)
                                          for node, queued in groups.values()),
                                        return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        replies: list[Any] = [None] * len(commands)
        for node, queued in groups.values():
            for command in queued:
                if isinstance(command.result, BaseException):
                    raise command.result
                if command.position >= 0:
                    replies[command.position] = command.result
                elif command.position == _WAIT:
                    self._check(node.name, int(command.result))
                else:
                    self.replicas[node.name] = _replica_count(command.result)
        return replies

    def _check(self, node: str, acknowledged: int) -> None:
        replicas = self.replicas[node]
        if acknowledged >= replicas:
            return
        self.short += 1
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY_S:
            self._warned = now
            log.warning(
                "Redis primary %s: %d of its %d replicas acknowledged a batch's writes within "
                "%d ms (STREAMPROC_REDIS_REPLICA_WAIT_MS); the writes stand on the primary "
                "alone until its replicas catch up (%d such batches so far)",
                node, acknowledged, replicas, self.wait_ms, self.short)


def _replica_count(role: Any) -> int:
    """The replicas connected to a primary, from its ``ROLE`` reply (0 for any other)."""
    if isinstance(role, list) and len(role) >= 3 and role[0] in (b"master", "master"):
        return len(role[2])
    return 0
