"""Redis passwords stay out of what people see, with a real Redis ACL user: ``streamproc
status`` (text and JSON), ``settings``, ``profile`` errors and a worker's log; the URL can come
from a file (``STREAMPROC_REDIS_URL_FILE``, as Docker secrets are mounted)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid

import pytest

from .conftest import BASE, TEST_REDIS_DB, Env

pytestmark = pytest.mark.integration


async def test_an_acl_user_s_password_never_shows(stack_env: Env, test_redis) -> None:
    user = f"trust-{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    host, port = BASE.redis_host_port
    url = f"redis://{user}:{password}@{host}:{port}/{TEST_REDIS_DB}"
    await test_redis.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*",
                                     "+@all")
    try:
        secret_file = stack_env.tmp / "redis-url"
        secret_file.write_text(url + "\n")
        stack_env.env["STREAMPROC_REDIS_URL_FILE"] = str(secret_file)
        del stack_env.env["STREAMPROC_REDIS_URL"]
        seen: list[str] = []

        def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
            done = subprocess.run([sys.executable, "-m", "streamproc.cli", *args],
                                  env=env or stack_env.env, capture_output=True, text=True,
                                  timeout=60, cwd=stack_env.tmp)
            seen.append(done.stdout + done.stderr)
            return done

        # The ACL user works: a profile lookup reaches Redis and finds nobody.
        missing = run("profile", stack_env.customer())
        assert missing.returncode == 1, missing.stderr
        assert await test_redis.execute_command("ACL", "GETUSER", user)

        shown = run("settings")
        assert shown.returncode == 0, shown.stderr
        line = next(li for li in shown.stdout.splitlines() if "STREAMPROC_REDIS_URL " in li)
        assert f"{user}:***@" in line and "STREAMPROC_REDIS_URL_FILE" in line, line

        for args in (("status",), ("status", "--json")):
            done = run(*args)
            assert done.returncode in (0, 3), done.stderr  # no worker: 3
            assert f"{user}:***@" in done.stdout

        # A wrong password: the errors and a worker's start-up failure say where, not what.
        wrong = f"wrong-{uuid.uuid4().hex}"
        bad_env = {**stack_env.env, "STREAMPROC_STARTUP_TIMEOUT_S": "2"}
        del bad_env["STREAMPROC_REDIS_URL_FILE"]
        bad_env["STREAMPROC_REDIS_URL"] = url.replace(password, wrong)
        failed = run("profile", stack_env.customer(), env=bad_env)
        assert failed.returncode != 0 and "invalid username-password" in failed.stderr
        worker = run("worker", env=bad_env)
        assert worker.returncode == 2, worker.stderr[-2000:]
        assert "refused the credentials" in worker.stderr + worker.stdout
        broken = run("settings", env={**bad_env, "STREAMPROC_REDIS_URL": url.replace(
            "redis://", "http://").replace(password, wrong)})
        assert broken.returncode != 0 and "http://" in broken.stderr

        for output in seen:
            assert password not in output and wrong not in output, output[-3000:]
    finally:
        await test_redis.execute_command("ACL", "DELUSER", user)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def refusal_line(output: str) -> str:
    """The one line that says Redis refused the login, or a failure naming what was said."""
    lines = [li for li in output.splitlines() if "refused the credentials" in li]
    assert lines, output[-3000:]
    return lines[0]


async def test_refused_credentials_are_said_as_such_not_as_an_unreachable_redis(
        stack_env: Env, test_redis) -> None:
    """A wrong password and an unknown ACL user, against the real Redis: the CLI, a worker and
    `streamproc serve` each stop at once with one line saying Redis refused the credentials,
    where to fix them, the user name and no password; nothing says "cannot reach" or "is the
    stack up?", which sends people to a Redis that is up."""
    user = f"trust-{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    wrong = f"wrong-{uuid.uuid4().hex}"
    host, port = BASE.redis_host_port
    await test_redis.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*",
                                     "+@all")
    try:
        for name in (user, f"nobody-{user}"):  # a wrong password; an unknown user
            url = f"redis://{name}:{wrong}@{host}:{port}/{TEST_REDIS_DB}"
            env = {**stack_env.env, "STREAMPROC_REDIS_URL": url,
                   "STREAMPROC_STARTUP_TIMEOUT_S": "30"}
            for args in (("profile", stack_env.customer()), ("status",), ("worker",),
                         ("serve", "--port", str(unused_port()))):
                started = time.monotonic()
                done = subprocess.run([sys.executable, "-m", "streamproc.cli", *args], env=env,
                                      capture_output=True, text=True, timeout=90,
                                      cwd=stack_env.tmp)
                output = done.stdout + done.stderr
                assert done.returncode == 2, (name, args, output[-3000:])
                line = refusal_line(output)
                assert f"{name}:***@{host}:{port}/{TEST_REDIS_DB}" in line, line
                assert "STREAMPROC_REDIS_URL or STREAMPROC_REDIS_URL_FILE" in line, line
                assert "cannot reach" not in output and "stack up" not in output, output[-3000:]
                assert wrong not in output and password not in output
                # Refused is final: no waiting out STREAMPROC_STARTUP_TIMEOUT_S (30 s).
                assert time.monotonic() - started < 25, (name, args)
    finally:
        await test_redis.execute_command("ACL", "DELUSER", user)
