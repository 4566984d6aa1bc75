"""Redis over TLS (``rediss://``) with an ACL user, against a real redis-server that the test
starts with a TLS port and client certificates required (``tls-auth-clients yes``), its
certificates made here with openssl: a worker keeps a customer's profile there and the CLI reads
it back, both through STREAMPROC_REDIS_SSL_*; a client without the CA, or without its
certificate, is refused with a message that says so."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis

from streamproc.state.keys import customer_key

from .conftest import Env
from .test_timers import at

pytestmark = pytest.mark.integration

USER, PASSWORD = "streamproc-app", "tls-test-password-5f1e"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(where: Path) -> None:
    """A CA; a server certificate for 127.0.0.1 and localhost; a client certificate."""
    openssl("req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=streamproc test CA", cwd=where)
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                            ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", "-subj", f"/CN=streamproc {name}", cwd=where)
        (where / f"{name}.ext").write_text(extension + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                "-extfile", f"{name}.ext", cwd=where)


@dataclass
class TlsRedis:
    port: int
    pki: Path

    @property
    def url(self) -> str:
        return f"rediss://{USER}:{PASSWORD}@127.0.0.1:{self.port}/0"

    def settings(self, *, ca: bool = True, cert: bool = True) -> dict[str, str]:
        env = {"STREAMPROC_REDIS_URL": self.url}
        if ca:
            env["STREAMPROC_REDIS_SSL_CAFILE"] = str(self.pki / "ca.pem")
        if cert:
            env["STREAMPROC_REDIS_SSL_CERTFILE"] = str(self.pki / "client.pem")
            env["STREAMPROC_REDIS_SSL_KEYFILE"] = str(self.pki / "client.key")
        return env

    def client(self) -> aioredis.Redis:
        return aioredis.from_url(self.url, ssl_ca_certs=str(self.pki / "ca.pem"),
                                 ssl_certfile=str(self.pki / "client.pem"),
                                 ssl_keyfile=str(self.pki / "client.key"))


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    """Debian's redis-server, built with TLS, on a TLS port only (no plain port), with the
    default user off and one ACL user."""
    server = shutil.which("redis-server")
    assert server, "redis-server is not installed"
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    port = unused_port()
    proc = subprocess.Popen(
        [server, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(pki / "server.pem"), "--tls-key-file", str(pki / "server.key"),
         "--tls-ca-cert-file", str(pki / "ca.pem"), "--tls-auth-clients", "yes",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
         "--logfile", str(tmp_path / "redis-tls.log"),
         "--user", "default", "off",
         "--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all"])
    try:
        yield TlsRedis(port, pki)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def wait_ready(tls: TlsRedis, timeout_s: float = 15) -> None:
    client = tls.client()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                if await client.ping():
                    return
            except (OSError, aioredis.ConnectionError) as exc:
                if time.monotonic() > deadline:
                    log = (tls.pki.parent / "redis-tls.log")
                    pytest.fail(f"the TLS redis-server does not answer ({exc}):\n"
                                f"{log.read_text() if log.exists() else '(no log)'}")
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()


@pytest.fixture
async def ready_tls_redis(tls_redis: TlsRedis) -> AsyncIterator[TlsRedis]:
    await wait_ready(tls_redis)
    yield tls_redis


async def test_a_worker_keeps_profiles_in_a_tls_redis_and_the_cli_reads_them(
        stack_env: Env, ready_tls_redis: TlsRedis, test_redis) -> None:
    tls = ready_tls_redis
    stack_env.env.update(tls.settings())
    stack_env.start_worker()
    cid = stack_env.customer("tls")
    await stack_env.produce_events(stack_env.settings.topics.browsing,
                                   [at("page_view", cid, int(time.time() * 1000))])

    async with asyncio.timeout(90):
        while True:
            shown = stack_env.cli("profile", cid)  # through rediss:// too
            assert shown.returncode in (0, 1), shown.stderr + stack_env.worker_log()
            if shown.returncode == 0:
                break
            await asyncio.sleep(0.3)
    assert orjson.loads(shown.stdout)["customer_id"] == cid
    client = tls.client()
    try:
        assert await client.exists(customer_key(cid)) == 1
    finally:
        await client.aclose()
    # Nothing went to the plain Redis of the stack instead.
    assert await test_redis.exists(customer_key(cid)) == 0
    assert PASSWORD not in stack_env.worker_log()


@pytest.mark.parametrize(("ca", "cert", "check"), [
    (False, True, "STREAMPROC_REDIS_SSL_CAFILE"),
    (True, False, "STREAMPROC_REDIS_SSL_CERTFILE"),
])
async def test_a_client_without_the_ca_or_its_certificate_is_told_what_to_set(
        stack_env: Env, ready_tls_redis: TlsRedis, ca: bool, cert: bool, check: str) -> None:
    env = {**stack_env.env, **ready_tls_redis.settings(ca=ca, cert=cert),
           "STREAMPROC_STARTUP_TIMEOUT_S": "20"}
    for args in (("profile", stack_env.customer()), ("worker",)):
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "streamproc.cli", *args], env=env,
                              capture_output=True, text=True, timeout=90, cwd=stack_env.tmp)
        output = done.stdout + done.stderr
        assert done.returncode == 2, (args, output[-3000:])
        assert "TLS" in output and check in output, (args, output[-3000:])
        assert "stack up" not in output and PASSWORD not in output, output[-3000:]
        assert time.monotonic() - started < 18, args  # final: STREAMPROC_STARTUP_TIMEOUT_S unused

