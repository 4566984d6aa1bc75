"""streamproc.state.durable: what each primary is sent, and what its answers make of a batch.

The nodes are fakes that record the commands of each round trip and answer as a Redis would;
the real cluster's side is in tests/integration/test_redis_cluster.py.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from streamproc.state.durable import Replication


def role(replicas: int) -> list[Any]:
    return [b"master", 100, [[b"127.0.0.1", b"7003", b"100"]] * replicas]


class Node:
    """A primary with ``replicas`` connected, answering ``acks`` to WAIT (all of them when
    None); ``fail`` names a command whose reply the connection loses."""

    def __init__(self, name: str, replicas: int, acks: int | None = None,
                 fail: str | None = None) -> None:
        self.name, self.replicas, self.acks, self.fail = name, replicas, acks, fail
        self.trips: list[list[tuple[Any, ...]]] = []

    async def execute_command(self, *args: Any) -> Any:
        self.trips.append([args])
        assert args == ("ROLE",)
        return role(self.replicas)

    async def execute_pipeline(self, commands: list[Any]) -> bool:
        self.trips.append([c.args for c in commands])
        for c in commands:
            if c.args[0] == self.fail:
                c.result = RedisConnectionError("Connection closed by server.")
            elif c.args[0] == "WAIT":
                c.result = self.replicas if self.acks is None else self.acks
            elif c.args[0] == "ROLE":
                c.result = role(self.replicas)
            else:
                c.result = f"{self.name}:{c.args[1]}"
        return False


class Client:
    def __init__(self, slots: dict[int, Node]) -> None:
        self.nodes_manager = type("Manager", (), {"slots_cache": {
            slot: [node] for slot, node in slots.items()}})()

    async def initialize(self) -> Client:
        return self


def cluster(slots: dict[int, Node]) -> Any:
    """A RedisCluster as far as Replication.run uses one."""
    return Client(slots)


async def test_each_primarys_writes_are_followed_on_their_connection_by_a_wait() -> None:
    a, b = Node("a", replicas=1), Node("b", replicas=2)
    client = cluster({1: a, 2: b, 3: a})
    replication = Replication(wait_ms=250)
    replies = await replication.run(client, [(1, ("SET", "k1", 1)), (2, ("SET", "k2", 2)),
                                             (3, ("SET", "k3", 3))])
    assert replies == ["a:k1", "b:k2", "a:k3"]
    # First the replicas each primary has now, then one round trip: the writes, WAIT for
    # that many replicas, and ROLE again for the next batch.
    assert a.trips == [[("ROLE",)], [("SET", "k1", 1), ("SET", "k3", 3), ("WAIT", 1, 250),
                                     ("ROLE",)]]
    assert b.trips[1] == [("SET", "k2", 2), ("WAIT", 2, 250), ("ROLE",)]
    assert replication.replicas == {"a": 1, "b": 2} and replication.short == 0
    await replication.run(client, [(1, ("SET", "k4", 4))])
    assert a.trips[2] == [("SET", "k4", 4), ("WAIT", 1, 250), ("ROLE",)]  # ROLE not asked again


async def test_a_wait_whose_answer_is_lost_fails_the_batch() -> None:
    # The writes were answered, then the primary went before the WAIT's answer: whether its
    # replica has them is unknown, so the batch must be done again, not acknowledged.
    node = Node("a", replicas=1, fail="WAIT")
    with pytest.raises(RedisConnectionError):
        await Replication(wait_ms=250).run(cluster({1: node}), [(1, ("SET", "k", 1))])


async def test_a_replica_late_to_acknowledge_is_logged_and_not_waited_for(
        caplog: pytest.LogCaptureFixture) -> None:
    node = Node("a", replicas=2, acks=1)
    replication = Replication(wait_ms=250)
    with caplog.at_level(logging.WARNING, logger="streamproc.state.durable"):
        for n in range(3):
            assert await replication.run(cluster({1: node}), [(1, ("SET", "k", n))]) == ["a:k"]
    assert replication.short == 3
    # Logged once, not per batch: a replica down until the cluster marks it failed would
    # otherwise log every batch.
    [record] = caplog.records
    assert "1 of its 2 replicas acknowledged" in record.getMessage()
    assert "STREAMPROC_REDIS_REPLICA_WAIT_MS" in record.getMessage()


async def test_a_primary_without_replicas_is_not_asked_to_wait_and_zero_turns_it_off() -> None:
    alone = Node("a", replicas=0)
    await Replication(wait_ms=250).run(cluster({1: alone}), [(1, ("SET", "k", 1))])
    assert alone.trips[1] == [("SET", "k", 1), ("ROLE",)]
    replicated = Node("b", replicas=1)
    await Replication(wait_ms=0).run(cluster({1: replicated}), [(1, ("SET", "k", 1))])
    assert replicated.trips == [[("SET", "k", 1)]]


async def test_a_replica_that_comes_back_is_waited_for_again() -> None:
    node = Node("a", replicas=0)
    replication = Replication(wait_ms=250)
    await replication.run(cluster({1: node}), [(1, ("SET", "k", 1))])
    node.replicas = 1  # reconnected: the ROLE of this batch tells the next one
    await replication.run(cluster({1: node}), [(1, ("SET", "k", 2))])
    await replication.run(cluster({1: node}), [(1, ("SET", "k", 3))])
    assert [trip[1:] for trip in node.trips[1:]] == [
        [("ROLE",)], [("ROLE",)], [("WAIT", 1, 250), ("ROLE",)]]
