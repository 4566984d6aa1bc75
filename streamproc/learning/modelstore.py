"""Where the learner publishes its signed snapshots and the scoring workers find them.

Three Redis keys per app id (:func:`streamproc.state.keys.model_key`, one cluster slot):

* ``version``: the latest snapshot's version, a small integer the scoring workers poll;
* ``serving``: the models the scoring workers need (signed, :mod:`streamproc.models.snapshot`);
* ``learner``: the learner's whole state (models, pending labels, the learning topic offset),
  read only by a learner that takes over.

:meth:`ModelStore.publish` writes the three in one Lua script, and only when the new version is
greater than the stored one: a learner that lost the learning partition but has not noticed yet
(a paused process) cannot overwrite the newer snapshot of the learner that took over.
:class:`MemoryModelStore` is the same for unit tests.
"""

from __future__ import annotations

from typing import Protocol

import redis.asyncio as aioredis

from streamproc.state.keys import model_key

# KEYS: version, serving, learner. ARGV: version, serving blob, learner blob.
_PUBLISH_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) <= current then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], ARGV[3])
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


class ModelStore(Protocol):
    async def version(self) -> int:
        """The latest published version, 0 when there is none."""
        ...

    async def get(self, part: str) -> bytes | None:
        """The ``serving`` or ``learner`` blob."""
        ...

    async def publish(self, version: int, serving: bytes, learner: bytes) -> bool:
        """Write a snapshot; False (nothing written) when ``version`` is not the newest."""
        ...


class RedisModelStore:
    def __init__(self, client: aioredis.Redis, app_id: str) -> None:
        self.client = client
        self.keys = {part: model_key(app_id, part) for part in ("version", "serving", "learner")}
        self._publish = client.register_script(_PUBLISH_SCRIPT)

    async def version(self) -> int:
        raw = await self.client.get(self.keys["version"])
        return int(raw) if raw else 0

    async def get(self, part: str) -> bytes | None:
        value: bytes | str | None = await self.client.get(self.keys[part])
        return value.encode() if isinstance(value, str) else value

    async def publish(self, version: int, serving: bytes, learner: bytes) -> bool:
        keys = [self.keys["version"], self.keys["serving"], self.keys["learner"]]
        return bool(await self._publish(keys=keys, args=[version, serving, learner]))

    async def delete(self) -> None:
        await self.client.delete(*self.keys.values())


class MemoryModelStore:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.published = 0

    async def version(self) -> int:
        return int(self.data.get("version", b"0"))

    async def get(self, part: str) -> bytes | None:
        return self.data.get(part)

    async def publish(self, version: int, serving: bytes, learner: bytes) -> bool:
        if version <= await self.version():
            return False
        self.data.update(version=str(version).encode(), serving=serving, learner=learner)
        self.published += 1
        return True
