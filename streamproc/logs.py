"""Structured logs: one JSON object per line when ``STREAMPROC_LOG_FORMAT=json``.

Each line has ``ts`` (UTC, ISO-8601 with milliseconds), ``level``, ``logger``, ``message``, the
``worker_id`` (workers only), ``exception`` (the formatted traceback, when there is one) and any
``extra={...}`` fields given to the log call. Text stays the default.

>>> import logging, orjson
>>> record = logging.LogRecord("streamproc.worker.agents", logging.WARNING, __file__, 1,
...                            "batch failed (%s)", ("ConnectionError",), None)
>>> record.created, record.msecs, record.partition = 1772359200.5, 500.0, 3
>>> line = JsonFormatter(worker_id="vm-42").format(record)
>>> for key, value in orjson.loads(line).items():
...     print(f"{key}: {value}")
ts: 2026-03-01T10:00:00.500Z
level: warning
logger: streamproc.worker.agents
message: batch failed (ConnectionError)
worker_id: vm-42
partition: 3
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def __init__(self, worker_id: str | None = None) -> None:
        super().__init__()
        self.worker_id = worker_id

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker_id:
            out["worker_id"] = self.worker_id
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        return orjson.dumps(out, default=str).decode()


def worker_logging_config(level: str, worker_id: str) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of a worker logging JSON lines to stdout (Faust's
    worker applies it in place of its coloured text)."""
    number = {"warn": "WARNING", "crit": "CRITICAL"}.get(level, level.upper())
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "worker_id": worker_id}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json",
                                 "stream": "ext://sys.stdout"}},
        "root": {"level": number, "handlers": ["default"]},
    }


def use_json(logger: logging.Logger | None = None, worker_id: str | None = None) -> None:
    """Switch ``logger``'s handlers (the root's by default; stderr when it has none) to JSON."""
    logger = logger or logging.getLogger()
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler(sys.stderr))
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter(worker_id))
