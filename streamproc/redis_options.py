"""How every Redis client of streamproc connects: the URL (``STREAMPROC_REDIS_URL``, with the
user and password of an ACL user, ``rediss://`` for TLS) and, for TLS, the CA and the client's
certificate from the ``STREAMPROC_REDIS_SSL_*`` settings.

Every client is made by :func:`redis_client` (or ``RedisStore.from_settings``, which uses it);
``tests/unit/test_redis_options.py`` checks that nothing in streamproc calls ``from_url`` on its
own, so that no command reaches a TLS Redis without the CA it was given.

>>> redis_options(Settings())
{}
>>> redis_options(Settings(redis_url="rediss://cache:6380/0"))  # the system's CAs
{}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster

from streamproc.errors import ConfigError
from streamproc.settings import Settings

# What a client raises when Redis cannot be reached: a node's connection error, or on a
# cluster no start-up node answering (RedisClusterUnreachableError, not a ConnectionError).
UNREACHABLE: tuple[type[Exception], ...] = (redis.exceptions.ConnectionError,
                                            redis.exceptions.RedisClusterUnreachableError)
# What a command may raise when Redis is away or refuses it, timeouts included: on a cluster
# also RedisClusterException (no RedisError: none of the cluster's nodes answering, say).
FAILURES: tuple[type[Exception], ...] = (redis.exceptions.RedisError,
                                         redis.exceptions.RedisClusterException, OSError)


def redis_options(settings: Settings) -> dict[str, Any]:
    """redis-py's TLS keyword arguments for ``settings`` (none for ``redis://``: its plain
    connections take no TLS options). redis-py checks the server's certificate and host name
    by default (``ssl_cert_reqs="required"``, ``ssl_check_hostname=True``).

    Raises ConfigError, naming the setting, when a file does not exist.
    """
    if not urlsplit(settings.redis_url).scheme.startswith("rediss"):
        return {}
    options: dict[str, Any] = {}
    for name, option, path in (
            ("REDIS_SSL_CAFILE", "ssl_ca_certs", settings.redis_ssl_cafile),
            ("REDIS_SSL_CERTFILE", "ssl_certfile", settings.redis_ssl_certfile),
            ("REDIS_SSL_KEYFILE", "ssl_keyfile", settings.redis_ssl_keyfile)):
        if path is None:
            continue
        if not Path(path).is_file():
            raise ConfigError(f"STREAMPROC_{name}={path}: no such file")
        options[option] = str(path)
    return options


def redis_client(settings: Settings, **kwargs: Any) -> aioredis.Redis:
    """An asyncio Redis client of ``settings.redis_url`` with the TLS options; ``kwargs`` are
    redis-py's (timeouts, ``decode_responses``, ...).

    On a Redis Cluster (``settings.redis_is_cluster``) a :class:`RedisCluster`, which speaks the
    same commands (routed by key slot, following MOVED and failovers) and is typed as a
    ``Redis`` for its callers; what needs to know asks :func:`is_cluster`.
    """
    if settings.redis_is_cluster:
        return cast(aioredis.Redis, cluster_client(settings, **kwargs))
    return aioredis.from_url(settings.redis_url, **redis_options(settings), **kwargs)


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The start-up nodes of a cluster URL: ``redis+cluster://[user:password@]host:port,...``.

    >>> cluster_nodes("redis+cluster://a:7000,b:7001/0")
    [('a', 7000), ('b', 7001)]
    >>> cluster_nodes("redis://u:p@10.0.0.5")
    [('10.0.0.5', 6379)]
    """
    hosts = urlsplit(url).netloc.rpartition("@")[2]
    nodes = []
    for part in hosts.split(","):
        host, _, port = part.strip().rpartition(":") if ":" in part else (part, "", "6379")
        if not host or not port.isdigit():
            raise ConfigError(f"STREAMPROC_REDIS_URL: {part!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def cluster_client(settings: Settings, **kwargs: Any) -> RedisCluster:
    """A :class:`RedisCluster` started from every node the URL names, with its user, password
    and TLS options."""
    parts = urlsplit(settings.redis_url)
    auth = parts.netloc.rpartition("@")[0]
    user, _, password = auth.partition(":")
    options: dict[str, Any] = dict(redis_options(settings), **kwargs)
    if parts.scheme.startswith("rediss"):
        options["ssl"] = True
    if user:
        options["username"] = unquote(user)
    if password:
        options["password"] = unquote(password)
    return RedisCluster(startup_nodes=[ClusterNode(host, port)
                                       for host, port in cluster_nodes(settings.redis_url)],
                        **options)


def is_cluster(client: Any) -> bool:
    """True for a Redis Cluster client (see :func:`redis_client`)."""
    return isinstance(client, RedisCluster)
