"""Offsets on the real Kafka: input written by a transactional producer, whose every transaction
ends with a control record at an offset no consumer is given, is committed past those
records, by a worker reading it from the start and by a worker started after a restart at the
committed offset of a marker (a head of the partition holding no message). Every event is
applied once.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterable

import pytest
from aiokafka import AIOKafkaProducer

from streamproc.decisions.decision_log import read_topic

from .conftest import Env, stop_process
from .polling import until
from .streams import alive, committed_offsets, end_offsets
from .test_api import profile_of
from .test_batches import page_view

pytestmark = pytest.mark.integration


async def produce_transactions(env: Env, customers: list[str], rounds: Iterable[int]
                               ) -> dict[str, int]:
    """A transaction a round, of a page view of every customer; the last offset of an event
    by "topic:partition"."""
    producer = AIOKafkaProducer(bootstrap_servers=env.settings.kafka_bootstrap,
                                transactional_id=f"it-tx-{uuid.uuid4().hex[:8]}")
    await producer.start()
    last: dict[str, int] = {}
    try:
        for n in rounds:
            async with producer.transaction():
                sent = [await producer.send(env.settings.topics.browsing, page_view(c, n),
                                            key=c.encode()) for c in customers]
            for future in sent:
                meta = await future
                name = f"{meta.topic}:{meta.partition}"
                last[name] = max(last.get(name, -1), meta.offset)
    finally:
        await producer.stop()
    return last


async def committed_past(env: Env, worker: subprocess.Popen[bytes], last: dict[str, int]
                         ) -> bool:
    alive(env, worker)
    committed = await committed_offsets(env)
    return all(committed.get(name, 0) > offset for name, offset in last.items())


async def test_transaction_markers_are_committed_past_before_and_after_a_restart(
        stack_env: Env) -> None:
    env = stack_env
    customers = [env.customer() for _ in range(6)]
    last = await produce_transactions(env, customers, range(4))
    ends = await end_offsets(env)
    # Each partition's log ends with a marker, one offset past its last event.
    assert last and all(ends[name] == offset + 1 for name, offset in last.items()), (ends, last)
    worker = env.start_worker()
    await until("the commits pass every transaction's markers",
                lambda: committed_past(env, worker, last), 90)
    stop_process(worker, 20)

    # The next worker starts at a committed offset that holds a marker, not a message.
    committed = await committed_offsets(env)
    assert all(committed[name] == offset + 1 == ends[name] for name, offset in last.items())
    more = await produce_transactions(env, customers, range(4, 7))
    worker = env.start_worker()
    await until("the commits pass the markers after the restart",
                lambda: committed_past(env, worker, more), 90)
    for cid in customers:
        profile = await profile_of(env, cid)
        assert profile is not None and profile["counts"]["page_view"] == 7, (cid, profile)
    # Read back with their places: every event, none at a marker's offset.
    browsing = env.settings.topics.browsing
    placed = await read_topic(env.settings, browsing, offsets=True)
    assert len(placed) == 7 * len(customers)
    assert all(record is not None and record["customer_id"] in customers
               for _, _, record in placed)
    tops: dict[str, int] = {}
    for partition, offset, _ in placed:
        tops[f"{browsing}:{partition}"] = max(tops.get(f"{browsing}:{partition}", -1), offset)
    assert tops == more
