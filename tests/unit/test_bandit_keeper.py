"""The worker's bandit keeper: snapshot loading at start, periodic signed snapshots."""

from __future__ import annotations

import logging

import pytest

from streamproc.blobs import MemoryBlobs
from streamproc.decisions.bandit import ThompsonChooser, snapshot_key
from streamproc.decisions.keeper import BanditKeeper
from streamproc.settings import Settings

SETTINGS = Settings.from_env({"STREAMPROC_MODEL_SECRET": "keeper-secret-123",
                              "STREAMPROC_MODEL_SNAPSHOT_SECONDS": "30",
                              "STREAMPROC_BANDIT_REWARD_WAIT_MINUTES": "10"})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_snapshots_are_written_when_due_and_only_after_a_change() -> None:
    blobs, clock = MemoryBlobs(), Clock()
    keeper = BanditKeeper(SETTINGS, blobs, clock)
    await keeper.refresh()
    assert keeper.chooser.reward_wait_ms == 600_000
    assert await keeper.checkpoint(force=True) is False  # nothing learnt yet
    keeper.chooser.expect("d1", "a", "ctx", ts_ms=0)
    assert await keeper.checkpoint() is False  # not due yet
    clock.now += 30
    assert await keeper.checkpoint() is True
    assert blobs.sets == 1 and snapshot_key(SETTINGS) in blobs.data
    clock.now += 30
    assert await keeper.checkpoint() is False  # unchanged since
    keeper.chooser.reward("d1", 1.0)
    assert await keeper.checkpoint(force=True) is True
    assert blobs.sets == 2


async def test_a_restarted_worker_continues_from_the_snapshot_in_place() -> None:
    blobs = MemoryBlobs()
    first = BanditKeeper(SETTINGS, blobs, Clock())
    await first.refresh()
    for _ in range(5):
        first.chooser.learn("a", "ctx", 1.0)
    first.chooser.expect("open", "b", "ctx", ts_ms=0)
    assert await first.checkpoint(force=True)
    second = BanditKeeper(SETTINGS, blobs, Clock())
    held = second.chooser  # what an engine built before refresh() holds
    await second.refresh()
    assert held is second.chooser
    assert held.posterior("ctx", "a") == (6.0, 1.0)
    assert held.pending == 1 and held.advance(600_000) == 1
    assert await second.checkpoint(force=True)  # the expiry is a change


async def test_a_snapshot_that_does_not_verify_is_refused_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    blobs = MemoryBlobs()
    other = ThompsonChooser()
    other.learn("a", "ctx", 1.0)
    blobs.data[snapshot_key(SETTINGS)] = other.snapshot(b"some-other-secret")
    keeper = BanditKeeper(SETTINGS, blobs, Clock())
    with caplog.at_level(logging.ERROR):
        await keeper.refresh()
    assert "refusing the bandit snapshot" in caplog.text
    assert keeper.chooser.updates == 0 and keeper.loaded


async def test_without_a_secret_nothing_is_read_or_written(
        caplog: pytest.LogCaptureFixture) -> None:
    blobs = MemoryBlobs()
    with caplog.at_level(logging.WARNING):
        keeper = BanditKeeper(Settings.from_env({}), blobs, Clock())
    assert "STREAMPROC_MODEL_SECRET is not set" in caplog.text
    await keeper.refresh()
    keeper.chooser.learn("a", "ctx", 1.0)
    assert await keeper.checkpoint(force=True) is False
    assert blobs.data == {}


async def test_a_failed_write_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(MemoryBlobs):
        async def set(self, key: str, value: bytes) -> None:
            raise ConnectionError("redis went away")

    keeper = BanditKeeper(SETTINGS, Broken(), Clock())
    await keeper.refresh()
    keeper.chooser.learn("a", "ctx", 1.0)
    with caplog.at_level(logging.WARNING):
        assert await keeper.checkpoint(force=True) is False
    assert "could not write the bandit snapshot" in caplog.text
