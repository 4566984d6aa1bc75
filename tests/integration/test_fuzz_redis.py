"""The fuzz of tests/unit/test_fuzz.py with the real Redis store: the same hostile messages and
odd customer ids (every character a customer id may have) through the Lua scripts and the
keys, in a Redis database of its own (10, emptied before each stream)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from streamproc.state.store import RedisStore
from tests.unit.test_fuzz import Stream, check_stream, fuzz

from .conftest import BASE

pytestmark = pytest.mark.integration

FUZZ_DB = 10
EXAMPLES = 25


async def check_on_redis(stream: Stream, cuts: list[int]) -> int:
    host, port = BASE.redis_host_port
    client = aioredis.from_url(f"redis://{host}:{port}/{FUZZ_DB}")
    try:
        await client.flushdb()
        return await check_stream(stream, cuts, RedisStore(client))
    finally:
        await client.flushdb()
        await client.aclose()


def test_the_fuzz_on_the_real_redis() -> None:
    import redis

    host, port = BASE.redis_host_port
    with redis.Redis(host=host, port=port, db=FUZZ_DB) as client:
        assert client.dbsize() == 0, (
            f"Redis database {FUZZ_DB} is in use: this test empties it; empty it or run the "
            "tests against a Redis of their own")
    seen = fuzz(EXAMPLES, check_on_redis)
    assert seen["examples"] == EXAMPLES and seen["hostile"] > 1_000, seen
