"""Learning out of the box: the local stack's model secret (made once, 0600, never overwritten;
an explicit STREAMPROC_MODEL_SECRET wins), and where a learner with no snapshot starts on the
learning topic (the replay window), and its lag."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from aiokafka import TopicPartition

from streamproc.cli import main
from streamproc.errors import ConfigError
from streamproc.learning.learner import Learner, replay_window_ms, seek_restored
from streamproc.learning.modelstore import MemoryModelStore
from streamproc.settings import MODEL_SECRET_FILE, Settings
from streamproc.stack.secret import ensure_model_secret

HOUR = 3_600_000


# -- the stack's model secret --------------------------------------------------------------------

def test_the_secret_is_made_once_private_and_random(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        path, made = ensure_model_secret(tmp_path / "stack")
    finally:
        os.umask(old)
    assert made and path == tmp_path / "stack" / MODEL_SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert len(secret) == 64 and int(secret, 16) >= 0
    other, _ = ensure_model_secret(tmp_path / "elsewhere")
    assert other.read_text() != path.read_text()
    assert not [p for p in (tmp_path / "stack").iterdir() if p != path]  # no temporary left


def test_an_existing_secret_is_never_overwritten(tmp_path: Path) -> None:
    path, _ = ensure_model_secret(tmp_path)
    path.write_text("kept-as-it-is\n")
    assert ensure_model_secret(tmp_path) == (path, False)
    assert path.read_text() == "kept-as-it-is\n"


def test_settings_use_the_stack_secret_when_the_variable_is_unset_or_empty(
        tmp_path: Path) -> None:
    path, _ = ensure_model_secret(tmp_path)
    for env in ({"STREAMPROC_STACK_DIR": str(tmp_path)},
                {"STREAMPROC_STACK_DIR": str(tmp_path), "STREAMPROC_MODEL_SECRET": ""}):
        s = Settings.from_env(env)
        assert s.model_secret == path.read_text().strip()
        assert s.model_secret_file == path
    assert s.model_secret not in repr(s)


def test_an_explicit_secret_wins(tmp_path: Path) -> None:
    ensure_model_secret(tmp_path)
    s = Settings.from_env({"STREAMPROC_STACK_DIR": str(tmp_path),
                           "STREAMPROC_MODEL_SECRET": "production-secret"})
    assert (s.model_secret, s.model_secret_file) == ("production-secret", None)


def test_no_stack_secret_means_no_secret(tmp_path: Path) -> None:
    s = Settings.from_env({"STREAMPROC_STACK_DIR": str(tmp_path / "never-up")})
    assert (s.model_secret, s.model_secret_file) == ("", None)
    assert str(tmp_path / "never-up" / MODEL_SECRET_FILE) in s.model_secret_hint


def test_an_unreadable_secret_file_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / MODEL_SECRET_FILE).mkdir()  # not a file
    with pytest.raises(ConfigError, match="fix or delete the file"):
        Settings.from_env({"STREAMPROC_STACK_DIR": str(tmp_path)})


def test_the_local_commands_use_the_stack_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("STREAMPROC_MODEL_SECRET", raising=False)
    monkeypatch.setenv("STREAMPROC_STACK_DIR", str(tmp_path))
    assert main(["learner"]) == 0  # no secret: says what to do, exits at once
    said = capsys.readouterr().err
    assert "STREAMPROC_MODEL_SECRET is not set" in said and "streamproc stack up" in said
    path, _ = ensure_model_secret(tmp_path)
    assert main(["settings"]) == 0
    assert f"model secret in use: {path}" in capsys.readouterr().out


# -- the replay window ---------------------------------------------------------------------------

@pytest.mark.parametrize(("hours", "horizon_min", "lateness_s", "window"), [
    (24, 30, 300, 24 * HOUR),
    (1, 30, 300, HOUR),
    (1, 90, 300, 95 * 60_000),  # never shorter than horizon + lateness: else nothing to label
    (0, 30, 300, None),  # the whole topic
])
def test_replay_window(hours: int, horizon_min: int, lateness_s: int,
                       window: int | None) -> None:
    assert replay_window_ms(hours, horizon_min * 60_000, lateness_s * 1000) == window
    s = Settings(learner_replay_hours=hours, intent_horizon_minutes=horizon_min,
                 label_lateness_seconds=lateness_s)
    assert Learner(s).replay_ms == window


def test_replay_hours_setting() -> None:
    assert Settings.from_env({}).learner_replay_hours == 24
    assert Settings.from_env({"STREAMPROC_LEARNER_REPLAY_HOURS": "0"}).learner_replay_hours == 0
    with pytest.raises(ConfigError, match="STREAMPROC_LEARNER_REPLAY_HOURS"):
        Settings.from_env({"STREAMPROC_LEARNER_REPLAY_HOURS": "-1"})


class _Found(NamedTuple):
    offset: int
    timestamp: int


class StubConsumer:
    """The four calls seek_restored makes, answered as a learning topic of ``end`` records whose
    first one since a time is ``first_since`` (None: none that recent)."""

    def __init__(self, first_since: int | None, end: int) -> None:
        self.first_since, self.end = first_since, end
        self.asked: dict[Any, int] = {}
        self.sought: list[Any] = []

    async def offsets_for_times(self, times: dict[Any, int]) -> dict[Any, _Found | None]:
        self.asked = times
        return {tp: None if self.first_since is None else _Found(self.first_since, ts)
                for tp, ts in times.items()}

    async def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: self.end for tp in tps}

    async def seek_to_beginning(self, tp: Any) -> None:
        self.sought.append("beginning")

    def seek(self, tp: Any, offset: int) -> None:
        self.sought.append(offset)


TP = TopicPartition("streamproc.learning", 0)


@pytest.mark.parametrize(("hours", "first_since", "sought"), [
    (24, 9_000, [9_000]),  # the first record of the last 24 h
    (24, None, [10_000]),  # nothing that recent: the end
    (0, 9_000, ["beginning"]),
])
async def test_a_learner_without_a_snapshot_starts_in_the_window(
        hours: int, first_since: int | None, sought: list[Any]) -> None:
    learner = Learner(Settings(model_secret="s", learner_replay_hours=hours), MemoryModelStore())
    consumer = StubConsumer(first_since, end=10_000)
    before = int(time.time() * 1000)
    await seek_restored(learner, consumer, [TP])  # type: ignore[arg-type]
    assert consumer.sought == sought
    if hours:
        (asked,) = consumer.asked.values()
        assert before - hours * HOUR <= asked <= int(time.time() * 1000) - hours * HOUR
    assert learner.active and learner.lag is None  # not fetched yet
    learner.topic_end = 10_000
    assert learner.lag == (0 if sought == [10_000] else 1_000 if hours else 10_000)


async def test_a_learner_with_a_snapshot_goes_on_after_it_whatever_the_window() -> None:
    store = MemoryModelStore()
    first = Learner(Settings(model_secret="s"), store)
    first.active = True
    first.apply(41, None)  # an empty record: the offset moves on, nothing to learn
    assert await first.checkpoint(force=True)
    learner = Learner(Settings(model_secret="s"), store)
    consumer = StubConsumer(9_000, end=10_000)
    await seek_restored(learner, consumer, [TP])  # type: ignore[arg-type]
    assert consumer.sought == [42] and not consumer.asked
    learner.topic_end = 50
    assert learner.lag == 8
    learner.apply(42, None)
    assert learner.lag == 7
    learner.active = False
    assert learner.lag is None  # another worker learns now
