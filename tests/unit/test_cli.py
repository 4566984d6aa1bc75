from __future__ import annotations

import orjson
import pytest

from streamproc.cli import build_parser, main
from streamproc.errors import ConfigError
from streamproc.settings import KNOWN_VARIABLES, SETTING_DOCS, Settings


@pytest.mark.parametrize("command", [[], ["stack"], ["worker"], ["simulate"], ["profile"],
                                     ["tail"], ["settings"], ["forget"], ["models"],
                                     ["catalogue"], ["learner"], ["rules"]])
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


def test_unknown_setting_names_the_nearest_not_the_whole_list():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"STREAMPROC_REDIS_ULR": "redis://x:1/0"})
    assert str(info.value) == ("unknown setting STREAMPROC_REDIS_ULR: did you mean "
                               "STREAMPROC_REDIS_URL?")
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"STREAMPROC_NOTHING_LIKE_IT": "1"})
    assert "streamproc settings" in str(info.value) and "KAFKA" not in str(info.value)


@pytest.mark.parametrize(("given", "level"), [
    ("warning", "warn"), ("WARN", "warn"), ("Info", "info"), ("DEBUG", "debug"),
    ("critical", "crit"), ("error", "error"),
])
def test_log_level_accepts_common_spellings(given, level):
    assert Settings.from_env({"STREAMPROC_LOG_LEVEL": given}).log_level == level


@pytest.mark.parametrize(("given", "place"), [
    ("off", "off"), ("false", "off"), ("No", "off"), ("0", "off"),
    ("worker", "worker"), ("true", "worker"), ("1", "worker"),
])
def test_learner_accepts_booleans(given, place):
    assert Settings.from_env({"STREAMPROC_LEARNER": given}).learner == place


def test_worker_log_level_option_accepts_warning():
    args = build_parser().parse_args(["worker", "--log-level", "WARNING"])
    assert args.log_level == "warn"


def test_settings_record_where_each_value_came_from():
    s = Settings.from_env({"STREAMPROC_PARTITIONS": "4", "STREAMPROC_TOPIC_PREFIX": "",
                           "STREAMPROC_BATCH_SIZE": "  "})
    assert s.sources["PARTITIONS"] == "environment"
    assert s.sources["BATCH_SIZE"] == "default"  # blank counts as unset
    assert s.sources["TOPIC_PREFIX"] == "environment" and s.topics.browsing == "browsing"
    assert set(s.sources) == {name for name, _, _ in SETTING_DOCS}


def test_settings_command_shows_values_in_force_with_sources(monkeypatch, capsys):
    monkeypatch.setenv("STREAMPROC_PARTITIONS", "4")
    monkeypatch.setenv("STREAMPROC_MODEL_SECRET", "s3cret-value")
    monkeypatch.setenv("STREAMPROC_REDIS_URL", "redis://:hunter2@10.0.0.5:6390/2")
    assert main(["settings"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert lines["STREAMPROC_PARTITIONS"].split()[1:] == ["4", "[environment]"]
    assert lines["STREAMPROC_BATCH_SIZE"].split()[1:] == ["500", "[default]"]
    assert "s3cret" not in lines["STREAMPROC_MODEL_SECRET"]
    assert "(set, 12 characters)" in lines["STREAMPROC_MODEL_SECRET"]
    assert "hunter2" not in lines["STREAMPROC_REDIS_URL"]
    assert "redis://:***@10.0.0.5:6390/2" in lines["STREAMPROC_REDIS_URL"]


def test_settings_command_json(monkeypatch, capsys):
    monkeypatch.setenv("STREAMPROC_LOG_LEVEL", "warning")
    assert main(["settings", "--json"]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert shown["STREAMPROC_LOG_LEVEL"] == {"value": "warn", "source": "environment"}
    assert shown["STREAMPROC_TOPIC_PREFIX"] == {"value": "streamproc.", "source": "default"}
    assert len(shown) == len(SETTING_DOCS)
