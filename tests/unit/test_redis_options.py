"""Every Redis client of streamproc gets the TLS settings (streamproc.redis_options), and those
follow the STREAMPROC_REDIS_SSL_* settings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from streamproc.errors import ConfigError
from streamproc.redis_options import redis_client, redis_options
from streamproc.settings import KNOWN_VARIABLES, Settings

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "streamproc").rglob("*.py"))


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def without_options(tree: ast.AST) -> list[str]:
    """Redis clients made in ``tree`` without passing options on (``**...``): a
    ``from_url(url)`` of its own, or ``Redis(...)`` directly: ``line: call``."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        spread = any(kw.arg is None for kw in node.keywords)
        if (name == "from_url" and not spread) or name in {"Redis", "StrictRedis"}:
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_check_finds_a_client_without_the_options() -> None:
    tree = ast.parse("import redis.asyncio as aioredis\n"
                     "a = aioredis.from_url(settings.redis_url, decode_responses=False)\n"
                     "b = redis_client(settings, socket_timeout=1)\n"
                     "c = RedisStore.from_url(settings.redis_url, **redis_options(settings))\n"
                     "d = aioredis.Redis(host='h')\n")
    assert without_options(tree) == [
        "2: aioredis.from_url(settings.redis_url, decode_responses=False)",
        "5: aioredis.Redis(host='h')"]


def test_every_redis_client_gets_the_options() -> None:
    problems = [f"{path.relative_to(ROOT)}:{found}" for path in SOURCES
                for found in without_options(ast.parse(path.read_text()))]
    assert problems == []


def test_plain_redis_takes_no_tls_options() -> None:
    assert redis_options(Settings()) == {}
    assert redis_options(Settings(redis_url="unix:///run/redis.sock")) == {}


def test_rediss_takes_the_ca_and_the_client_certificate(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    settings = Settings.from_env({
        "STREAMPROC_REDIS_URL": "rediss://app:pw@cache:6380/0",
        "STREAMPROC_REDIS_SSL_CAFILE": str(tmp_path / "ca.pem"),
        "STREAMPROC_REDIS_SSL_CERTFILE": str(tmp_path / "client.pem"),
        "STREAMPROC_REDIS_SSL_KEYFILE": str(tmp_path / "client.key")})
    assert redis_options(settings) == {"ssl_ca_certs": str(tmp_path / "ca.pem"),
                                       "ssl_certfile": str(tmp_path / "client.pem"),
                                       "ssl_keyfile": str(tmp_path / "client.key")}
    pool = redis_client(settings).connection_pool
    assert pool.connection_class.__name__ == "SSLConnection"
    assert pool.connection_kwargs["ssl_ca_certs"] == str(tmp_path / "ca.pem")
    assert {"STREAMPROC_REDIS_SSL_CAFILE", "STREAMPROC_REDIS_SSL_CERTFILE",
            "STREAMPROC_REDIS_SSL_KEYFILE"} <= KNOWN_VARIABLES


def test_a_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    settings = Settings(redis_url="rediss://cache:6380/0", redis_ssl_cafile=tmp_path / "no.pem")
    with pytest.raises(ConfigError, match=r"STREAMPROC_REDIS_SSL_CAFILE=.*no\.pem: no such file"):
        redis_options(settings)


@pytest.mark.parametrize(("env", "error"), [
    ({"STREAMPROC_REDIS_SSL_CAFILE": "/etc/ca.pem"},
     "STREAMPROC_REDIS_SSL_CAFILE is for Redis over TLS"),
    ({"STREAMPROC_REDIS_URL": "rediss://:secret@cache:6380/0",
      "STREAMPROC_REDIS_SSL_CERTFILE": "/etc/client.pem"},
     "STREAMPROC_REDIS_SSL_CERTFILE and STREAMPROC_REDIS_SSL_KEYFILE go together"),
])
def test_inconsistent_tls_settings_are_refused(env: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=error) as caught:
        Settings.from_env(env).validate()
    assert "secret" not in str(caught.value)


def test_a_cluster_url_or_setting_makes_a_cluster_client() -> None:
    from streamproc.redis_options import is_cluster

    assert not is_cluster(redis_client(Settings()))  # one Redis stays the default
    client = redis_client(Settings(redis_url="redis+cluster://u%40x:p%3Aw@10.0.0.1:7000,"
                                             "10.0.0.2:7001"))
    assert is_cluster(client)
    assert [(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()] == [
        ("10.0.0.1", 7000), ("10.0.0.2", 7001)]
    assert client.connection_kwargs["username"] == "u@x"
    assert client.connection_kwargs["password"] == "p:w"
    assert is_cluster(redis_client(Settings(redis_url="redis://10.0.0.1:7000",
                                            redis_cluster=True)))


def test_a_cluster_has_only_database_zero() -> None:
    with pytest.raises(ConfigError, match="only database 0"):
        Settings(redis_url="redis+cluster://10.0.0.1:7000/3").validate()
    with pytest.raises(ConfigError, match="not host:port"):
        redis_client(Settings(redis_url="redis+cluster://10.0.0.1:x"))
