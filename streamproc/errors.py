"""The exception hierarchy: every error streamproc raises on purpose is a StreamprocError."""

from __future__ import annotations


class StreamprocError(Exception):
    """Root of every error streamproc raises on purpose."""


class ConfigError(StreamprocError):
    """A setting (environment variable, file) is missing or invalid; the message says which."""


class StackError(StreamprocError):
    """The local Kafka/Redis stack cannot be brought up, found or stopped."""


class DecodeError(StreamprocError):
    """An input message cannot be turned into an event.

    ``reason`` is a short machine-readable code (``invalid_json``, ``schema_violation``,
    ``too_large``, ``unknown_type``, ``invalid_encoding``); the message is for humans.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class UnreachableError(StreamprocError):
    """Kafka or Redis does not answer; the message says which, where, and what to do."""
