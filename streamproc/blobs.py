"""Where a signed snapshot (the learning bandit's) is kept: a Redis key for real, a dict in unit
tests. The intent model's snapshots have their own, versioned store (streamproc.modelstore)."""

from __future__ import annotations

from typing import Protocol

import redis.asyncio as aioredis


class Blobs(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes) -> None: ...


class RedisBlobs:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self.client.get(key)
        return value

    async def set(self, key: str, value: bytes) -> None:
        await self.client.set(key, value)


class MemoryBlobs:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.sets = 0

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes) -> None:
        self.sets += 1
        self.data[key] = value
