"""streamproc against a broker that speaks only SASL over TLS, with client certificates.

The broker is this test's own (free ports, its own dir, as in test_outages.py): one KRaft node
whose client listener is SASL_SSL, asking for a client certificate (mutual TLS) and accepting
PLAIN and SCRAM-SHA-256 logins. The certificates and passwords are made here, at run time.
Through it go the topic creation, a worker (start-up check, Faust consumer, emitter,
``/readyz``), a producer, a consumer and ``streamproc tail``; a wrong password and an unknown
CA each stop a worker at its start-up check with one line naming the settings to check.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streamproc.kafka_options import kafka_options
from streamproc.settings import Settings
from streamproc.stack import ensure_topics, kafka

from .conftest import BASE, CONSENT_GRANTED, REPO, TEST_REDIS_DB, stop_process
from .polling import until
from .test_outages import events
from .test_stack import free_ports
from .test_web import get

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Secured:
    settings: Settings  # alice, PLAIN, over SASL_SSL with her client certificate
    env: dict[str, str]  # the same as STREAMPROC_* variables, for streamproc processes
    pki: Path
    scram_password: str  # carol's, SCRAM-SHA-256


def openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path, store_password: str) -> None:
    """A CA; the broker's key and certificate (for 127.0.0.1) in a PKCS12 keystore; a client's
    key and certificate in PEM files."""
    openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=streamproc-test-ca")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("broker", "client"):
        openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext")
    openssl(d, "pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key",
            "-certfile", "ca.pem", "-name", "broker", "-out", "broker.p12",
            "-passout", f"pass:{store_password}")


def jaas_plain(users: dict[str, str], admin: str) -> str:
    listed = " ".join(f'user_{name}="{pw}"' for name, pw in users.items())
    return ('org.apache.kafka.common.security.plain.PlainLoginModule required '
            f'username="admin" password="{admin}" {listed};')


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("secured")
    pki = root / "pki"
    pki.mkdir()
    store_pw, admin_pw, alice_pw, carol_pw = (secrets.token_urlsafe(12) for _ in range(4))
    make_pki(pki, store_pw)
    broker, controller = free_ports(2)
    run = uuid.uuid4().hex[:8]
    host, redis_port = BASE.redis_host_port
    env = {
        "STREAMPROC_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker}",
        "STREAMPROC_KAFKA_CONTROLLER_PORT": str(controller),
        "STREAMPROC_KAFKA_HEAP": "512m",
        "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMPROC_KAFKA_SASL_MECHANISM": "PLAIN",
        "STREAMPROC_KAFKA_SASL_USERNAME": "alice",
        "STREAMPROC_KAFKA_SASL_PASSWORD": alice_pw,
        "STREAMPROC_KAFKA_SSL_CAFILE": str(pki / "ca.pem"),
        "STREAMPROC_KAFKA_SSL_CERTFILE": str(pki / "client.pem"),
        "STREAMPROC_KAFKA_SSL_KEYFILE": str(pki / "client.key"),
        "STREAMPROC_REDIS_URL": f"redis://{host}:{redis_port}/{TEST_REDIS_DB}",
        "STREAMPROC_TOPIC_PREFIX": f"sec-{run}.",
        "STREAMPROC_APP_ID": f"sec-{run}",
        "STREAMPROC_PARTITIONS": "2",
        "STREAMPROC_STACK_DIR": str(root / "stack"),
        "STREAMPROC_CACHE_DIR": str(BASE.cache_dir),  # the jars already downloaded
        **CONSENT_GRANTED,
    }
    settings = Settings.from_env(env)
    extra = {
        "listeners": f"SASL_SSL://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{broker}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas_plain(
            {"admin": admin_pw, "alice": alice_pw}, admin_pw),
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(pki / "broker.p12"),
        "ssl.keystore.password": store_pw,
        "ssl.key.password": store_pw,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(pki / "ca.pem"),
        # A SASL_SSL listener ignores the plain ssl.client.auth (KIP-684): the listener's own.
        "listener.name.sasl_ssl.ssl.client.auth": "required",
    }
    out = io.StringIO()
    jvm = kafka.prepare(settings, out)
    pid = kafka.start(settings, jvm, out, extra=extra, format_args=[
        "--add-scram", f"SCRAM-SHA-256=[name=carol,password={carol_pw}]"])
    try:
        kafka.wait_ready(settings, pid, out)  # its metadata request is over SASL_SSL too
        asyncio.run(ensure_topics(settings))
        yield Secured(settings, env, pki, carol_pw)
    finally:
        kafka.stop(settings, out)


def process_env(secured: Secured, **changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    env.update(secured.env, PYTHONPATH=str(REPO), STREAMPROC_LOG_LEVEL="info", **changes)
    return env


def cli(secured: Secured, *args: str, timeout: float = 60,
        **changes: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamproc.cli", *args],
                          env=process_env(secured, **changes), capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


async def test_a_worker_and_the_tools_work_over_sasl_ssl(secured: Secured,
                                                         tmp_path: Path) -> None:
    settings = secured.settings
    [web] = free_ports(1)
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streamproc.cli", "worker"],
            env=process_env(secured, STREAMPROC_WEB_PORT=str(web)), stdout=out,
            stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        # /readyz: the probe's own Kafka client answers over SASL_SSL.
        await until("the worker is ready", lambda: (worker.poll() is None
                    and get(web, "/readyz")[0] == 200) or worker.poll() is not None, 90,
                    lambda: log.read_text(errors="replace")[-5000:])
        assert worker.poll() is None, log.read_text(errors="replace")[-5000:]

        customer = f"sec-{uuid.uuid4().hex[:8]}"
        producer = AIOKafkaProducer(**kafka_options(settings), acks="all")
        await producer.start()
        try:
            for event in events(customer, "tls"):
                await producer.send_and_wait(settings.topics.browsing, orjson.dumps(event),
                                             key=customer.encode())
        finally:
            await producer.stop()

        # The worker's Faust consumer read them and its emitter published the decision.
        consumer = AIOKafkaConsumer(**kafka_options(settings), enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(settings.topics.decisions, p)
                   for p in range(settings.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            found: list[dict[str, object]] = []
            deadline = time.monotonic() + 60
            while not found and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                found = [d for records in batches.values() for r in records
                         if r.value and (d := orjson.loads(r.value))["customer_id"] == customer]
            assert found, f"no decision for {customer}\n" + log.read_text(errors="replace")[-5000:]
        finally:
            await consumer.stop()

        tail = await asyncio.to_thread(cli, secured, "tail", "decisions", "--from-beginning",
                                       "--customer", customer, "--max", "1", "--json")
        assert tail.returncode == 0, tail.stderr
        assert orjson.loads(tail.stdout.splitlines()[0])["customer_id"] == customer
    finally:
        stop_process(worker, 30)
    assert worker.returncode == 0, log.read_text(errors="replace")[-5000:]
    assert "Sending username and password in the clear" not in log.read_text(errors="replace")


async def test_scram_sha_256_logs_in_too(secured: Secured) -> None:
    settings = Settings.from_env({**secured.env, "STREAMPROC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                                  "STREAMPROC_KAFKA_SASL_USERNAME": "carol",
                                  "STREAMPROC_KAFKA_SASL_PASSWORD": secured.scram_password})
    producer = AIOKafkaProducer(**kafka_options(settings), acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(settings.topics.segments, b"scram", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**kafka_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(sent.topic, sent.partition)
        consumer.assign([tp])
        consumer.seek(tp, sent.offset)
        record = await asyncio.wait_for(consumer.getone(), 30)
        assert record.value == b"scram"
    finally:
        await consumer.stop()


@pytest.mark.parametrize(("changes", "expected"), [
    ({"STREAMPROC_KAFKA_SASL_PASSWORD": "not-the-password"},
     "refused the SASL login of user 'alice' (mechanism PLAIN)"),
    ({"STREAMPROC_KAFKA_SSL_CAFILE": ""}, "failed the TLS handshake"),
], ids=["wrong-password", "unknown-ca"])
def test_a_refused_worker_exits_at_once_with_one_clear_line(
        secured: Secured, changes: dict[str, str], expected: str) -> None:
    began = time.monotonic()
    # Given 60 s to reach Kafka, it exits long before: a refusal is not retried.
    done = cli(secured, "worker", timeout=60, STREAMPROC_STARTUP_TIMEOUT_S="60", **changes)
    took = time.monotonic() - began
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert took < 30, f"took {took:.0f}s: retried instead of stopping"
    lines = [line for line in done.stderr.splitlines() if expected in line]
    assert len(lines) == 1, done.stderr[-3000:]
    setting = ("STREAMPROC_KAFKA_SASL_PASSWORD" if "PASSWORD" in str(changes)
               else "STREAMPROC_KAFKA_SSL_CAFILE")
    assert setting in lines[0]
    assert "Traceback" not in done.stderr
    assert "not-the-password" not in done.stderr + done.stdout


@pytest.mark.parametrize("changes", [
    {"kafka_security_protocol": "PLAINTEXT"},
    {"kafka_ssl_certfile": None, "kafka_ssl_keyfile": None},
    {"kafka_security_protocol": "SSL"},
], ids=["plaintext", "no-client-certificate", "tls-without-sasl"])
async def test_the_broker_takes_no_client_without_tls_certificate_and_login(
        secured: Secured, changes: dict[str, object]) -> None:
    """What makes the tests above mean something: this broker is not open."""
    settings = dataclasses.replace(secured.settings, **changes)  # type: ignore[arg-type]
    producer = AIOKafkaProducer(**kafka_options(settings), request_timeout_ms=5000)
    with pytest.raises((KafkaError, OSError, TimeoutError)):
        try:
            await asyncio.wait_for(producer.start(), 20)
        finally:
            await producer.stop()
