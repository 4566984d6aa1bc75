"""The local Redis: the machine's ``redis-server``, run as a child with its files in the stack dir.

Layout under ``<stack_dir>/redis``: ``redis.conf``, the data (``dir``: the RDB snapshot and the
``appendonlydir`` of the append-only file, so that state survives a restart), ``redis.log`` (its
output) and ``redis.pid``. ``set-proc-title no`` keeps the command line as we started it
(``redis-server <abs path>/redis.conf``), which is how :func:`status` recognises our process.

If ``redis-server`` is missing it is installed with apt-get when that needs no password (root,
or passwordless sudo); otherwise the error says what to install.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import unquote, urlsplit

from streamproc.errors import StackError, masked_url
from streamproc.settings import Settings
from streamproc.stack.components import ComponentStatus, State
from streamproc.stack.holders import other_stack_hint, stack_holding
from streamproc.stack.process import (
    bind_address,
    check_pid,
    is_loopback,
    log_size,
    pid_alive,
    port_in_use,
    run,
    spawn,
    stop_pid,
    tail,
    wait_until,
)

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
APT_TIMEOUT_S = 600.0
# Log size when this process started Redis, so that a failure shows only this run's lines.
_log_starts: dict[Path, int] = {}
INSTALL_HINT = ("install it with `sudo apt-get install redis-server` "
                "(macOS: `brew install redis`), then retry")


@dataclass(frozen=True)
class RedisPaths:
    """Where Redis' files live; absolute, because the config path identifies our process."""

    root: Path

    @classmethod
    def of(cls, settings: Settings) -> RedisPaths:
        return cls(settings.stack_dir.expanduser().resolve() / "redis")

    @property
    def config(self) -> Path:
        return self.root / "redis.conf"

    @property
    def log(self) -> Path:
        return self.root / "redis.log"

    @property
    def pid(self) -> Path:
        return self.root / "redis.pid"


def is_local(settings: Settings) -> bool:
    """True for a ``redis://`` URL on a loopback host (TLS and unix sockets are not managed)."""
    return urlsplit(settings.redis_url).scheme == "redis" and is_loopback(
        settings.redis_host_port[0])


def _password(settings: Settings) -> str | None:
    password = urlsplit(settings.redis_url).password
    return unquote(password) if password else None


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render_conf(settings: Settings, paths: RedisPaths) -> str:
    """The config: loopback only, append-only persistence, log to stdout (our log file)."""
    host, port = settings.redis_host_port
    lines = [
        "# Written by `streamproc stack up` on every start; edits are overwritten.",
        f"port {port}",
        f"bind {bind_address(host)}",
        "protected-mode yes",
        "daemonize no",
        'logfile ""',
        f"dir {_quote(str(paths.root))}",
        "appendonly yes",
        "set-proc-title no",
        # A customer is one hash of three fields (doc, ver, outbox) whose doc is a few hundred
        # bytes to a few KB: listpack encoding keeps it about 0.5 KB smaller than a hashtable.
        # Recommended for production too (docs/benchmarks.md).
        "hash-max-listpack-value 4096",
    ]
    password = _password(settings)
    if password:  # the URL's password, for the default user
        lines.append(f"requirepass {_quote(password)}")
    return "\n".join(lines) + "\n"


def _resp(*parts: str) -> bytes:
    """A command in the Redis protocol (RESP) as an array of bulk strings."""
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def ping(host: str, port: int, password: str | None = None, timeout: float = 1.0) -> bool:
    """True if Redis answers PING with PONG (not while it is still loading its data)."""
    try:
        with socket.create_connection((bind_address(host), port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            with sock.makefile("rb") as reader:
                if password:
                    sock.sendall(_resp("AUTH", password))
                    if not reader.readline().startswith(b"+OK"):
                        return False
                sock.sendall(_resp("PING"))
                return reader.readline().startswith(b"+PONG")
    except OSError:
        return False


def status(settings: Settings) -> ComponentStatus:
    if not is_local(settings):
        return ComponentStatus("redis", "external", masked_url(settings.redis_url),
                               detail="not a local redis:// address: not managed by the stack")
    host, port = settings.redis_host_port
    address = f"{host}:{port}"
    paths = RedisPaths.of(settings)
    info = check_pid(paths.pid, str(paths.config))
    if info.state == "running":
        state: State = "running" if ping(host, port, _password(settings)) else "starting"
        return ComponentStatus("redis", state, address, info.pid, f"log: {paths.log}")
    if port_in_use(host, port):
        holder = stack_holding(port)
        if holder is not None:
            return ComponentStatus("redis", "other-stack", address, holder.pid, other_stack_hint(
                holder, f"{host}:{port} is", "choose a free port with STREAMPROC_REDIS_URL"))
        return ComponentStatus("redis", "port-taken", address, None, port_taken_hint(host, port))
    if info.state == "stale":
        return ComponentStatus("redis", "stale", address, info.pid, info.reason)
    return ComponentStatus("redis", "stopped", address)


def port_taken_hint(host: str, port: int) -> str:
    return (f"{host}:{port} is held by another program (not started by this stack, maybe a "
            "system Redis): stop it, or choose a free port with STREAMPROC_REDIS_URL")


def _can_sudo() -> bool:
    if os.geteuid() == 0:
        return True
    if shutil.which("sudo") is None:
        return False
    try:
        return subprocess.run(["sudo", "-n", "true"], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def install(out: TextIO) -> None:
    """``apt-get install -y redis-server``, as root or through passwordless sudo."""
    apt = shutil.which("apt-get")
    if apt is None or not _can_sudo():
        raise StackError(f"redis-server is not installed (not on PATH): {INSTALL_HINT}")
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    command = prefix + ["env", "DEBIAN_FRONTEND=noninteractive", apt, "install", "-y",
                        "redis-server"]
    print(f"redis: redis-server is not installed; running: {' '.join(command)}", file=out,
          flush=True)
    try:
        run(command, timeout=APT_TIMEOUT_S, what="apt-get install redis-server")
    except StackError:  # most often: no package lists yet (fresh container)
        print(f"redis: that failed; running: {' '.join(prefix + [apt, 'update'])} and retrying",
              file=out, flush=True)
        run(prefix + [apt, "update"], timeout=APT_TIMEOUT_S, what="apt-get update")
        run(command, timeout=APT_TIMEOUT_S, what="apt-get install redis-server")
    print("redis: redis-server installed", file=out, flush=True)


def prepare(settings: Settings, out: TextIO) -> str:
    """The ``redis-server`` executable, installed first if missing (and allowed)."""
    del settings  # same signature as kafka.prepare
    server = shutil.which("redis-server")
    if server is None:
        install(out)
        server = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
        if server is None:
            raise StackError(f"redis-server is still not on PATH after installing it: "
                             f"{INSTALL_HINT}")
    return server


def start(settings: Settings, server: str, out: TextIO) -> int:
    """Write the config and start ``redis-server`` with it; return its pid (no waiting)."""
    paths = RedisPaths.of(settings)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.pid.unlink(missing_ok=True)  # stale by now: the caller checked that ours is not running
    paths.config.write_text(render_conf(settings, paths))
    _log_starts[paths.log] = log_size(paths.log)
    host, port = settings.redis_host_port
    print(f"redis: starting {server} on {host}:{port} (log: {paths.log})", file=out, flush=True)
    return spawn([server, str(paths.config)], cwd=paths.root, log_file=paths.log,
                 pid_file=paths.pid)


def failure(settings: Settings, reason: str) -> StackError:
    paths = RedisPaths.of(settings)
    text = tail(paths.log, since=_log_starts.get(paths.log, 0))
    logs = f"--- last lines of {paths.log} ---\n{text}" if text else "(no log output)"
    return StackError(f"Redis: {reason}.\n{logs}\n"
                      "Fix the cause, then run `streamproc stack down` and `up` again.")


def wait_ready(settings: Settings, pid: int, out: TextIO) -> float:
    """Wait until Redis answers PING; return the seconds it took."""
    host, port = settings.redis_host_port
    password = _password(settings)
    return wait_until(lambda: ping(host, port, password), timeout=READY_TIMEOUT_S,
                      what=f"Redis on {host}:{port}", alive=lambda: pid_alive(pid),
                      on_fail=lambda r: failure(settings, r), out=out)


def stop(settings: Settings, out: TextIO) -> None:
    """Stop Redis if this stack started it (SIGTERM lets it flush the append-only file)."""
    paths = RedisPaths.of(settings)
    info = check_pid(paths.pid, str(paths.config))
    if info.state == "running" and info.pid is not None:
        killed = stop_pid(info.pid, STOP_TIMEOUT_S)
        how = f"killed after {STOP_TIMEOUT_S:.0f} s" if killed else "stopped"
        print(f"redis: {how} (pid {info.pid})", file=out, flush=True)
    elif info.state == "stale":
        print(f"redis: not running; removed a stale pid file ({info.reason})", file=out)
    else:
        print("redis: not running", file=out)
    paths.pid.unlink(missing_ok=True)
