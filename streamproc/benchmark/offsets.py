"""What the benchmark watches on Kafka: end offsets, a group's committed offsets and members.

A stage is done when its consumer group has committed the end offset of every input partition:
Faust commits only what its agent has acknowledged, so that is "every event applied", read from
the broker rather than trusted from the worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamproc.kafka_options import kafka_options
from streamproc.settings import Settings

REQUEST_TIMEOUT_MS = 15_000


def partitions_of(topics: Iterable[str], partitions: int) -> list[TopicPartition]:
    """Every topic-partition of ``topics`` (each with ``partitions`` partitions).

    >>> [f"{tp.topic}:{tp.partition}" for tp in partitions_of(["a", "b"], 2)]
    ['a:0', 'a:1', 'b:0', 'b:1']
    """
    return [TopicPartition(t, p) for t in topics for p in range(partitions)]


def group_state(response: Any, group: str) -> tuple[str, int]:
    """(state, number of members) of ``group`` in a DescribeGroups response."""
    for entry in response.groups:
        # (error_code, group_id, state, protocol_type, protocol, members, ...) in every version
        if entry[1] == group:
            return str(entry[2]), len(entry[5])
    return "Unknown", 0


class KafkaProbe:
    """An admin client and a group-less consumer, for offsets and group states."""

    def __init__(self, settings: Settings) -> None:
        self.admin = AIOKafkaAdminClient(**kafka_options(settings),
                                         request_timeout_ms=REQUEST_TIMEOUT_MS)
        self.consumer = AIOKafkaConsumer(**kafka_options(settings), enable_auto_commit=False,
                                         request_timeout_ms=REQUEST_TIMEOUT_MS)

    async def start(self) -> None:
        await self.admin.start()
        await self.consumer.start()

    async def close(self) -> None:
        try:
            await self.consumer.stop()
        finally:
            await self.admin.close()

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        result: dict[TopicPartition, int] = await self.consumer.end_offsets(list(tps))
        return result

    async def end_total(self, tps: Sequence[TopicPartition]) -> int:
        """Messages in ``tps`` (topics created by the bench start at offset 0)."""
        return sum((await self.end_offsets(tps)).values())

    async def committed_total(self, group: str, tps: Sequence[TopicPartition]) -> int:
        """Sum of the committed offsets of ``group`` over ``tps`` (none yet counts as 0)."""
        offsets = await self.admin.list_consumer_group_offsets(group, partitions=list(tps))
        return sum(max(0, o.offset) for o in offsets.values())

    async def group_state(self, group: str) -> tuple[str, int]:
        responses = await self.admin.describe_consumer_groups([group])
        for response in responses:
            state = group_state(response, group)
            if state[0] != "Unknown":
                return state
        return "Unknown", 0

    async def delete_topics(self, names: Sequence[str]) -> None:
        await self.admin.delete_topics(list(names))
