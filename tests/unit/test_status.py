"""Heartbeats and `streamproc status`, without a broker: rates, parsing, the table and JSON."""

from __future__ import annotations

import pytest

from streamproc.cli import main
from streamproc.settings import Settings
from streamproc.state.keys import InvalidIdentifierError
from streamproc.worker.agents import BatchStats
from streamproc.worker.heartbeat import STALE_AFTER_S, Heartbeat, WorkerBeat, parse_beat
from streamproc.worker.status import build_status


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_events_per_second_covers_the_last_minute() -> None:
    clock, stats = Clock(), BatchStats()
    beat = Heartbeat("app", "w1", stats, clock=clock)
    clock.now += 10
    stats.messages = 500
    assert beat.events_per_s() == 50.0  # since the start
    for _ in range(30):  # 150 s at 10 messages/s
        clock.now += 5
        stats.messages += 50
        beat.events_per_s()
    clock.now += 5
    stats.messages += 1000  # a burst in the last 5 s
    rate = beat.events_per_s()
    assert 60 * 10 / 65 < rate - 1000 / 65 < 10.5, rate  # the window is about a minute
    assert len(beat.samples) <= 15


def test_fields_round_trip_through_redis_bytes() -> None:
    clock, stats = Clock(), BatchStats(messages=42, deadletters=2, retries=1, failures=1,
                                       last_batch_at=999.5)
    beat = Heartbeat("app", "w1", stats, clock=clock)
    fields = beat.fields([("t.browsing", 2), ("t.browsing", 0), ("t.purchases", 1)], "running")
    parsed = parse_beat({k.encode(): v.encode() for k, v in fields.items()})
    assert parsed is not None
    assert parsed.partitions == {"t.browsing": [0, 2], "t.purchases": [1]}
    assert (parsed.messages, parsed.deadletters, parsed.errors) == (42, 2, 2)
    assert parsed.alive(clock.now + STALE_AFTER_S) and not parsed.alive(clock.now + 60)
    assert parse_beat({b"worker_id": b"w"}) is None  # half-written or foreign


@pytest.mark.parametrize(("app_id", "worker_id"), [("a:b", "w"), ("app", "w*"), ("", "w")])
def test_identifiers_in_keys_are_validated(app_id: str, worker_id: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        Heartbeat(app_id, worker_id, BatchStats())


def beat(worker_id: str, seen: float, partitions: dict[str, list[int]]) -> WorkerBeat:
    return WorkerBeat(worker_id, "host", 7, seen - 100, seen, "running", partitions, 12.5, 900,
                      30, 1, 0, seen - 1)


def test_status_table_and_json() -> None:
    settings = Settings()
    b = settings.topics.browsing
    workers = [beat("w-live", 1000.0, {b: [0, 1]}), beat("w-gone", 900.0, {b: [2]})]
    ends = {(b, 0): 10, (b, 1): 5, (b, 2): 7}
    status = build_status(settings, 1002.0, workers, ends, {(b, 0): 10, (b, 1): 2})
    assert [w.worker_id for w in status.alive] == ["w-live"]
    assert status.lag == 0 + 3 + 7
    text = status.render()
    assert "1 alive, 1 stale" in text and "STALE" in text and "lag: 10 messages" in text
    rows = {line.split()[1]: line.split() for line in text.splitlines() if line.startswith(b)}
    assert rows["2"][-1] == "-", "a partition of a stale worker has no owner"
    assert rows["1"][2:] == ["5", "2", "3", "w-live"]
    d = status.as_dict()
    assert d["workers_alive"] == 1 and d["events_per_s"] == 12.5
    assert [p["owner"] for p in d["partitions"]] == ["w-live", "w-live", None]
    assert [p["lag"] for p in d["partitions"]] == [0, 3, 7]


def test_status_without_workers_or_topics_says_what_to_do() -> None:
    text = build_status(Settings(), 0.0, [], {}, {}).render()
    assert "start one with `streamproc worker`" in text and "do not exist yet" in text


def test_status_with_redis_away_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STREAMPROC_REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in err and "stack up" in err


def test_status_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    from streamproc.cli import build_parser

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["status", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--json" in out and "Exits 0 when a worker is alive" in out


@pytest.mark.parametrize("url", ["redis://:hunter2@127.0.0.1:1/0",
                                 # a cluster raises no ConnectionError: none of its nodes answers
                                 "redis+cluster://:hunter2@127.0.0.1:1,127.0.0.1:2/0"])
@pytest.mark.parametrize("argv", [["status"], ["profile", "c1"], ["forget", "c1"],
                                  ["models"], ["bandit"], ["recommend", "c1"]])
def test_every_command_says_the_same_when_redis_is_away(
        argv: list[str], url: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STREAMPROC_REDIS_URL", url)
    monkeypatch.setenv("STREAMPROC_MODEL_SECRET", "s")  # `models` checks it before Redis
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"cannot reach Redis at {url.replace(':hunter2@', '')} (" in err
    assert "Run `streamproc stack up`" in err and "hunter2" not in err
