"""Kafka's murmur2 partitioner and the worker's check that each message is on its key's
partition (dead-lettered, or processed and counted in warn mode)."""

from __future__ import annotations

import ctypes
import logging
import zlib

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from streamproc.events.partitioner import PartitionCheck, murmur2, partition_for
from streamproc.processor import Processor
from streamproc.state.memory import MemoryStore
from streamproc.worker.agents import BatchStats, handle_batch
from streamproc.worker.metrics import WorkerMetrics

from .helpers import SETTINGS, Partition, event
from .test_agents import ListEmitter

# Apache Kafka's own test vectors for Utils.murmur2 (clients/.../utils/UtilsTest.java), as
# Java's signed ints.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("key", list(JAVA_MURMUR2))
def test_murmur2_matches_kafkas_java_vectors(key: bytes) -> None:
    assert ctypes.c_int32(murmur2(key)).value == JAVA_MURMUR2[key]


@given(st.binary(max_size=300))
def test_murmur2_matches_aiokafka(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@given(st.binary(min_size=1, max_size=130), st.integers(min_value=1, max_value=500))
def test_partition_for_matches_aiokafkas_default_partitioner(key: bytes, n: int) -> None:
    partitions = list(range(n))
    assert partition_for(key, n) == DefaultPartitioner()(key, partitions, partitions)


def test_the_check_finds_a_crc32_partitioned_message() -> None:
    cid = next(c for c in (f"cust-{i}".encode() for i in range(100))
               if zlib.crc32(c) % 12 != partition_for(c, 12))
    check = PartitionCheck("deadletter", lambda topic: 12)
    crc = Partition(zlib.crc32(cid) % 12).message(b"{}", key=cid)
    right = Partition(partition_for(cid, 12)).message(b"{}", key=cid)
    assert check.expected(crc) == partition_for(cid, 12)
    assert check.expected(right) is None
    error = check.error(crc, partition_for(cid, 12))
    assert "partitioner=murmur2_random" in error and "STREAMPROC_PARTITION_CHECK=warn" in error
    assert f"partition {partition_for(cid, 12)} of 12" in error


def test_an_unknown_or_stale_partition_count_checks_nothing() -> None:
    """Never dead-letter a topic's every message because of a wrong count."""
    msg = Partition(5).message(b"{}", key=b"cust-42")  # cust-42 belongs on 8 of 12
    assert PartitionCheck("deadletter", lambda topic: 12).expected(msg) == 8
    assert PartitionCheck("deadletter", lambda topic: None).expected(msg) is None
    # Partition 5 cannot exist among 4: the count is stale (partitions added since).
    assert PartitionCheck("deadletter", lambda topic: 4).expected(msg) is None
    # A message without a key is the codec's to dead-letter (key_mismatch).
    assert PartitionCheck("deadletter", lambda topic: 12).expected(
        Partition(5).message(b"{}")) is None


def test_partition_counts_are_asked_once_per_topic_until_refreshed() -> None:
    asked: list[str] = []
    counts = {"t.browsing": 4}

    def partitions(topic: str) -> int | None:
        asked.append(topic)
        return counts.get(topic)

    check = PartitionCheck("deadletter", partitions)
    key = b"cust-42"
    wrong = (partition_for(key, 4) + 1) % 4
    msg = Partition(wrong).message(b"{}", key=key, topic="t.browsing")
    assert check.expected(msg) == partition_for(key, 4)
    assert check.expected(msg) == partition_for(key, 4)
    assert asked == ["t.browsing"]
    counts["t.browsing"] = 12  # partitions added: seen after the next refresh
    check.refresh()
    assert check.expected(msg) == (partition_for(key, 12) if partition_for(key, 12) != wrong
                                   else None)
    assert asked == ["t.browsing", "t.browsing"]


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="deadletter, warn or off"):
        PartitionCheck("drop", lambda topic: 12)


def wrong_and_right(n: int = 12) -> tuple[str, int, int]:
    """A customer id, a partition it does not belong on and the one it does (among n)."""
    cid = "cust-42"
    right = partition_for(cid.encode(), n)
    return cid, (right + 1) % n, right


async def test_a_message_on_the_wrong_partition_is_dead_lettered_not_applied() -> None:
    cid, wrong, right = wrong_and_right()
    store = MemoryStore()
    metrics = WorkerMetrics()
    processor = Processor(SETTINGS, store, partition_check=PartitionCheck(
        "deadletter", lambda topic: 12))
    body = event("cart_add", customer=cid)
    misplaced = Partition(wrong).message(body)
    emitter = ListEmitter()
    await handle_batch([misplaced], processor, emitter, BatchStats(), metrics)
    [(key, record)] = [d for r in emitter.results for d in r.deadletters]
    dead = orjson.loads(record)
    assert key == cid.encode() and dead["reason"] == "wrong_partition"
    assert dead["source"]["partition"] == wrong
    assert orjson.loads(dead["value"]["data"]) == body
    assert f"belongs on partition {right} of 12" in dead["error"]
    assert await store.read_profile(cid) is None and emitter.decisions() == []
    assert metrics.value("streamproc_wrong_partition_total", topic=SETTINGS.topics.browsing,
                         handling="deadletter") == 1
    assert metrics.value("streamproc_deadletters_total", reason="wrong_partition") == 1

    # The same event on its partition is applied (the dead letter left no trace in the dedupe
    # window).
    await handle_batch([Partition(right).message(body)], processor, emitter, BatchStats(),
                       metrics)
    profile = await store.read_profile(cid)
    assert profile is not None and profile["profile"]["counts"]["cart_add"] == 1
    assert [d["trigger"]["partition"] for d in emitter.decisions()] == [right]


async def test_warn_mode_processes_counts_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    cid, wrong, _ = wrong_and_right()
    store = MemoryStore()
    metrics = WorkerMetrics()
    processor = Processor(SETTINGS, store, partition_check=PartitionCheck(
        "warn", lambda topic: 12))
    part = Partition(wrong)
    emitter = ListEmitter()
    with caplog.at_level(logging.WARNING, logger="streamproc.processor"):
        await handle_batch([part.message(event("cart_add", customer=cid)),
                            part.message(event("page_view", customer=cid))],
                           processor, emitter, BatchStats(), metrics)
    assert emitter.deadletters() == []
    profile = await store.read_profile(cid)
    assert profile is not None and profile["profile"]["counts"]["cart_add"] == 1
    assert metrics.value("streamproc_wrong_partition_total", topic=SETTINGS.topics.browsing,
                         handling="warn") == 2
    # One line for a burst, not one per message.
    lines = [r.getMessage() for r in caplog.records if "wrong partition" in r.getMessage()]
    assert len(lines) == 1 and "partitioner=murmur2_random" in lines[0]


async def test_off_and_no_check_process_everything() -> None:
    cid, wrong, _ = wrong_and_right()
    for check in (PartitionCheck("off", lambda topic: 12), None):
        store = MemoryStore()
        result = await Processor(SETTINGS, store, partition_check=check).process(
            [Partition(wrong).message(event("cart_add", customer=cid))])
        assert result.deadletters == [] and result.wrong_partition == {}
        assert result.applied == 1
