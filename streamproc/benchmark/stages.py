"""The benchmark's stages, each on the same produced events, with a fresh consumer group.

- :func:`raw_stage`: a plain aiokafka consumer in this process, counting messages;
- :func:`worker_stage`: worker subprocesses (the bare Faust app, or the pipeline with one or
  more workers), done when their group has committed every input offset;
- :func:`latency_stage`: one pipeline worker fed at a fixed rate; latency from the send of an
  event to the arrival of the decision it triggered, here;
- :func:`floor_stage`: the same, with the bare Faust app and a raw consumer here: how long the
  events take to reach them, the latency no pipeline on this machine can go below.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamproc.benchmark.machine import CpuSample, cores_between, cpu_sample
from streamproc.benchmark.measure import Sample, percentile, rate_over, steady_span
from streamproc.benchmark.offsets import KafkaProbe, partitions_of
from streamproc.benchmark.workers import (
    BARE_FAUST,
    LEARNER,
    PIPELINE,
    BenchError,
    Worker,
    check_alive,
    start_workers,
    stop_workers,
    worker_env,
)
from streamproc.kafka_options import kafka_options, producer_options
from streamproc.settings import Settings
from streamproc.simulator.producer import Pacer

POLL_S = 0.2
PROGRESS_S = 3.0
STALL_S = 180.0  # no progress for this long: a stage has failed
READY_TIMEOUT_S = 120.0

# One produced message: (topic, key, value).
Message = tuple[str, bytes, bytes]


class Progress:
    """Progress lines on stderr: stage, events done, rate."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.next_at = 0.0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def maybe(self, stage: str, done: int, total: int, started: float) -> None:
        now = time.monotonic()
        if now < self.next_at or now - started < 1.0:
            return
        self.next_at = now + PROGRESS_S
        elapsed = max(now - started, 1e-9)
        self.say(f"  {stage}: {done:,}/{total:,} events ({done / max(total, 1):.0%}), "
                 f"{elapsed:.0f}s, {done / elapsed:,.0f}/s overall")


@dataclass
class StageResult:
    stage: str
    workers: int
    events: int
    events_per_s: float
    seconds: float  # start of the stage (processes started) to every offset committed
    method: str  # how events_per_s was measured
    outputs: dict[str, int] = field(default_factory=dict)  # records written per output topic
    # Of those, the distinct ones: a record published again with the same key and value (a
    # redelivered batch's outbox, after a rebalance) counts once. See distinct_records.
    distinct_outputs: dict[str, int] = field(default_factory=dict)
    # Cores used over the span the rate is measured on: by the stage's processes (the workers
    # and the pipeline's learner; the bench itself for raw aiokafka) and by the whole machine.
    cpu: dict[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "workers": self.workers, "events": self.events,
                "events_per_s": round(self.events_per_s, 1), "seconds": round(self.seconds, 1),
                "method": self.method, "outputs": self.outputs,
                "distinct_outputs": self.distinct_outputs, "cpu": self.cpu}


async def produce(settings: Settings, messages: Sequence[Message], progress: Progress) -> None:
    """Send ``messages`` as fast as Kafka takes them; return when every one is acknowledged."""
    producer = AIOKafkaProducer(**producer_options(settings), linger_ms=20,
                                max_batch_size=256 * 1024)
    await producer.start()
    started = time.monotonic()
    try:
        pending = []
        for i, (topic, key, value) in enumerate(messages):
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending = []
                progress.maybe("producing", i + 1, len(messages), started)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def raw_stage(settings: Settings, group: str, total: int, progress: Progress) -> StageResult:
    """Stage 1: aiokafka alone, in this process, batches of ``STREAMPROC_BATCH_SIZE``."""
    consumer = AIOKafkaConsumer(*settings.topics.inputs, **kafka_options(settings),
                                group_id=group, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    began = time.monotonic()
    await consumer.start()
    try:
        count = first_count = 0
        first_at = last_at = last_progress = time.monotonic()
        first_cpu = cpu_sample([os.getpid()])
        while count < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=settings.batch_size)
            now = time.monotonic()
            got = sum(len(msgs) for msgs in batch.values())
            if got:
                if not count:
                    first_at, first_count = now, got
                    first_cpu = cpu_sample([os.getpid()])
                count += got
                last_at = last_progress = now
                progress.maybe("raw aiokafka", count, total, first_at)
            elif now - last_progress > STALL_S:
                raise BenchError(f"raw aiokafka consumer: no message for {STALL_S:.0f}s after "
                                 f"{count:,} of {total:,}")
        last_cpu = cpu_sample([os.getpid()])  # the loop ends with the last message's fetch
    finally:
        await consumer.stop()
    if last_at <= first_at:
        raise BenchError("raw aiokafka consumer got everything in one fetch: use more --events")
    rate = (count - first_count) / (last_at - first_at)
    return StageResult("raw_aiokafka", 0, count, rate, last_at - began, "first-last message",
                       cpu=cores_between(first_cpu, last_cpu, last_at - first_at))


async def _wait_stable(probe: KafkaProbe, group: str, members: int, workers: Sequence[Worker],
                       stage: str) -> float:
    """Wait until ``group`` is Stable with ``members`` members; return when (monotonic)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        check_alive(workers)
        state, n = await probe.group_state(group)
        if state == "Stable" and n == members:
            return time.monotonic()
        await asyncio.sleep(POLL_S)
    raise BenchError(f"{stage}: the workers did not form a stable group of {members} within "
                     f"{READY_TIMEOUT_S:.0f}s; see their logs")


async def _wait_committed(probe: KafkaProbe, group: str, tps: Sequence[TopicPartition],
                          total: int, workers: Sequence[Worker], stage: str,
                          progress: Progress, started: float,
                          cpu: list[CpuSample] | None = None) -> list[Sample]:
    """Poll the group's committed offsets until they reach ``total``; return the changes (and
    append to ``cpu`` the CPU used so far by the workers and the machine at each)."""
    samples: list[Sample] = []
    committed = -1
    changed_at = time.monotonic()
    while committed < total:
        check_alive(workers)
        now_committed = await probe.committed_total(group, tps)
        now = time.monotonic()
        if now_committed != committed:
            committed, changed_at = now_committed, now
            samples.append((now, committed))
            if cpu is not None:
                cpu.append(cpu_sample([w.proc.pid for w in workers]))
            progress.maybe(stage, committed, total, started)
        elif now - changed_at > STALL_S:
            raise BenchError(f"{stage}: no offset committed for {STALL_S:.0f}s at {committed:,} "
                             f"of {total:,} events")
        await asyncio.sleep(POLL_S)
    return samples


OUTPUTS = ("decisions", "segments", "deadletter")


def _output_partitions(settings: Settings) -> dict[str, list[TopicPartition]]:
    return {name: partitions_of([getattr(settings.topics, name)], settings.partitions)
            for name in OUTPUTS}


async def _output_offsets(probe: KafkaProbe,
                          settings: Settings) -> dict[str, dict[TopicPartition, int]]:
    return {name: await probe.end_offsets(tps)
            for name, tps in _output_partitions(settings).items()}


def distinct_records(records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    """How many different (key, value) records ``records`` holds.

    A batch redelivered after a rebalance or a crash publishes its outbox again: the same
    records, byte for byte (a decision keeps its id and time, a segment move its trigger), so
    they count once here. Two different records for one event count twice.

    >>> move = (b"c1", b'{"segmentation":"rfm","to":"prospect","trigger":{"offset":0}}')
    >>> other = (b"c1", b'{"segmentation":"rfm","to":"champion","trigger":{"offset":0}}')
    >>> distinct_records([move, move, other, (b"c1", None), (b"c1", None)])
    3
    """
    seen = set()
    for key, value in records:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(b"-" if key is None else b"k%d:" % len(key) + key)
        digest.update(b"-" if value is None else b"v" + value)
        seen.add(digest.digest())
    return len(seen)


async def _read_between(settings: Settings, start: Mapping[TopicPartition, int],
                        end: Mapping[TopicPartition, int]) -> list[tuple[bytes | None,
                                                                          bytes | None]]:
    """(key, value) of every record from ``start`` up to ``end`` of each partition."""
    tps = [tp for tp in end if end[tp] > start.get(tp, 0)]
    if not tps:
        return []
    consumer = AIOKafkaConsumer(**kafka_options(settings), enable_auto_commit=False)
    await consumer.start()
    records: list[tuple[bytes | None, bytes | None]] = []
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, start.get(tp, 0))
        deadline = time.monotonic() + STALL_S
        left = set(tps)
        while left:
            if time.monotonic() > deadline:
                raise BenchError(f"could not read the stage's records of {sorted(left)}")
            batch = await consumer.getmany(*left, timeout_ms=500)
            for tp, messages in batch.items():
                records.extend((m.key, m.value) for m in messages if m.offset < end[tp])
            # The position, not the last record: it passes offsets that hold no record.
            left = {tp for tp in left if await consumer.position(tp) < end[tp]}
    finally:
        await consumer.stop()
    return records


async def _distinct_between(settings: Settings,
                            before: Mapping[str, Mapping[TopicPartition, int]],
                            after: Mapping[str, Mapping[TopicPartition, int]]) -> dict[str, int]:
    return {name: distinct_records(await _read_between(settings, before[name], after[name]))
            for name in after}


@dataclass
class WorkerRun:
    """What a worker stage needs: settings (group = app id), environment, where logs go."""

    settings: Settings
    prefix: str
    base_env: Mapping[str, str]
    logs: Path
    # Where the pipeline's learner runs: "process" (one `streamproc learner` beside the workers,
    # which run with STREAMPROC_LEARNER=off: the recommended deployment) or "worker".
    learner: str = "process"


def start_stage(stage: str, argv: Sequence[str], count: int, run: WorkerRun,
                pipeline: bool) -> list[Worker]:
    """A stage's processes: ``count`` workers and, for the pipeline with its learner in a
    process of its own, that learner (started first, stopped with the workers)."""
    env = worker_env(run.base_env, run.settings, run.prefix)
    if not pipeline:
        return start_workers(stage, argv, count, env, run.logs)
    env["STREAMPROC_LEARNER"] = "off" if run.learner == "process" else "worker"
    learner = (start_workers(f"{stage}-learner", LEARNER, 1, env, run.logs)
               if run.learner == "process" else [])
    return learner + start_workers(stage, argv, count, env, run.logs)


async def worker_stage(stage: str, argv: Sequence[str], count: int, run: WorkerRun,
                       probe: KafkaProbe, total: int, progress: Progress,
                       pipeline: bool = True) -> StageResult:
    """Stages 2 and 3: ``count`` worker processes until ``total`` input offsets are committed
    (all of them, except in the profiled run)."""
    settings = run.settings
    tps = partitions_of(settings.topics.inputs, settings.partitions)
    before = await _output_offsets(probe, settings)
    started = time.monotonic()
    workers = start_stage(stage, argv, count, run, pipeline)
    cpu_samples: list[CpuSample] = []
    try:
        stable_at = await _wait_stable(probe, settings.app_id, count, workers, stage)
        samples = await _wait_committed(probe, settings.app_id, tps, total, workers, stage,
                                        progress, started, cpu_samples)
        finished = time.monotonic()
    finally:
        stop_workers(workers)
    after = await _output_offsets(probe, settings)
    distinct = await _distinct_between(settings, before, after)
    try:
        first, last, method = span = steady_span(samples, stable_at, total)
    except ValueError as exc:
        raise BenchError(f"{stage}: {exc}") from None
    # The cores used over the same commits as the rate (none when it counts from stable_at).
    cpu = (cores_between(cpu_samples[first], cpu_samples[last],
                         samples[last][0] - samples[first][0]) if first is not None else {})
    rate = rate_over(samples, stable_at, span)
    written = {name: sum(after[name].values()) - sum(before[name].values()) for name in after}
    return StageResult(stage, count, samples[-1][1], rate, finished - started, method,
                       written, distinct, cpu)


@dataclass
class LatencyResult:
    offered_per_s: int
    achieved_per_s: float
    events: int
    decisions: int
    measured: int  # decisions whose trigger was sent after the warm-up
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    # Of the latency, the part until the worker started the event's batch (the decision's
    # latency_ms: Kafka timestamp to batch start), p50 and p99: the rest is processing,
    # publishing and delivery.
    queued_p50_ms: float
    queued_p99_ms: float
    drain_s: float  # from the last send to the last event committed
    # The floor at the same rate (floor_stage): "bare_faust" and "raw_aiokafka" percentiles.
    floor: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in vars(self).items()}


class _Reader:
    """Reads topic-partitions from the start with a consumer of its own (no group), noting
    when each record arrived here, by the (topic, partition, offset) of the event it is for."""

    def __init__(self, settings: Settings, tps: Sequence[TopicPartition]) -> None:
        self.consumer = AIOKafkaConsumer(**kafka_options(settings),
                                         enable_auto_commit=False, fetch_max_wait_ms=100)
        self.tps = list(tps)
        self.arrived: dict[tuple[str, int, int], float] = {}
        self.count = 0

    def note(self, message: Any, now: float) -> None:
        self.arrive((message.topic, message.partition, message.offset), now)

    def arrive(self, key: tuple[str, int, int], now: float) -> None:
        self.arrived.setdefault(key, now)
        self.count += 1

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_beginning(*self.tps)

    async def poll(self, timeout_ms: int) -> None:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms)
        now = time.time()
        for msgs in batch.values():
            for m in msgs:
                self.note(m, now)

    async def read_until(self, ends: Mapping[TopicPartition, int]) -> None:
        """Read until the consumer's position reaches ``ends`` on every partition."""
        deadline = time.monotonic() + STALL_S
        for tp, end in ends.items():
            while await self.consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    raise BenchError(f"{tp.topic}: could not read up to its end offsets")
                await self.poll(200)

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll(100)

    async def close(self) -> None:
        await self.consumer.stop()


class _Decisions(_Reader):
    """Reads the decisions topic; a decision counts for the event that triggered it."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, partitions_of([settings.topics.decisions], settings.partitions))
        # The worker's own figure: its batch's start minus the event's Kafka timestamp.
        self.worker_ms: dict[tuple[str, int, int], float] = {}

    def note(self, message: Any, now: float) -> None:
        if message.value is None:
            return
        record = orjson.loads(message.value)
        t = record["trigger"]
        key = (t["topic"], t["partition"], t["offset"])
        self.arrive(key, now)
        self.worker_ms.setdefault(key, float(record.get("latency_ms", 0)))


async def _paced_send(producer: AIOKafkaProducer, messages: Sequence[Message], rate: int,
                      sent_at: dict[tuple[str, int, int], float], progress: Progress,
                      stage: str) -> float:
    """Send ``messages`` at ``rate`` per second; return the elapsed seconds."""
    loop = asyncio.get_running_loop()
    pacer = Pacer(float(rate), loop.time())
    started = loop.time()
    cap = max(1, rate // 50)  # back to the event loop every ~20 ms of traffic
    i = 0

    def record(sent: float) -> Any:
        def done(fut: asyncio.Future[Any]) -> None:
            if not fut.cancelled() and fut.exception() is None:
                md = fut.result()
                sent_at[(md.topic, md.partition, md.offset)] = sent
        return done

    while i < len(messages):
        now = loop.time()
        n = min(pacer.available(now), cap, len(messages) - i)
        if n <= 0:
            await asyncio.sleep(max(pacer.delay(now), 0.001))
            continue
        for topic, key, value in messages[i:i + n]:
            sent = time.time()
            fut = await producer.send(topic, value, key=key)
            fut.add_done_callback(record(sent))
        i += n
        pacer.take(n)
        progress.maybe(stage, i, len(messages), started)
    await producer.flush()
    return loop.time() - started


@dataclass
class _Paced:
    sent_at: dict[tuple[str, int, int], float]  # event (topic, partition, offset) -> epoch s
    first_send: float
    elapsed: float  # of the sending
    drain: float  # from the last send to every input offset committed


async def _paced_run(rate: int, messages: Sequence[Message], run: WorkerRun, probe: KafkaProbe,
                     progress: Progress, stage: str, workers: Sequence[Worker],
                     reader: _Reader) -> _Paced:
    """Send ``messages`` at ``rate`` to the ``workers`` (one, of group ``run.settings.app_id``)
    once their group is stable, until it has committed every input offset; ``reader`` notes
    what arrives meanwhile, then reads up to the end of its topics. Stops the workers."""
    settings = run.settings
    tps = partitions_of(settings.topics.inputs, settings.partitions)
    producer = AIOKafkaProducer(**producer_options(settings), linger_ms=0)
    sent_at: dict[tuple[str, int, int], float] = {}
    stop = asyncio.Event()
    try:
        await _wait_stable(probe, settings.app_id, 1, workers, stage)
        await reader.start()
        await producer.start()
        follower = asyncio.create_task(reader.follow(stop))
        first_send = time.time()
        elapsed = await _paced_send(producer, messages, rate, sent_at, progress, stage)
        sent_done = time.monotonic()
        await _wait_committed(probe, settings.app_id, tps, len(messages), workers,
                              f"{stage}, draining", progress, sent_done)
        drain = time.monotonic() - sent_done
        stop.set()
        await follower
        await reader.read_until(await probe.end_offsets(reader.tps))
    finally:
        stop.set()
        stop_workers(workers)
        await producer.stop()
        await reader.close()
    return _Paced(sent_at, first_send, elapsed, drain)


def _measured(paced: _Paced, arrived: Mapping[tuple[str, int, int], float],
              warmup_s: float) -> list[tuple[str, int, int]]:
    """The events sent after the warm-up whose arrival was seen."""
    steady_from = paced.first_send + warmup_s
    return [k for k, sent in paced.sent_at.items() if k in arrived and sent >= steady_from]


def delays(sent_at: Mapping[tuple[str, int, int], float],
           arrived: Mapping[tuple[str, int, int], float],
           keys: Sequence[tuple[str, int, int]]) -> dict[str, float]:
    """Percentiles of arrival minus send, in ms, over ``keys``.

    >>> k = [("t", 0, i) for i in range(100)]
    >>> d = delays({x: 0.0 for x in k}, {x: x[2] / 1000 for x in k}, k)
    >>> d["measured"], d["p50_ms"], d["p99_ms"], d["max_ms"]
    (100, 49.0, 98.0, 99.0)
    """
    ms = [(arrived[k] - sent_at[k]) * 1000 for k in keys]
    return {"measured": len(ms), **{f"{name}_ms": round(percentile(ms, q), 2) for name, q in (
        ("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))}}


async def floor_stage(rate: int, messages: Sequence[Message], warmup_s: float, run: WorkerRun,
                      probe: KafkaProbe, progress: Progress) -> dict[str, dict[str, float]]:
    """Stage 4's floor: what the framework alone adds to the latency. The same paced events go
    to the bare Faust app (an event arrives when the app's agent is handed its batch: Faust's
    delivery and the batch wait, no processing) and to a raw aiokafka consumer in this process
    (an event arrives when ``getmany`` returns it)."""
    settings = run.settings
    stage = f"latency floor at {rate:,}/s"
    arrivals = run.logs / f"floor-{rate}-arrivals.json"
    workers = start_stage(f"floor-{rate}", (*BARE_FAUST, "--arrivals", str(arrivals)), 1, run,
                          pipeline=False)
    raw = _Reader(settings, partitions_of(settings.topics.inputs, settings.partitions))
    paced = await _paced_run(rate, messages, run, probe, progress, stage, workers, raw)
    try:
        bare = {(t, p, o): at for t, p, o, at in orjson.loads(arrivals.read_bytes())}
    except (OSError, orjson.JSONDecodeError, ValueError) as exc:
        raise BenchError(f"{stage}: the bare Faust app left no readable arrivals file "
                         f"({arrivals}: {exc}); see its log") from None
    out = {}
    for name, arrived in (("raw_aiokafka", raw.arrived), ("bare_faust", bare)):
        keys = _measured(paced, arrived, warmup_s)
        if not keys:
            raise BenchError(f"{stage}: {name} saw no event sent after the {warmup_s}s "
                             "warm-up; send for longer (--latency-seconds)")
        out[name] = delays(paced.sent_at, arrived, keys)
    return out


async def latency_stage(rate: int, messages: Sequence[Message], warmup_s: float, run: WorkerRun,
                        probe: KafkaProbe, progress: Progress) -> LatencyResult:
    """Stage 4: one pipeline worker, events sent at ``rate``; send-to-decision latency."""
    stage = f"latency at {rate:,}/s"
    workers = start_stage(f"latency-{rate}", PIPELINE, 1, run, pipeline=True)
    decisions = _Decisions(run.settings)
    paced = await _paced_run(rate, messages, run, probe, progress, stage, workers, decisions)
    measured = _measured(paced, decisions.arrived, warmup_s)
    if not measured:
        raise BenchError(f"{stage}: no decision was triggered after the {warmup_s}s warm-up; "
                         "send for longer (--latency-seconds)")
    d = delays(paced.sent_at, decisions.arrived, measured)
    queued = [decisions.worker_ms[k] for k in measured]
    return LatencyResult(rate, len(messages) / paced.elapsed, len(messages), decisions.count,
                         len(measured), d["p50_ms"], d["p95_ms"], d["p99_ms"], d["max_ms"],
                         percentile(queued, 0.5), percentile(queued, 0.99), paced.drain)
