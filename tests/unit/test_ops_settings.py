"""The operations settings reach the Faust app: session timeout, web host; bad values say why."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamproc.cli import main
from streamproc.errors import ConfigError
from streamproc.settings import Settings
from streamproc.worker.app import create_app, learns_in_worker


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.session_timeout_s, s.web_host, s.log_format) == (30, "127.0.0.1", "text")


def test_session_timeout_and_web_host_configure_the_app(tmp_path: Path) -> None:
    s = Settings.from_env({"STREAMPROC_SESSION_TIMEOUT_S": "10", "STREAMPROC_WEB_HOST": "0.0.0.0",
                           "STREAMPROC_WEB_PORT": "6099", "STREAMPROC_LOG_FORMAT": "JSON",
                           "STREAMPROC_STACK_DIR": str(tmp_path)})
    assert s.log_format == "json"
    conf = create_app(s).app.conf
    assert conf.broker_session_timeout == 10.0
    assert conf.broker_heartbeat_interval < conf.broker_session_timeout / 2
    assert conf.broker_request_timeout > conf.broker_session_timeout
    assert (conf.web_bind, conf.web_port, conf.web_enabled) == ("0.0.0.0", 6099, True)


def test_a_long_session_keeps_requests_longer(tmp_path: Path) -> None:
    s = Settings.from_env({"STREAMPROC_SESSION_TIMEOUT_S": "600",
                           "STREAMPROC_STACK_DIR": str(tmp_path)})
    conf = create_app(s).app.conf
    assert conf.broker_request_timeout > 600 and conf.broker_heartbeat_interval == 3.0


@pytest.mark.parametrize(("env", "message"), [
    ({"STREAMPROC_SESSION_TIMEOUT_S": "5"}, "6 to 1800"),
    ({"STREAMPROC_SESSION_TIMEOUT_S": "ten"}, "whole number"),
    ({"STREAMPROC_LOG_FORMAT": "xml"}, "text or json"),
    ({"STREAMPROC_LEARNER": "both"}, "worker or off"),
])
def test_bad_values_say_what_to_use(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(("env", "in_worker"), [
    ({}, True),
    ({"STREAMPROC_LEARNER": "worker", "STREAMPROC_MODEL_SECRET": "s"}, True),
    ({"STREAMPROC_LEARNER": "OFF", "STREAMPROC_MODEL_SECRET": "s"}, False),
    # Without snapshots a learner elsewhere could hand this worker nothing: it learns itself.
    ({"STREAMPROC_LEARNER": "off"}, True),
])
def test_where_the_learner_runs(env: dict[str, str], in_worker: bool) -> None:
    assert learns_in_worker(Settings.from_env(env)) is in_worker


def test_a_learner_process_without_a_secret_says_why_and_exits(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("STREAMPROC_MODEL_SECRET", raising=False)
    assert main(["learner"]) == 0
    assert "STREAMPROC_MODEL_SECRET is not set" in capsys.readouterr().err
