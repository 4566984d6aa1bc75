from __future__ import annotations

import socket

import pytest

from streamproc.errors import UnreachableError
from streamproc.settings import Settings
from streamproc.worker.preflight import check_dependencies


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_worker_without_redis_and_kafka_is_told_both_and_what_to_do():
    redis_port, kafka_port = unused_port(), unused_port()
    settings = Settings(redis_url=f"redis://:pw@127.0.0.1:{redis_port}/0",
                        kafka_bootstrap=f"127.0.0.1:{kafka_port}", startup_timeout_s=0.5)
    with pytest.raises(UnreachableError) as caught:
        await check_dependencies(settings)
    text = str(caught.value)
    assert f"cannot reach Redis at redis://:***@127.0.0.1:{redis_port}/0: Connection refused" \
        in text
    assert f"cannot reach Kafka at 127.0.0.1:{kafka_port}: Connection refused" in text
    assert "STREAMPROC_REDIS_URL" in text and "STREAMPROC_KAFKA_BOOTSTRAP" in text
    assert "streamproc stack up" in text and "pw" not in text
