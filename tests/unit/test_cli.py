from __future__ import annotations

import pytest

from streamproc.cli import build_parser, main
from streamproc.errors import ConfigError
from streamproc.settings import KNOWN_VARIABLES, Settings


@pytest.mark.parametrize("command", [[], ["stack"], ["worker"], ["simulate"], ["profile"],
                                     ["tail"], ["settings"], ["forget"], ["models"],
                                     ["catalogue"], ["learner"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*command, "--help"])
    assert info.value.code == 0
    assert "usage: streamproc" in capsys.readouterr().out


def test_settings_lists_every_variable(capsys):
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in KNOWN_VARIABLES)


def test_unknown_setting_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("STREAMPROC_PARTITONS", "3")
    assert main(["profile", "c1"]) == 2
    err = capsys.readouterr().err
    assert "STREAMPROC_PARTITONS" in err and "STREAMPROC_PARTITIONS" in err


def test_hostile_customer_id_is_refused_before_redis(capsys):
    assert main(["profile", "x{y} *"]) == 2
    assert "invalid customer id" in capsys.readouterr().err


@pytest.mark.parametrize(("env", "message"), [
    ({"STREAMPROC_PARTITIONS": "zero"}, "whole number"),
    ({"STREAMPROC_PARTITIONS": "0"}, "1 to"),
    ({"STREAMPROC_REDIS_URL": "http://x"}, "redis://"),
    ({"STREAMPROC_KAFKA_BOOTSTRAP": "nohostport"}, "host:port"),
    ({"STREAMPROC_TOPIC_DECISIONS": "streamproc.browsing"}, "distinct"),
    ({"STREAMPROC_LOG_LEVEL": "loud"}, "debug, info"),
])
def test_invalid_settings_say_what_is_wrong(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_settings_defaults_point_at_the_local_stack():
    s = Settings.from_env({})
    assert s.kafka_bootstrap == "127.0.0.1:9092" and s.redis_url.startswith("redis://127.0.0.1")
    assert s.partitions == 12 and s.topics.deadletter == "streamproc.deadletter"
    assert s.kafka_url == "kafka://127.0.0.1:9092"
    custom = Settings.from_env({"STREAMPROC_TOPIC_PREFIX": "acme-",
                                "STREAMPROC_TOPIC_FEEDBACK": "fb"})
    assert custom.topics.browsing == "acme-browsing" and custom.topics.feedback == "fb"


def test_simulate_rejects_nonsense_rates():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "--rate", "-5"])
