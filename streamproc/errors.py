"""The exception hierarchy: every error streamproc raises on purpose is a StreamprocError."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


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

    def __init__(self, reason: str, message: str, customer_id: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        # The event's customer_id when the message got far enough to name one (the dead
        # letter is keyed by it, so that an erasure reaches it: codec.deadletter_key).
        self.customer_id = customer_id


class UnreachableError(StreamprocError):
    """Kafka or Redis does not answer; the message says which, where, and what to do."""


def shown_url(url: str) -> str:
    """``url`` without its credentials, for messages.

    >>> shown_url("redis://:secret@10.0.0.5:6379/13")
    'redis://10.0.0.5:6379/13'
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def masked_url(url: str) -> str:
    """``url`` with its password (if any) as ``***``, the user name kept, for people.

    >>> masked_url("rediss://app-user:s3cr%40t@cache:6380/2")
    'rediss://app-user:***@cache:6380/2'
    >>> masked_url("redis://:s3cret@10.0.0.5/0"), masked_url("redis://127.0.0.1:6379/0")
    ('redis://:***@10.0.0.5/0', 'redis://127.0.0.1:6379/0')
    >>> masked_url("redis://token-only@cache:6379/0")  # a lone credential may be a token
    'redis://***@cache:6379/0'
    >>> masked_url("redis://cache:6379/0?password=s3cret&socket_timeout=2")
    'redis://cache:6379/0?password=***&socket_timeout=2'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unreadable URL)"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if colon else f"***@{hostport}"
    query = "&".join(
        f"{name}=***" if name.lower() == "password" and sep else f"{name}{sep}{value}"
        for name, sep, value in (item.partition("=") for item in parts.query.split("&") if item))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redis_unreachable(url: str, exc: BaseException, *, why: str = "", otherwise: str = "",
                      kind: type[StreamprocError] = StreamprocError) -> StreamprocError:
    """The error (a ``kind``) for a Redis that does not answer: where (credentials left out),
    the client's reason, ``why`` the command needs it, and what to do (``otherwise``: a way
    around it).

    >>> print(redis_unreachable("redis://:pw@127.0.0.1:1/0", OSError("refused"),
    ...                         why="the workers' heartbeats live there"))
    cannot reach Redis at redis://127.0.0.1:1/0 (refused): the workers' heartbeats live there. \
Is the stack up? Run `streamproc stack up` or set STREAMPROC_REDIS_URL
    >>> print(redis_unreachable("redis://h:6379/0", OSError("refused"),
    ...                         otherwise="give --bandit-snapshot FILE"))
    cannot reach Redis at redis://h:6379/0 (refused). Is the stack up? Run `streamproc stack up`, \
set STREAMPROC_REDIS_URL, or give --bandit-snapshot FILE
    """
    fixes = ["Run `streamproc stack up`", "set STREAMPROC_REDIS_URL"]
    fixes += [otherwise] if otherwise else []
    fix = " or ".join(fixes) if len(fixes) == 2 else f"{', '.join(fixes[:-1])}, or {fixes[-1]}"
    because = f": {why}" if why else ""
    return kind(f"cannot reach Redis at {shown_url(url)} ({exc}){because}. Is the stack up? {fix}")
