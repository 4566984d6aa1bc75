"""The bandit's signed snapshot round trip through the real Redis, as workers do it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from streamproc.blobs import RedisBlobs
from streamproc.decisions.keeper import BanditKeeper
from streamproc.settings import Settings
from tests.integration.conftest import BASE, TEST_REDIS_DB

pytestmark = pytest.mark.integration


async def test_a_restarted_keeper_continues_from_the_snapshot_in_redis(test_redis: Any) -> None:
    host, port = BASE.redis_host_port
    settings = Settings.from_env({"STREAMPROC_REDIS_URL": f"redis://{host}:{port}/{TEST_REDIS_DB}",
                                  "STREAMPROC_MODEL_SECRET": "it-keeper-secret"})
    # A key of this test's own: other tests' workers may write the real one in database 15.
    key = f"sp:model:bandit:it-{uuid.uuid4().hex[:8]}"
    try:
        first = BanditKeeper(settings, RedisBlobs(test_redis), key=key)
        await first.refresh()
        first.chooser.expect("d-1", "cart_reminder", "hero:active", ts_ms=0)
        first.chooser.reward("d-1", 1.0)
        first.chooser.expect("d-2", "category_picks", "hero:active", ts_ms=0)
        assert await first.checkpoint(force=True)
        assert (await test_redis.get(key))[:4] == b"SPMS"

        second = BanditKeeper(settings, RedisBlobs(test_redis), key=key)
        await second.refresh()
        assert second.chooser.to_state() == first.chooser.to_state()
        pick = second.chooser.choose(["cart_reminder", "category_picks"], "hero:active", b"d-3")
        assert pick == first.chooser.choose(["cart_reminder", "category_picks"], "hero:active",
                                            b"d-3")
    finally:
        await test_redis.delete(key)
