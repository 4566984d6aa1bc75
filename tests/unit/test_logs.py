"""JSON logs: one object per line for the worker (Faust's dictConfig) and the CLI."""

from __future__ import annotations

import io
import logging
import logging.config

import orjson
import pytest

from streamproc.cli import main
from streamproc.logs import JsonFormatter, worker_logging_config


def test_exception_and_extra_fields_are_kept() -> None:
    log = logging.getLogger("streamproc.test_logs")
    try:
        raise ValueError("bad value")
    except ValueError:
        record = log.makeRecord(log.name, logging.ERROR, __file__, 1, "processing %s failed",
                                ("e-1",), __import__("sys").exc_info(),
                                extra={"customer_id": "c1", "offsets": {"p0": 4}})
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = orjson.loads(line)
    assert out["message"] == "processing e-1 failed" and out["level"] == "error"
    assert out["logger"] == "streamproc.test_logs" and out["ts"].endswith("Z")
    assert "ValueError: bad value" in out["exception"] and "Traceback" in out["exception"]
    assert out["customer_id"] == "c1" and out["offsets"] == {"p0": 4}
    assert "worker_id" not in out


def test_worker_config_writes_json_lines_with_the_worker_id(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stdout", stream)
    monkeypatch.setattr(logging.root, "handlers", [])
    level = logging.root.level
    try:
        logging.config.dictConfig(worker_logging_config("warn", "vm-7"))
        logging.getLogger("faust.worker").info("not shown at warn")
        logging.getLogger("faust.worker").warning("[^Worker]: Ready")
    finally:
        logging.root.setLevel(level)
    [line] = stream.getvalue().splitlines()
    out = orjson.loads(line)
    assert (out["message"], out["worker_id"], out["level"]) == ("[^Worker]: Ready", "vm-7",
                                                                "warning")


def test_cli_logs_json_when_asked(monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STREAMPROC_LOG_FORMAT", "json")
    monkeypatch.setattr(logging.root, "handlers", [])
    assert main(["settings"]) == 0
    capsys.readouterr()
    logging.getLogger("streamproc.cli").warning("Kafka is slow", extra={"broker": "k1"})
    out = orjson.loads(capsys.readouterr().err)
    assert (out["message"], out["broker"], out["level"]) == ("Kafka is slow", "k1", "warning")


def test_cli_logs_stay_text_by_default(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(logging.root, "handlers", [])
    assert main(["settings"]) == 0
    capsys.readouterr()
    logging.getLogger("streamproc.cli").warning("Kafka is slow")
    assert capsys.readouterr().err == "WARNING streamproc.cli: Kafka is slow\n"
