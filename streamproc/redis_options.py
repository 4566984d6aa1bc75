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
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from streamproc.errors import ConfigError
from streamproc.settings import Settings


def redis_options(settings: Settings) -> dict[str, Any]:
    """redis-py's TLS keyword arguments for ``settings`` (none for ``redis://``: its plain
    connections take no TLS options). redis-py checks the server's certificate and host name
    by default (``ssl_cert_reqs="required"``, ``ssl_check_hostname=True``).

    Raises ConfigError, naming the setting, when a file does not exist.
    """
    if urlsplit(settings.redis_url).scheme != "rediss":
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
    redis-py's (timeouts, ``decode_responses``, ...)."""
    return aioredis.from_url(settings.redis_url, **redis_options(settings), **kwargs)
