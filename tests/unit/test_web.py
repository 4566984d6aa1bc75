"""The readiness probe's parts that need no running worker."""

from __future__ import annotations

import time

from streamproc.settings import Settings
from streamproc.worker.web import PROBE_TIMEOUT_S, KafkaProbe, readiness


async def test_the_kafka_probe_says_why_when_no_broker_answers() -> None:
    probe = KafkaProbe(Settings(kafka_bootstrap="127.0.0.1:1"), "t")  # nothing listens on port 1
    began = time.monotonic()
    problem = await probe.problem()
    assert problem is not None and "127.0.0.1" in problem, problem
    assert time.monotonic() - began < PROBE_TIMEOUT_S + 1
    assert await probe.problem() is not None  # asked again: a fresh attempt, same answer
    await probe.close()


def test_every_reason_makes_the_worker_not_ready() -> None:
    status, body = readiness(0, False, "ConnectionError: refused", "no answer within 2s")
    assert status == 503 and body["reasons"] == [
        "no partitions assigned: not in the group yet, or more workers than partitions "
        "(STREAMPROC_PARTITIONS)",
        "Redis does not answer: ConnectionError: refused",
        "Kafka does not answer: no answer within 2s"]
