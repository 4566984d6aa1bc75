"""The Redis store's client: commands packed by hiredis are the bytes redis-py would send."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from streamproc.state.store import RedisStore, with_hiredis_packing

COMMANDS = [
    ("EVALSHA", "a" * 40, 4, "sp:{c-1}:state", "sp:rfm:h1", "sp:rfm:h2", "sp:rfm:h3", 0,
     b"\x28\xb5\x2f\xfd" + bytes(range(256)) * 30, 1, b"[]", 0, "100", "", "5"),
    ("HMGET", "sp:{c\u00e9-2}:state", "ver", "doc", "outbox"),
    ("SCRIPT LOAD", "return 1"),
    (b"SCRIPT EXISTS", "a" * 40),
    ("SET", "k", 1.5, "PX", 10_000),
    ("HSET", "k", "f", bytearray(b"v"), "g", memoryview(b"w")),
]


def test_commands_are_packed_into_the_same_bytes_as_redis_py():
    plain = Connection()
    fast = with_hiredis_packing(aioredis.Redis()).connection_pool.connection_class()
    for command in COMMANDS:
        assert b"".join(fast.pack_command(*command)) == b"".join(plain.pack_command(*command))
    assert b"".join(fast.pack_commands(COMMANDS)) == b"".join(plain.pack_commands(COMMANDS))


def test_a_value_redis_cannot_take_is_refused_as_redis_py_does():
    fast = with_hiredis_packing(aioredis.Redis()).connection_pool.connection_class()
    with pytest.raises(DataError):
        fast.pack_command("SET", "k", None)


def test_the_store_and_clients_made_from_it_pack_with_hiredis():
    store = RedisStore.from_url("redis://127.0.0.1:6379/0")
    cls = store.client.connection_pool.connection_class
    assert cls.__name__ == "HiredisConnection" and issubclass(cls, Connection)
    assert with_hiredis_packing(store.client).connection_pool.connection_class is cls
    tls = RedisStore.from_url("rediss://127.0.0.1:6379/0").client.connection_pool
    assert tls.connection_class.__name__ == "HiredisSSLConnection"
