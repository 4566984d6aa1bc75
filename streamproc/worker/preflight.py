"""Checks a worker makes before it joins the consumer group: Redis answers a PING, a Kafka
broker answers a metadata request for the input topics, the topics an erasure's tombstones
must reach are compacted, and every topic has the configured replicas and
``min.insync.replicas`` (:func:`check_topic_configs`).

A worker that joined the group without a working Redis took its share of the partitions and
retried its batches for ever, holding those partitions away from the healthy workers. Checked
first, it exits instead, with the reason and what to do. Both are retried until
``STREAMPROC_STARTUP_TIMEOUT_S`` (a stack or a container still starting is no error), in
parallel, so the whole check takes that long at most.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

import redis.exceptions
from aiokafka.client import AIOKafkaClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from streamproc.errors import UnreachableError, masked_url, redis_refusal
from streamproc.kafka_options import kafka_options, security_options
from streamproc.redis_options import redis_client
from streamproc.settings import Settings
from streamproc.stack.replication import replication_advice, under_replicated
from streamproc.stack.topics import (
    TopicConfigError,
    compacted_topics,
    compaction_advice,
    not_compacted,
    topic_configs,
    topic_replication,
)

log = logging.getLogger(__name__)

# One attempt's longest wait: a host that drops packets answers nothing, not even a refusal.
ATTEMPT_TIMEOUT_S = 5.0
RETRY_EVERY_S = 1.0
# Errors a retry cannot cure: the server answered, and said no.
_FINAL_REDIS_ERRORS = (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError)
# A broker that refused the credentials or the TLS handshake refuses them again.
_FINAL_KAFKA_ERRORS = (SaslAuthenticationFailed, UnsupportedSaslMechanismError,
                       IllegalSaslStateError, ssl.SSLError)


class RedisRefusedError(Exception):
    """Redis answered and refused the credentials or the TLS handshake: not retried."""


def redacted(url: str) -> str:
    """A URL without its password, to print.

    >>> redacted("redis://:s3cret@cache:6379/0"), redacted("redis://127.0.0.1:6379/0")
    ('redis://:***@cache:6379/0', 'redis://127.0.0.1:6379/0')
    """
    return masked_url(url)


def describe(exc: BaseException) -> str:
    """An error as one short phrase: 'Connection refused' rather than redis-py's errno text.

    >>> describe(ConnectionRefusedError(111, "Connect call failed"))
    'Connection refused'
    >>> describe(TimeoutError())
    'no answer'
    """
    cause: BaseException | None = exc
    while cause is not None:  # redis-py wraps the socket's error
        if isinstance(cause, ConnectionRefusedError):
            return "Connection refused"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, TimeoutError):
        return "no answer"
    name, text = type(exc).__name__, str(exc)
    return text if text.startswith(name) else f"{name}: {text}" if text else name


def redis_advice(settings: Settings, error: str, waited_s: float) -> str:
    """What a worker that cannot reach Redis prints before it exits.

    >>> print(redis_advice(Settings(), "Connection refused", 30))  # doctest: +ELLIPSIS
    cannot reach Redis at redis://127.0.0.1:6379/0: Connection refused (tried for 30 s). Is it ...
    """
    return (f"cannot reach Redis at {redacted(settings.redis_url)}: {error} (tried for "
            f"{waited_s:.0f} s). Is it running? `streamproc stack up` starts the local one; "
            "otherwise set STREAMPROC_REDIS_URL to yours (STREAMPROC_STARTUP_TIMEOUT_S waits "
            "longer)")


def kafka_advice(settings: Settings, error: str, waited_s: float) -> str:
    """What a worker that cannot reach Kafka prints before it exits.

    >>> print(kafka_advice(Settings(), "no answer", 30))  # doctest: +ELLIPSIS
    cannot reach Kafka at 127.0.0.1:9092: no answer (tried for 30 s). Is it running? ...
    """
    return (f"cannot reach Kafka at {settings.kafka_bootstrap}: {error} (tried for "
            f"{waited_s:.0f} s). Is it running? `streamproc stack up` starts the local one; "
            "otherwise set STREAMPROC_KAFKA_BOOTSTRAP to your brokers "
            "(STREAMPROC_STARTUP_TIMEOUT_S waits longer)")


def kafka_refusal_advice(settings: Settings, exc: BaseException) -> str:
    """What a worker that Kafka answered but refused (credentials, TLS) prints before it exits.

    >>> print(kafka_refusal_advice(Settings(kafka_bootstrap="k:9093"),
    ...       SaslAuthenticationFailed("Authentication failed: Invalid username or password")))
    ... # doctest: +NORMALIZE_WHITESPACE
    Kafka at k:9093 refused the SASL login of user '' (mechanism PLAIN): Authentication failed:
    Invalid username or password. Check STREAMPROC_KAFKA_SASL_USERNAME,
    STREAMPROC_KAFKA_SASL_PASSWORD and STREAMPROC_KAFKA_SASL_MECHANISM
    """
    if isinstance(exc, ssl.SSLError):
        return (f"Kafka at {settings.kafka_bootstrap} failed the TLS handshake "
                f"({describe(exc)}): check STREAMPROC_KAFKA_SSL_CAFILE (the CA of the brokers' "
                "certificates), STREAMPROC_KAFKA_SSL_CERTFILE and "
                "STREAMPROC_KAFKA_SSL_KEYFILE (when the brokers "
                "ask for a client certificate) and STREAMPROC_KAFKA_SECURITY_PROTOCOL="
                f"{settings.kafka_security_protocol} (the listener's)")
    # aiokafka's text is "[Error 58] SaslAuthenticationFailed: <the broker's message>".
    said = str(exc.args[0]) if exc.args and exc.args[0] else type(exc).__name__
    return (f"Kafka at {settings.kafka_bootstrap} refused the SASL login of user "
            f"{settings.kafka_sasl_username!r} (mechanism {settings.kafka_sasl_mechanism}): "
            f"{said.rstrip('.')}. Check STREAMPROC_KAFKA_SASL_USERNAME, "
            "STREAMPROC_KAFKA_SASL_PASSWORD and STREAMPROC_KAFKA_SASL_MECHANISM")


async def ping_redis(settings: Settings, timeout_s: float) -> None:
    client = redis_client(settings, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        await asyncio.wait_for(client.ping(), timeout_s)
    finally:
        await client.aclose()


async def connect_any(bootstrap: str, timeout_s: float) -> None:
    """Open (and close) a TCP connection to the first of the ``host:port,...`` list that takes
    one; raise the last error when none does."""
    error: BaseException = ConnectionError(f"no server in {bootstrap!r}")
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)),
                                               timeout_s)
        except (OSError, TimeoutError) as exc:
            error = exc
            continue
        writer.close()
        return
    raise error


async def kafka_login(settings: Settings, timeout_s: float) -> None:
    """Open (and close) one connection to the first broker that answers, with the TLS
    handshake and SASL login of ``options``: it raises the broker's refusal itself, which
    ``AIOKafkaClient.bootstrap`` would turn into "Unable to bootstrap"."""
    error: BaseException = ConnectionError(f"no server in {settings.kafka_bootstrap!r}")
    for server in settings.kafka_bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000),
                            **security_options(settings)), timeout_s)
        except _FINAL_KAFKA_ERRORS:
            raise
        except (OSError, TimeoutError) as exc:
            error = exc
            continue
        conn.close()
        return
    raise error


async def kafka_metadata(settings: Settings, topics: tuple[str, ...], timeout_s: float) -> None:
    """Ask a broker for the metadata of ``topics`` (a missing topic is no error here: the
    worker creates it next)."""
    # Says "Connection refused" where aiokafka cannot.
    await connect_any(settings.kafka_bootstrap, timeout_s)
    if settings.kafka_security_protocol != "PLAINTEXT":
        await kafka_login(settings, timeout_s)  # a refusal, said as the broker said it
    client = AIOKafkaClient(**kafka_options(settings), request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        for topic in topics:
            client.add_topic(topic)
        if not await asyncio.wait_for(client.force_metadata_update(), timeout_s):
            raise ConnectionError("no broker answered a metadata request")
    finally:
        await client.close()


async def retry_until(what: str, attempt: Callable[[float], Awaitable[None]], timeout_s: float,
                      final: tuple[type[BaseException], ...] = (),
                      clock: Callable[[], float] | None = None,
                      sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> str | None:
    """Call ``attempt(its_timeout)`` until it returns, or ``timeout_s`` has passed, or it raised
    one of ``final``; None when it succeeded, else the last error, described.

    >>> async def refused(t): raise ConnectionRefusedError(111, "refused")
    >>> now = iter(range(100))
    >>> async def no_sleep(s): pass
    >>> asyncio.run(retry_until("x", refused, 3, clock=lambda: next(now), sleep=no_sleep))
    'Connection refused'
    """
    clock = clock or asyncio.get_running_loop().time
    deadline = clock() + timeout_s
    while True:
        left = deadline - clock()
        try:
            await attempt(max(0.5, min(ATTEMPT_TIMEOUT_S, left)))
            return None
        except final as exc:
            return describe(exc)
        except Exception as exc:
            error = describe(exc)
        if deadline - clock() <= 0:
            return error
        log.warning("%s does not answer yet (%s); retrying for another %.0f s", what, error,
                    deadline - clock())
        await sleep(min(RETRY_EVERY_S, max(0.0, deadline - clock())))


async def check_dependencies(settings: Settings) -> None:
    """Return when Redis and Kafka both answer; raise UnreachableError, with the reason and what
    to do, when either does not within ``settings.startup_timeout_s``."""
    timeout = settings.startup_timeout_s
    kafka_options(settings)  # a TLS file that cannot be used: ConfigError now, not retried
    refused: list[BaseException] = []
    redis_refused: list[str] = []

    async def redis_attempt(t: float) -> None:
        try:
            await ping_redis(settings, t)
        except Exception as exc:
            said = redis_refusal(settings.redis_url, exc)
            if said is None:
                raise
            redis_refused.append(said)
            raise RedisRefusedError(said) from None

    async def kafka_attempt(t: float) -> None:
        try:
            await kafka_metadata(settings, settings.topics.inputs, t)
        except _FINAL_KAFKA_ERRORS as exc:
            refused.append(exc)
            raise

    # aiokafka logs every failed connection at ERROR: the warnings here say it once a second.
    kafka_log = logging.getLogger("aiokafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        redis_error, kafka_error = await asyncio.gather(
            retry_until("Redis", redis_attempt, timeout,
                        final=(*_FINAL_REDIS_ERRORS, RedisRefusedError)),
            retry_until("Kafka", kafka_attempt, timeout, final=_FINAL_KAFKA_ERRORS))
    finally:
        kafka_log.setLevel(level)
    problems = []
    if redis_refused:
        problems.append(redis_refused[-1])
    elif redis_error is not None:
        problems.append(redis_advice(settings, redis_error, timeout))
    if refused:
        problems.append(kafka_refusal_advice(settings, refused[-1]))
    elif kafka_error is not None:
        problems.append(kafka_advice(settings, kafka_error, timeout))
    if problems:
        raise UnreachableError("; and ".join(problems))


async def check_topic_configs(settings: Settings) -> None:
    """Raise TopicConfigError, with the reason and the commands that fix it, when a topic of
    :func:`~streamproc.stack.topics.compacted_topics` is not compacted (a worker on it would
    publish erasure tombstones that delete nothing), or when a topic has fewer replicas or a
    lower ``min.insync.replicas`` than configured (:mod:`streamproc.stack.replication`). Run
    after the topics exist."""
    problems = []
    wrong = not_compacted(await topic_configs(settings, list(compacted_topics(settings))))
    if wrong:
        problems.append(compaction_advice(wrong, settings))
    few = under_replicated(await topic_replication(settings, list(settings.topics.all())),
                           settings)
    if few:
        problems.append(replication_advice(few, settings))
    if problems:
        raise TopicConfigError("refusing to start: " + "; and ".join(problems))
