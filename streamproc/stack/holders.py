"""Who holds a port: the process listening there and, when it is one, the streamproc stack.

Why: a second checkout's ``stack up`` on the default ports used to hear only "held by another
program"; naming the other stack (its directory and pid) tells the user what to stop, or which
ports to move to. Linux only (``/proc/net/tcp*`` and ``/proc/<pid>/fd``); elsewhere, or for a
process of another user, the holder is unknown and the plain message stays.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from streamproc.stack.process import cmdline, read_pid

LISTEN = "0A"  # TCP state of a listening socket in /proc/net/tcp
# The file each component of a stack is started with (relative to the stack directory) and the
# pid file beside it: see kafka.KafkaPaths and redis.RedisPaths.
STACK_FILES = {"kafka": ("kafka/server.properties", "kafka/kafka.pid"),
               "redis": ("redis/redis.conf", "redis/redis.pid"),
               **{f"kafka-{n}": (f"kafka-{n}/server.properties", f"kafka-{n}/kafka.pid")
                  for n in range(2, 10)}}


@dataclass(frozen=True)
class StackHolder:
    """A component of a streamproc stack: its name, directory and pid."""

    component: str
    stack_dir: Path
    pid: int


def listening_inodes(port: int, proc: Path = Path("/proc")) -> set[str]:
    """Socket inodes listening on ``port`` (any address), from ``/proc/net/tcp`` and ``tcp6``.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()); (root / "net").mkdir()
    >>> _ = (root / "net" / "tcp").write_text(
    ...     "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
    ...     "  timeout inode\\n"
    ...     "   0: 0100007F:238C 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000"
    ...     "        0 4242 1 0000000000000000 100 0 0 10 0\\n")
    >>> listening_inodes(9100, root), listening_inodes(9092, root)
    ({'4242'}, set())
    """
    found = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == LISTEN and \
                    int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def port_holder(port: int, proc: Path = Path("/proc")) -> int | None:
    """The pid of a process listening on ``port`` (None when unknown: no /proc, or another
    user's process whose descriptors cannot be read)."""
    inodes = {f"socket:[{inode}]" for inode in listening_inodes(port, proc)}
    if not inodes:
        return None
    try:
        pids = [entry for entry in os.listdir(proc) if entry.isdigit()]
    except OSError:
        return None
    for pid in pids:
        fd_dir = proc / pid / "fd"
        try:
            for fd in os.listdir(fd_dir):
                if os.readlink(fd_dir / fd) in inodes:
                    return int(pid)
        except OSError:
            continue  # gone, or not ours to read
    return None


def stack_of(pid: int) -> StackHolder | None:
    """The streamproc stack ``pid`` belongs to: started with a stack's config file, and named
    in that stack's pid file."""
    for arg in cmdline(pid):
        for component, (config, pid_file) in STACK_FILES.items():
            if arg.endswith("/" + config):
                stack_dir = Path(arg[: -len(config) - 1])
                if read_pid(stack_dir / pid_file) == pid:
                    return StackHolder(component, stack_dir, pid)
    return None


def stack_holding(port: int) -> StackHolder | None:
    """The streamproc stack listening on ``port``, if it is one."""
    pid = port_holder(port)
    return None if pid is None else stack_of(pid)


def other_stack_hint(holder: StackHolder, ports: str, settings_hint: str) -> str:
    """What to tell a user whose ports another stack holds."""
    return (f"{ports} held by another streamproc stack in {holder.stack_dir} ({holder.component}"
            f", pid {holder.pid}): stop it with `STREAMPROC_STACK_DIR={holder.stack_dir} "
            f"streamproc stack down`, or {settings_hint}")
