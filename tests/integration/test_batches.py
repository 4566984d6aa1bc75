"""A real worker's batches on the real Kafka: when old events mean that the worker is behind.

Every event here carries a Kafka timestamp a minute old, as from a producer whose clock lags.
Only a backlog in the partition (the consumer's high watermark past the event) makes the worker
wait for fuller batches (``streamproc_batches_behind``); a lone old event does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import orjson
import pytest
from aiokafka import TopicPartition

from streamproc.worker.app import create_app
from streamproc.worker.delivery import seek_to_committed

from .conftest import Env
from .test_web import free_port, poll, sample

pytestmark = [pytest.mark.integration, pytest.mark.core]

BACKLOG = 3000


def page_view(customer: str, n: int) -> bytes:
    return orjson.dumps({
        "event_id": f"bb-{customer}-{n}", "type": "page_view", "customer_id": customer,
        "ts": "2026-03-01T10:00:00.000Z", "url": "https://shop.example.com/c/shoes",
        "page_type": "category", "category": "shoes",
        "context": {"session_id": f"s-{customer}", "device": "mobile"}})


async def produce_old(env: Env, events: list[tuple[str, bytes]], age_ms: int = 60_000) -> None:
    stamp = int(time.time() * 1000) - age_ms
    async with env.producer() as sends:
        for customer, value in events:
            sends.sent.append(await sends.producer.send(
                env.settings.topics.browsing, value, key=customer.encode(), timestamp_ms=stamp))


async def test_old_events_count_as_behind_only_with_a_backlog_behind_them(stack_env: Env) -> None:
    port = free_port()
    # Batches larger than the backlog and fetches of 100 messages: each batch is formed from a
    # partial buffer, with more waiting in Kafka, so the worker judges behind or not for every
    # one of them.
    stack_env.env.update({"STREAMPROC_WEB_PORT": str(port), "STREAMPROC_BATCH_SIZE": "5000",
                          "STREAMPROC_FETCH_MAX_RECORDS": "100"})
    browsing = stack_env.settings.topics.browsing
    customers = [stack_env.customer() for _ in range(300)]
    await produce_old(stack_env, [(c, page_view(c, n)) for n in range(BACKLOG // 300)
                                  for c in customers])
    stack_env.start_worker()  # its first fetch finds a thousand messages a partition waiting

    def consumed(count: int) -> Callable[[int, bytes], bool]:
        return lambda s, b: s == 200 and sample(b.decode(), "streamproc_events_total",
                                                topic=browsing) == count

    _, body = await poll(stack_env, port, "/metrics", consumed(BACKLOG), timeout=120)
    behind = sample(body.decode(), "streamproc_batches_behind_total")
    assert behind is not None and behind >= 1, body.decode()[-3000:]

    # Caught up: one more old event, with nothing behind it in its partition. The worker is not
    # behind, whatever the timestamp says: the batch goes after the short wait, uncounted.
    await produce_old(stack_env, [(customers[0], page_view(customers[0], BACKLOG))])
    _, body = await poll(stack_env, port, "/metrics", consumed(BACKLOG + 1))
    assert sample(body.decode(), "streamproc_batches_behind_total") == behind


async def test_the_workers_fetches_wait_at_the_broker_as_long_as_the_setting_says(
        stack_env: Env) -> None:
    # Faust starts its aiokafka consumer with a fixed 1,500 ms wait (streamproc.worker.delivery
    # says why that stalls a worker catching up); the worker's consumer, started on the real
    # broker, hands STREAMPROC_FETCH_MAX_WAIT_MS to the fetcher it starts.
    worker = create_app(replace(stack_env.settings, fetch_max_wait_ms=250))
    consumer = worker.app.consumer
    kafka = consumer._new_consumer_thread()._create_worker_consumer(worker.app.transport)
    await kafka.start()
    try:
        assert kafka._fetcher._fetch_max_wait_ms == 250
    finally:
        await kafka.stop()


async def test_a_seek_to_the_committed_offsets_reads_again_what_nothing_committed_covers(
        stack_env: Env) -> None:
    # Faust drops a fetch answered while its flow is stopped (the first records of a new
    # assignment, before the flow resumes) and seeks to the committed offsets. aiokafka seeks
    # only partitions committed above 0: the others stayed after the dropped records, never
    # read again (events lost in a worker's first seconds). The worker's seek moves them all.
    worker = create_app(stack_env.settings)
    kafka = worker.app.consumer._new_consumer_thread()._create_worker_consumer(
        worker.app.transport)
    browsing = stack_env.settings.topics.browsing
    customers = [stack_env.customer() for _ in range(30)]
    await produce_old(stack_env, [(c, page_view(c, 0)) for c in customers])
    await kafka.start()
    try:
        tps = [TopicPartition(browsing, p) for p in range(3)]
        kafka.assign(tps)
        ends = await kafka.end_offsets(tps)
        assert all(end > 0 for end in ends.values()), ends  # every partition has records

        async def read_to_the_end() -> None:
            while [await kafka.position(tp) for tp in tps] != [ends[tp] for tp in tps]:
                await kafka.getmany(*tps, timeout_ms=500)

        await read_to_the_end()
        await kafka.commit({tps[0]: 0})  # 0 committed on one partition, nothing on the others
        assert await kafka.seek_to_committed() == {tps[0]: 0, tps[1]: None, tps[2]: None}
        # aiokafka's own seek left every partition where the reading got to
        assert {tp: await kafka.position(tp) for tp in tps} == ends
        assert await seek_to_committed(kafka) == {tps[0]: 0, tps[1]: None, tps[2]: None}
        assert {tp: await kafka.position(tp) for tp in tps} == {tp: 0 for tp in tps}
        records = await kafka.getmany(*tps, timeout_ms=2000)
        assert records and all(batch[0].offset == 0 for batch in records.values())
    finally:
        await kafka.stop()
