"""Integration fixtures: the real local Kafka and Redis (``streamproc stack up``), never mocked.

Each test gets its own topics (a unique prefix, 3 partitions) and its own consumer group, and
uses Redis database 15 with customer ids unique to the test, so tests neither see each other's
data nor a developer's. When Kafka or Redis is not reachable the tests fail (not skip) with
what to run: a skipped integration test is a missing one.

With ``pytest --cluster-stack`` (tests/conftest.py) the tests marked ``core`` run on the cluster
stack instead: :func:`stack_env` and :func:`test_redis` give the session's three-broker Kafka
(:func:`kafka_cluster`; topics of replication factor 3, ``min.insync.replicas`` 2) and its Redis
Cluster (:func:`redis_cluster`, database 0: the customer ids unique to each test keep tests
apart there).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streamproc.errors import StackError
from streamproc.redis_options import cluster_client
from streamproc.settings import Settings
from streamproc.stack import ensure_topics, kafka
from streamproc.stack import redis_cluster as redis_cluster_stack
from streamproc.stack.process import signal_process
from streamproc.stack.topics import wait_group_coordinator
from streamproc.tail import topic_partitions

pytestmark = pytest.mark.integration

BASE = Settings.from_env()
TEST_REDIS_DB = 15
# The tests of everything but consent run as a shop that takes personalisation as granted until
# withdrawn (the shipped default denies it: test_consent.py); every worker a test starts gets it.
CONSENT_GRANTED = {"STREAMPROC_CONSENT_DEFAULTS": "personalisation=granted"}
REPO = Path(__file__).resolve().parents[2]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def on_cluster_stack(request: pytest.FixtureRequest) -> bool:
    """Whether this run is ``pytest --cluster-stack``."""
    return bool(request.config.getoption("--cluster-stack"))


@pytest.fixture(scope="session", autouse=True)
def real_stack(request: pytest.FixtureRequest) -> None:
    if on_cluster_stack(request):  # the session's own cluster instead, started before any test
        request.getfixturevalue("kafka_cluster")
        request.getfixturevalue("redis_cluster")
        return
    missing = [
        f"{name} at {host}:{port}"
        for name, (host, port) in (("Kafka", BASE.kafka_host_port), ("Redis", BASE.redis_host_port))
        if not _reachable(host, port)
    ]
    if missing:
        pytest.fail(f"integration tests need {' and '.join(missing)}: run `streamproc stack up` "
                    "(the README's test command does it for you)", pytrace=False)


class DeliveredSends:
    """A test's producer (acks=all, idempotent) that remembers every send: leaving
    :meth:`Env.producer` waits until the broker has each record, so a failed send raises
    instead of passing for an event the worker lost."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.sent: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, value: bytes | None, key: bytes | None = None) -> None:
        self.sent.append(await self.producer.send(topic, value, key=key))

    async def flush(self) -> None:
        await self.producer.flush()


@dataclass
class Env:
    """One test's isolated slice of the real stack."""

    settings: Settings
    env: dict[str, str]
    tmp: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def customer(self, name: str = "c") -> str:
        return f"{name}-{uuid.uuid4().hex[:10]}"

    def start_worker(self, command: str = "worker",
                     settings: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """A ``streamproc worker`` (or another long-running command: ``learner``), logging to
        worker-N.log, stopped at the end of the test; ``settings`` overrides variables."""
        log = open(self.tmp / f"worker-{len(self.workers)}.log", "wb")  # noqa: SIM115
        env = {**self.env, **(settings or {})}
        proc = subprocess.Popen([sys.executable, "-m", "streamproc.cli", command], env=env,
                                stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp)
        self.workers.append(proc)
        return proc

    def worker_log(self) -> str:
        return "\n".join((p.read_text(errors="replace")[-4000:])
                         for p in sorted(self.tmp.glob("worker-*.log")))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "streamproc.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=60, cwd=self.tmp)

    @contextlib.asynccontextmanager
    async def producer(self) -> AsyncIterator[DeliveredSends]:
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all",
                                    enable_idempotence=True)
        await producer.start()
        try:
            sends = DeliveredSends(producer)
            yield sends
            await asyncio.gather(*sends.sent)
        finally:
            await producer.stop()

    async def produce(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        async with self.producer() as sends:
            for key, value in records:
                await sends.send(topic, value, key=key)

    async def produce_events(self, topic: str, events: list[dict[str, Any]]) -> None:
        await self.produce(topic, [(e["customer_id"].encode(), orjson.dumps(e)) for e in events])

    async def consume_until(
        self, topic: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 60.0,
    ) -> list[dict[str, Any]]:
        """Every record of ``topic`` from the beginning, read until ``done(records)`` holds."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap,
                                    enable_auto_commit=False)
        await consumer.start()
        records: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(timeout):
                partitions = await topic_partitions(self.settings, topic, wait_s=10)
                assert partitions, f"topic {topic} does not exist"
                tps = [TopicPartition(topic, p) for p in partitions]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                while not done(records):
                    batch = await consumer.getmany(timeout_ms=500)
                    for msgs in batch.values():
                        records.extend(
                            {"key": m.key, "value": None if m.value is None
                             else orjson.loads(m.value), "partition": m.partition}
                            for m in msgs
                        )
                    for proc in self.workers:
                        assert proc.poll() is None or proc.returncode == -9, (
                            f"worker exited with {proc.returncode}:\n{self.worker_log()}")
        except TimeoutError:
            pytest.fail(f"gave up after {timeout}s waiting on {topic}; read {len(records)} "
                        f"records. Worker log:\n{self.worker_log()}")
        finally:
            await consumer.stop()
        return records


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM a test's process if it still runs, SIGKILL it after ``timeout`` s; reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def isolated_env(tmp_path: Path, kafka_bootstrap: str = BASE.kafka_bootstrap,
                       redis_url: str | None = None, **settings: str) -> AsyncIterator[Env]:
    """A test's own topics and group on ``kafka_bootstrap``, its state on ``redis_url`` (the
    stack's Redis, database 15, by default); ``settings`` adds STREAMPROC_* variables (names
    without the prefix). Its workers are stopped and its topics deleted at the end."""
    run = uuid.uuid4().hex[:8]
    prefix = f"it-{run}."
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    env.update({
        "STREAMPROC_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "STREAMPROC_REDIS_URL": redis_url or _test_redis_url(),
        "STREAMPROC_TOPIC_PREFIX": prefix,
        "STREAMPROC_APP_ID": f"it-{run}",
        "STREAMPROC_PARTITIONS": "3",
        "STREAMPROC_STACK_DIR": str(tmp_path / "stack"),
        "STREAMPROC_LOG_LEVEL": "info",
        **CONSENT_GRANTED,
        **{f"STREAMPROC_{name}": value for name, value in settings.items()},
        "PYTHONPATH": str(REPO),
    })
    resolved = Settings.from_env(env)
    await ensure_topics(resolved)
    e = Env(resolved, env, tmp_path)
    try:
        yield e
    finally:
        for proc in e.workers:
            stop_process(proc, 20)
        admin = AIOKafkaAdminClient(bootstrap_servers=resolved.kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_topics(list(resolved.topics.all()))
        finally:
            await admin.close()


def _test_redis_url() -> str:
    host, port = BASE.redis_host_port
    return f"redis://{host}:{port}/{TEST_REDIS_DB}"


# What the topics of a test on the cluster stack are created with, as on a production cluster.
REPLICATED = {"REPLICATION_FACTOR": "3", "MIN_INSYNC_REPLICAS": "2"}


@dataclass(frozen=True)
class StackUnderTest:
    """Where a test's workers run: the single-node stack, or the session's cluster."""

    kafka_bootstrap: str
    redis_url: str
    settings: dict[str, str]  # STREAMPROC_* variables (without the prefix) its topics need
    redis_cluster: LocalCluster | None = None


@pytest.fixture
def test_stack(request: pytest.FixtureRequest) -> StackUnderTest:
    """The single-node stack, or with ``--cluster-stack`` the session's three brokers and
    Redis Cluster (a plain fixture: the cluster fixtures start outside the test's loop)."""
    if not on_cluster_stack(request):
        return StackUnderTest(BASE.kafka_bootstrap, _test_redis_url(), {})
    kafka_cluster: KafkaCluster = request.getfixturevalue("kafka_cluster")
    redis_cluster: LocalCluster = request.getfixturevalue("redis_cluster")
    return StackUnderTest(kafka_cluster.bootstrap, redis_cluster.url, REPLICATED, redis_cluster)


@pytest.fixture
async def stack_env(tmp_path: Path, test_stack: StackUnderTest) -> AsyncIterator[Env]:
    async with isolated_env(tmp_path, test_stack.kafka_bootstrap, test_stack.redis_url,
                            **test_stack.settings) as env:
        yield env


# The failover tests' cluster sits this far above the first extra port of the configured stack
# (STREAMPROC_KAFKA_EXTRA_PORT, default the Kafka port + 8), clear of a `stack up
# --kafka-brokers 3` of the same settings: ports +10 to +15.
CLUSTER_PORT_OFFSET = 10


@dataclass(frozen=True)
class KafkaCluster:
    """Three KRaft brokers of the test session, each a controller too (the stack's code)."""

    settings: Settings  # the cluster's stack settings (its stack dir, ports, three brokers)
    pids: dict[int, int]  # node id -> the broker's JVM

    @property
    def bootstrap(self) -> str:
        return kafka.bootstrap_of(self.settings)

    def revive(self, node: int) -> None:
        """Start a broker a test killed again, on its data, and wait until it is ready: the
        failover tests leave three brokers for the tests after them."""
        out = io.StringIO()
        jvm = kafka.prepare(self.settings, out)
        self.pids[node] = kafka.start(self.settings, jvm, out, node=node,
                                      cluster=kafka.cluster_id(self.settings))
        kafka.wait_ready(self.settings, self.pids[node], out, node)


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """A three-broker cluster started as `streamproc stack up --kafka-brokers 3` starts one,
    on its own ports and stack dir, for the session; stopped at its end. A test may kill a
    broker (the failover tests do) and :meth:`KafkaCluster.revive` it."""
    host = BASE.kafka_host_port[0]
    first = (BASE.kafka_extra_port or BASE.kafka_host_port[1] + 8) + CLUSTER_PORT_OFFSET
    settings = Settings(kafka_bootstrap=f"{host}:{first}", kafka_controller_port=first + 1,
                        kafka_brokers=3, kafka_extra_port=first + 2, kafka_heap="384m",
                        stack_dir=tmp_path_factory.mktemp("kafka-cluster"),
                        cache_dir=BASE.cache_dir)
    taken = [s.detail for s in (kafka.status(settings, n) for n in (1, 2, 3))
             if s.state in ("port-taken", "other-stack")]
    if taken:
        pytest.fail(f"the test cluster's ports {first}-{first + 5} are taken: {taken}; move "
                    "them with STREAMPROC_KAFKA_EXTRA_PORT", pytrace=False)
    out = io.StringIO()
    pids: dict[int, int] = {}
    try:
        jvm = kafka.prepare(settings, out)
        cluster = kafka.cluster_id(settings)
        pids = {n: kafka.start(settings, jvm, out, node=n, cluster=cluster) for n in (1, 2, 3)}
        for node, pid in pids.items():
            kafka.wait_ready(settings, pid, out, node)
        asyncio.run(wait_group_coordinator(replace(settings,
                                                   kafka_bootstrap=kafka.bootstrap_of(settings))))
        yield KafkaCluster(settings, pids)
    finally:
        for pid in pids.values():  # throw-away data: no controlled shutdown to wait for
            signal_process(pid, signal.SIGKILL)
        kafka.stop(settings, out)  # waits for them to die, removes the pid files


@pytest.fixture
async def test_redis(test_stack: StackUnderTest) -> AsyncIterator[aioredis.Redis]:
    """A client of the Redis the test's workers use (:func:`stack_env`): database 15 of the
    stack's, or with ``--cluster-stack`` a cluster client of the session's Redis Cluster."""
    if test_stack.redis_cluster is not None:
        client = test_stack.redis_cluster.client()
    else:
        client = aioredis.from_url(test_stack.redis_url)
    yield client
    await client.aclose()



@dataclass(frozen=True)
class LocalCluster:
    """The session's Redis Cluster: 3 primaries with one replica each, on 6 ports from
    STREAMPROC_REDIS_CLUSTER_PORT, its files in a directory of the session's own."""

    settings: Settings
    url: str

    def client(self) -> Any:
        return cluster_client(Settings(redis_url=self.url), decode_responses=False)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    settings = Settings(redis_cluster_port=BASE.redis_cluster_port,
                        stack_dir=tmp_path_factory.mktemp("redis-cluster-stack"))
    out = io.StringIO()
    try:
        url = redis_cluster_stack.up(settings, 3, out)
    except StackError as exc:
        redis_cluster_stack.stop(settings, out)
        pytest.fail(f"could not start a local Redis Cluster on ports from "
                    f"{settings.redis_cluster_port} (STREAMPROC_REDIS_CLUSTER_PORT): {exc}",
                    pytrace=False)
    try:
        yield LocalCluster(settings, url)
    finally:
        redis_cluster_stack.stop(settings, out)


@pytest.fixture
async def cluster_redis(redis_cluster: LocalCluster) -> AsyncIterator[Any]:
    """A client of the session's cluster, emptied first (it serves the cluster tests only)."""
    client = redis_cluster.client()
    await client.flushall(target_nodes=client.PRIMARIES)
    yield client
    await client.aclose()


@pytest.fixture
async def cluster_env(stack_env: Env, redis_cluster: LocalCluster, cluster_redis: Any) -> Env:
    """:func:`stack_env` with its workers on the session's Redis Cluster."""
    stack_env.env["STREAMPROC_REDIS_URL"] = redis_cluster.url
    stack_env.settings = Settings.from_env(stack_env.env)
    return stack_env
