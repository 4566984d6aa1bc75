"""The options every Kafka client of streamproc is built with: the brokers and how to reach
them securely (TLS, SASL), from the ``STREAMPROC_KAFKA_*`` settings.

Every ``AIOKafkaProducer`` takes ``**producer_options(settings)`` (the same, plus ``acks=all``
and idempotence); every ``AIOKafkaConsumer``, ``AIOKafkaAdminClient`` and
``AIOKafkaClient`` takes ``**kafka_options(settings)``, and the worker's Faust app takes
:func:`faust_credentials`; ``tests/unit/test_kafka_options.py`` checks that no client is built
without them, so that no command or process talks to a secured cluster in clear.

>>> kafka_options(Settings(kafka_bootstrap="k1:9092,k2:9092"))
{'bootstrap_servers': 'k1:9092,k2:9092', 'security_protocol': 'PLAINTEXT'}
>>> sasl = kafka_options(Settings(kafka_security_protocol="SASL_PLAINTEXT",
...     kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="alice",
...     kafka_sasl_password="s3cret"))
>>> sasl["sasl_mechanism"], sasl["sasl_plain_username"], "ssl_context" in sasl
('SCRAM-SHA-512', 'alice', False)
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from aiokafka.helpers import create_ssl_context

from streamproc.errors import ConfigError
from streamproc.settings import Settings


def kafka_options(settings: Settings) -> dict[str, Any]:
    """aiokafka's keyword arguments for ``settings``: ``bootstrap_servers``,
    ``security_protocol`` and, as the protocol needs them, the SASL ones and ``ssl_context``.

    Raises ConfigError, naming the setting, when a certificate, key or CA file cannot be used.
    """
    return {"bootstrap_servers": settings.kafka_bootstrap, **security_options(settings)}


def producer_options(settings: Settings) -> dict[str, Any]:
    """:func:`kafka_options` plus what every producer of streamproc writes with: ``acks=all``
    (acknowledged once every in-sync replica has the record; see
    :mod:`streamproc.stack.replication`) and idempotence (a retry after a lost acknowledgement
    or a leader's failover never writes a record twice, nor out of order).

    >>> producer_options(Settings())["acks"], producer_options(Settings())["enable_idempotence"]
    ('all', True)
    """
    return {**kafka_options(settings), "acks": "all", "enable_idempotence": True}


def security_options(settings: Settings) -> dict[str, Any]:
    """:func:`kafka_options` without ``bootstrap_servers``, for a connection to one broker."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in {"SASL_PLAINTEXT", "SASL_SSL"}:
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=settings.kafka_sasl_password)
    if protocol in {"SSL", "SASL_SSL"}:
        options["ssl_context"] = tls_context(settings)
    return options


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of a client: the CA file (else the system's CAs), the client's own
    certificate and key for mutual TLS, and the hostname check."""
    for name, path in (("KAFKA_SSL_CAFILE", settings.kafka_ssl_cafile),
                       ("KAFKA_SSL_CERTFILE", settings.kafka_ssl_certfile),
                       ("KAFKA_SSL_KEYFILE", settings.kafka_ssl_keyfile)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"STREAMPROC_{name}={path}: no such file")
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=_text(settings.kafka_ssl_cafile),
            certfile=_text(settings.kafka_ssl_certfile),
            keyfile=_text(settings.kafka_ssl_keyfile),
            password=settings.kafka_ssl_key_password or None)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(
            "cannot load the Kafka TLS files (STREAMPROC_KAFKA_SSL_CAFILE, "
            f"STREAMPROC_KAFKA_SSL_CERTFILE, STREAMPROC_KAFKA_SSL_KEYFILE, "
            f"STREAMPROC_KAFKA_SSL_KEY_PASSWORD): {exc}") from None
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def faust_credentials(settings: Settings) -> dict[str, Any]:
    """The Faust app's options for the same security: ``broker_credentials`` (faust-streaming
    hands them to its aiokafka producer, consumer and admin client); none for PLAINTEXT.

    >>> faust_credentials(Settings())
    {}
    >>> creds = faust_credentials(Settings(kafka_security_protocol="SASL_PLAINTEXT",
    ...     kafka_sasl_username="alice", kafka_sasl_password="s3cret"))["broker_credentials"]
    >>> creds.protocol.value, creds.mechanism.value, creds.username
    ('SASL_PLAINTEXT', 'PLAIN', 'alice')
    """
    import faust  # here, not at the top: the light commands need no Faust

    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    if protocol == "SSL":
        return {"broker_credentials": faust.SSLCredentials(tls_context(settings))}
    context = tls_context(settings) if protocol == "SASL_SSL" else None
    return {"broker_credentials": faust.SASLCredentials(
        username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
        ssl_context=context, mechanism=settings.kafka_sasl_mechanism)}


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)
