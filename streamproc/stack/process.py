"""Process and port helpers of the local stack: pid files, liveness, identity, ports, stopping.

Why these checks: the stack's processes outlive the CLI that started them, so a later command
only has a pid file to go on. A pid can be reused by an unrelated process after a reboot or a
crash, so "alive" is not enough: a process counts as *ours* only if its command line contains
the absolute path of the config file we wrote for it. And a port can be held by something else
(a system Redis on 6379, another developer's Kafka), which must be reported, never killed.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from streamproc.errors import StackError

# Popen objects of the children this Python process started. Kept so that they are not
# garbage-collected while running (Popen warns about that) and so that a stop in the same
# process (tests) can reap them instead of leaving a zombie that still looks alive.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses: the only hosts the stack can start."""
    if host.lower() in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_address(host: str) -> str:
    """The IP address to bind for ``host`` (Redis' ``bind`` wants an address, not a name)."""
    return "127.0.0.1" if host.lower().startswith("localhost") else host.strip("[]")


def port_in_use(host: str, port: int) -> bool:
    """True if something holds ``host:port``: we try to bind it ourselves.

    Binding (with SO_REUSEADDR, as servers do) fails only when another socket is bound or
    listening there, unlike a connect test it also catches a socket that is bound but not yet
    listening, and it ignores connections lingering in TIME_WAIT after a stop.
    """
    address = bind_address(host)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise StackError(f"cannot check port {address}:{port}: {exc}") from exc
    return False


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if a TCP connection to ``host:port`` succeeds (the server is listening)."""
    try:
        with socket.create_connection((bind_address(host), port), timeout=timeout):
            return True
    except OSError:
        return False


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file``, or None if there is no (valid) pid file."""
    try:
        text = pid_file.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def write_pid(pid_file: Path, pid: int) -> None:
    """Write ``pid`` atomically, so that a concurrent reader never sees a half-written file."""
    tmp = pid_file.with_name(pid_file.name + ".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pid_file)


def _reap(pid: int) -> None:
    """Collect the exit status of ``pid`` if it is our dead child, so it stops looking alive."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (zombies, which only wait to be reaped, count as dead)."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, but belongs to another user: certainly not ours, but alive
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    # The state letter follows the command name in parentheses, which may contain spaces.
    if stat.rpartition(")")[2].split()[:1] != ["Z"]:
        return True
    # The first thread is a zombie. The process has ended only once its other threads have
    # too (a JVM's take a moment to exit after the first one): until then it still runs, and
    # cannot be reaped.
    try:
        if len(os.listdir(f"/proc/{pid}/task")) > 1:
            return True
    except OSError:
        pass
    # If it is our child that exited after the reaping above, collect it now, or it stays a
    # zombie (and its Popen "still running") for as long as this process lives. A child that
    # cannot be reaped yet has not ended.
    _reap(pid)
    return pid in _CHILDREN


def cmdline(pid: int) -> list[str]:
    """The arguments ``pid`` was started with ([] if unknown)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return []  # Linux, and the process is gone
    except OSError:
        return []
    try:  # no /proc (macOS): split ps' output, good enough for paths without spaces
        result = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True,
                                text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return result.stdout.split()


# "running": alive and ours; "stale": a pid file, but the process is dead or not ours; "none".
PidState = Literal["running", "stale", "none"]


@dataclass(frozen=True)
class PidInfo:
    """What a pid file says: ``state`` is ``running``, ``stale`` or ``none`` (no pid file)."""

    pid: int | None
    state: PidState
    reason: str = ""


def check_pid(pid_file: Path, marker: str) -> PidInfo:
    """Whether the process in ``pid_file`` still runs and is ours (``marker`` is one of its args).

    A whole argument, not a substring: ``/a/kafka/server.properties`` must not match a process
    of another stack dir ``/b/a/kafka/server.properties``.
    """
    pid = read_pid(pid_file)
    if pid is None:
        if pid_file.exists():
            return PidInfo(None, "stale", f"{pid_file} holds no pid")
        return PidInfo(None, "none")
    if not pid_alive(pid):
        return PidInfo(pid, "stale", f"pid {pid} no longer runs")
    if marker not in _settled_cmdline(pid):
        return PidInfo(pid, "stale", f"pid {pid} is another program now")
    return PidInfo(pid, "running")


def _settled_cmdline(pid: int, timeout: float = 2.0) -> list[str]:
    """``cmdline(pid)``, waiting out the moment just after exec when Linux shows it empty.

    A process spawned a moment ago can read as ``[]`` (measured: 34 of 200 checks made at once
    after :func:`spawn`); so can a kernel thread, for good, which then counts as not ours.
    """
    deadline = time.monotonic() + timeout
    args = cmdline(pid)
    while not args and time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.01)
        args = cmdline(pid)
    return args


def spawn(argv: Sequence[str], *, cwd: Path, log_file: Path, pid_file: Path,
          env: dict[str, str] | None = None) -> int:
    """Start ``argv`` detached from this process, output appended to ``log_file``; return its pid.

    ``start_new_session`` puts it in its own session, so that it survives the CLI exiting and
    a Ctrl-C in the terminal does not reach it.
    """
    with open(log_file, "ab") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
    _CHILDREN[proc.pid] = proc
    write_pid(pid_file, proc.pid)
    return proc.pid


def signal_process(pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid``, and to its process group if it leads one (ours do: own session)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_dead(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to end; True if it did."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def stop_pid(pid: int, timeout: float) -> bool:
    """SIGTERM ``pid``, wait up to ``timeout`` s, then SIGKILL. True if it needed the SIGKILL."""
    signal_process(pid, signal.SIGTERM)
    if wait_dead(pid, timeout):
        return False
    signal_process(pid, signal.SIGKILL)
    if not wait_dead(pid, 10):
        raise StackError(f"pid {pid} survived SIGKILL; stop it by hand (kill -9 {pid})")
    return True


def log_size(path: Path) -> int:
    """The current size of a log file (0 if missing): where this start's output will begin."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def tail(path: Path, lines: int = 30, since: int = 0) -> str:
    """The last ``lines`` lines of a log file written after byte ``since`` ("" if none).

    ``since`` keeps the output of earlier runs (logs are appended to) out of error messages.
    """
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            start = since if since <= size else 0  # smaller: the file was rotated
            f.seek(max(start, size - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def run(argv: Sequence[str], *, timeout: float, what: str, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> str:
    """Run a short-lived command with a timeout; return its output or raise a StackError with it."""
    try:
        result = subprocess.run(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{what} did not finish within {timeout:.0f} s: {' '.join(argv)}") from exc
    except OSError as exc:
        raise StackError(f"{what}: cannot run {argv[0]}: {exc}") from exc
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        last = "\n".join(output.splitlines()[-30:])
        raise StackError(f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n{last}")
    return output


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, alive: Callable[[], bool],
               on_fail: Callable[[str], StackError], out: IO[str], every: float = 5.0) -> float:
    """Poll ``check`` until it is true; return the seconds it took.

    Gives up (raising ``on_fail(reason)``) when the process dies (``alive`` false) or after
    ``timeout`` seconds; prints a progress line every ``every`` seconds so that a slow start
    does not look like a hang.
    """
    start = time.monotonic()
    next_note = start + every
    while True:
        if check():
            return time.monotonic() - start
        now = time.monotonic()
        if not alive():
            raise on_fail(f"{what} exited during startup")
        if now - start > timeout:
            raise on_fail(f"{what} did not become ready within {timeout:.0f} s")
        if now >= next_note:
            print(f"  ... still waiting for {what} ({now - start:.0f} s)", file=out, flush=True)
            next_note = now + every
        time.sleep(0.2)


@contextmanager
def exclusive(lock_path: Path, timeout: float, what: str) -> Iterator[None]:
    """An inter-process lock on ``lock_path`` (flock), waited for at most ``timeout`` seconds.

    So that two commands at once (two terminals, `make test` while an `up` runs) do not both
    start a broker or both download the jars. The kernel drops the lock if its holder dies.
    """
    with open(lock_path, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StackError(f"another process has been {what} for over "
                                     f"{timeout:.0f} s (it holds {lock_path}); wait for it "
                                     "or stop it, then retry") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
