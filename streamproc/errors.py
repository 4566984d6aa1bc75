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


def redis_credentials_refused(url: str, exc: BaseException) -> str:
    """What to say when Redis answered but refused the login (a wrong password, an unknown or
    disabled ACL user, a password missing): no retry or restart cures it, and "is it up?" would
    send people looking in the wrong place. The password is masked, the user name kept.

    >>> print(redis_credentials_refused("redis://app:s3cret@cache:6379/0",
    ...       OSError("WRONGPASS invalid username-password pair or user is disabled.")))
    ... # doctest: +NORMALIZE_WHITESPACE
    Redis at redis://app:***@cache:6379/0 refused the credentials (WRONGPASS invalid
    username-password pair or user is disabled.): check the user name and password in
    STREAMPROC_REDIS_URL or STREAMPROC_REDIS_URL_FILE (redis://user:password@host:port/db)
    """
    return (f"Redis at {masked_url(url)} refused the credentials ({exc}): check the user name "
            "and password in STREAMPROC_REDIS_URL or STREAMPROC_REDIS_URL_FILE "
            "(redis://user:password@host:port/db)")


def redis_tls_failed(url: str, exc: BaseException) -> str:
    """What to say when the TLS handshake with a ``rediss://`` server failed: the server's
    certificate is not signed by a CA the client trusts, or the server wants a client
    certificate; retrying does not help either.

    >>> print(redis_tls_failed("rediss://:pw@cache:6380/0", OSError("CERTIFICATE_VERIFY_FAILED")))
    ... # doctest: +NORMALIZE_WHITESPACE
    Redis at rediss://:***@cache:6380/0 failed the TLS handshake (CERTIFICATE_VERIFY_FAILED):
    check STREAMPROC_REDIS_SSL_CAFILE (the CA that signed the server's certificate), and
    STREAMPROC_REDIS_SSL_CERTFILE with STREAMPROC_REDIS_SSL_KEYFILE when the server asks for a
    client certificate (tls-auth-clients)
    """
    return (f"Redis at {masked_url(url)} failed the TLS handshake ({exc}): check "
            "STREAMPROC_REDIS_SSL_CAFILE (the CA that signed the server's certificate), and "
            "STREAMPROC_REDIS_SSL_CERTFILE with STREAMPROC_REDIS_SSL_KEYFILE when the server asks "
            "for a client certificate (tls-auth-clients)")


def redis_tls_closed(url: str, exc: BaseException) -> str:
    """What to say when a ``rediss://`` server closed the connection as it opened: with TLS 1.3
    a server that requires a client certificate (``tls-auth-clients yes``) accepts the
    handshake and then closes the connection of a client that sent none, or one it does not
    trust; the client only sees the reset."""
    return (f"Redis at {masked_url(url)} closed the TLS connection at once ({exc}): a server "
            "that requires client certificates (tls-auth-clients yes) does that to a client "
            "without one it trusts: check STREAMPROC_REDIS_SSL_CERTFILE and "
            "STREAMPROC_REDIS_SSL_KEYFILE (a certificate signed by the CA of the server's "
            "tls-ca-cert-file)")


def redis_refusal(url: str, exc: BaseException) -> str | None:
    """The message when Redis answered and refused (the credentials, the TLS handshake, or a
    TLS connection closed at once for want of a client certificate), which no retry cures;
    None for any other error (not reachable, timed out, ...)."""
    # Imported here: redis-py takes 0.4 s to import, and every command imports this module.
    import ssl

    from redis.exceptions import AuthenticationError

    tls = urlsplit(url).scheme == "rediss"
    cause: BaseException | None = exc
    while cause is not None:  # redis-py wraps the socket's error in its ConnectionError
        if isinstance(cause, AuthenticationError):
            return redis_credentials_refused(url, exc)
        if isinstance(cause, ssl.SSLError) or "[SSL" in str(cause):
            return redis_tls_failed(url, exc)
        if tls and (isinstance(cause, ConnectionResetError)
                    or "Connection reset by peer" in str(cause)):
            return redis_tls_closed(url, exc)
        cause = cause.__cause__ or cause.__context__
    return None


def redis_unreachable(url: str, exc: BaseException, *, why: str = "", otherwise: str = "",
                      kind: type[StreamprocError] = StreamprocError) -> StreamprocError:
    """The error (a ``kind``) for a Redis that does not answer: where (credentials left out),
    the client's reason, ``why`` the command needs it, and what to do (``otherwise``: a way
    around it). A Redis that answered but refused the credentials or the TLS handshake gets
    ``redis_refusal``'s message instead.

    >>> print(redis_unreachable("redis://:pw@127.0.0.1:1/0", OSError("refused"),
    ...                         why="the workers' heartbeats live there"))
    cannot reach Redis at redis://127.0.0.1:1/0 (refused): the workers' heartbeats live there. \
Is the stack up? Run `streamproc stack up` or set STREAMPROC_REDIS_URL
    >>> print(redis_unreachable("redis://h:6379/0", OSError("refused"),
    ...                         otherwise="give --bandit-snapshot FILE"))
    cannot reach Redis at redis://h:6379/0 (refused). Is the stack up? Run `streamproc stack up`, \
set STREAMPROC_REDIS_URL, or give --bandit-snapshot FILE
    >>> from redis.exceptions import AuthenticationError
    >>> print(redis_unreachable("redis://u:pw@h:6379/0", AuthenticationError("WRONGPASS ...")))
    ... # doctest: +ELLIPSIS
    Redis at redis://u:***@h:6379/0 refused the credentials (WRONGPASS ...): check the user ...
    """
    refused = redis_refusal(url, exc)
    if refused is not None:
        return kind(refused)
    fixes = ["Run `streamproc stack up`", "set STREAMPROC_REDIS_URL"]
    fixes += [otherwise] if otherwise else []
    fix = " or ".join(fixes) if len(fixes) == 2 else f"{', '.join(fixes[:-1])}, or {fixes[-1]}"
    because = f": {why}" if why else ""
    return kind(f"cannot reach Redis at {shown_url(url)} ({exc}){because}. Is the stack up? {fix}")
