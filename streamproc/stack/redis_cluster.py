"""A local Redis Cluster: N primaries with one replica each, ``redis-server`` children of this
machine on 2N consecutive loopback ports from ``STREAMPROC_REDIS_CLUSTER_PORT``
(``streamproc stack up --redis-cluster N``).

Layout under ``<stack_dir>/redis-cluster/<port>``: ``redis.conf``, the data (``nodes.conf``,
the cluster's view of itself, and the append-only file), ``redis.log`` and ``redis.pid``, as
for the single Redis (:mod:`streamproc.stack.redis`). The cluster is made once, by
``redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes``; later starts find it in
``nodes.conf``. ``stop`` stops every node of the directory, whatever N it was made with.
"""

from __future__ import annotations

import re
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from streamproc.errors import StackError
from streamproc.settings import Settings
from streamproc.stack.components import ComponentStatus
from streamproc.stack.process import (
    check_pid,
    port_in_use,
    run,
    signal_process,
    spawn,
    stop_pid,
    tail,
)
from streamproc.stack.redis import STOP_TIMEOUT_S, RedisPaths, ping, prepare

HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
# How long a primary may be unreachable before its replica is promoted (Redis' default is
# 15 s): short, so that a local failover (the tests') takes a few seconds.
NODE_TIMEOUT_MS = 2000


@dataclass(frozen=True)
class Node(RedisPaths):
    """One redis-server of the cluster: its files (as the single Redis's) and its port."""

    port: int = 0


def cluster_root(settings: Settings) -> Path:
    return settings.stack_dir.expanduser().resolve() / "redis-cluster"


def nodes(settings: Settings, primaries: int) -> list[Node]:
    """The 2 x ``primaries`` nodes, on ports from ``settings.redis_cluster_port``."""
    root = cluster_root(settings)
    return [Node(root / str(port), port) for port in
            range(settings.redis_cluster_port, settings.redis_cluster_port + 2 * primaries)]


def existing_nodes(settings: Settings) -> list[Node]:
    """The nodes a previous ``up`` made (their directories), in port order."""
    root = cluster_root(settings)
    if not root.is_dir():
        return []
    return [Node(d, int(d.name)) for d in sorted(root.iterdir(), key=lambda d: d.name)
            if d.is_dir() and d.name.isdigit()]


def url(settings: Settings, primaries: int) -> str:
    """The ``STREAMPROC_REDIS_URL`` of the local cluster: every primary's address.

    >>> url(Settings(redis_cluster_port=17200), 3)
    'redis+cluster://127.0.0.1:17200,127.0.0.1:17201,127.0.0.1:17202'
    """
    return "redis+cluster://" + ",".join(
        f"{HOST}:{settings.redis_cluster_port + i}" for i in range(primaries))


def render_conf(node: Node) -> str:
    return "\n".join([
        "# Written by `streamproc stack up --redis-cluster` on every start; edits are overwritten.",
        f"port {node.port}",
        f"bind {HOST}",
        "protected-mode yes",
        "daemonize no",
        'logfile ""',
        f'dir "{node.root}"',
        "appendonly yes",
        "set-proc-title no",
        "hash-max-listpack-value 4096",
        "cluster-enabled yes",
        "cluster-config-file nodes.conf",
        f"cluster-node-timeout {NODE_TIMEOUT_MS}",
        # A replica that lost its primary long ago may still take over: the local cluster
        # prefers being available (the default 10 x node timeout can leave slots uncovered).
        "cluster-replica-validity-factor 0",
    ]) + "\n"


def _cli(port: int, *args: str, timeout: float = 10.0) -> str:
    cli = shutil.which("redis-cli")
    if cli is None:
        raise StackError("redis-cli is not installed (it comes with redis-server: "
                         "`sudo apt-get install redis-server`)")
    return run([cli, "-h", HOST, "-p", str(port), *args], timeout=timeout,
               what=f"redis-cli -p {port} {' '.join(args[:2])}")


def cluster_info(port: int) -> dict[str, str]:
    """``CLUSTER INFO`` of the node on ``port`` ({} when it does not answer)."""
    return _fields(port, "cluster", "info")


def _fields(port: int, *command: str) -> dict[str, str]:
    try:
        text = _cli(port, *command, timeout=5.0)
    except StackError:
        return {}
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


def synchronised_replicas(nodes: list[Node]) -> int:
    """How many of ``nodes`` are replicas holding their primary's data: linked to it and done
    with the first synchronisation. A replica promoted before that would lose the writes its
    primary had acknowledged."""
    synced = 0
    for node in nodes:
        info = _fields(node.port, "info", "replication")
        if (info.get("role") == "slave" and info.get("master_link_status") == "up"
                and info.get("master_sync_in_progress") == "0"):
            synced += 1
    return synced


def running(settings: Settings) -> list[Node]:
    """The nodes of the stack dir whose process runs (ours, by pid file and config path)."""
    return [n for n in existing_nodes(settings)
            if check_pid(n.pid, str(n.config)).state == "running"]


def up(settings: Settings, primaries: int, out: TextIO) -> str:
    """Start the 2 x ``primaries`` nodes that do not run yet, make the cluster the first time,
    wait until every slot is served; return the cluster's URL."""
    if primaries < 1:
        raise StackError(f"--redis-cluster {primaries}: give at least 1 primary (3 is usual)")
    made = existing_nodes(settings)
    wanted = nodes(settings, primaries)
    if made and [n.port for n in made] != [n.port for n in wanted]:
        raise StackError(
            f"a Redis Cluster of {len(made)} nodes (ports {made[0].port}-{made[-1].port}) "
            f"already exists under {cluster_root(settings)}: `streamproc stack down "
            f"--redis-cluster` and delete that directory to make one of {2 * primaries}")
    server = prepare(settings, out)
    started = time.monotonic()
    for node in wanted:
        if check_pid(node.pid, str(node.config)).state == "running":
            continue
        if port_in_use(HOST, node.port):
            raise StackError(f"{HOST}:{node.port} is held by another program: choose other "
                             "ports with STREAMPROC_REDIS_CLUSTER_PORT")
        node.root.mkdir(parents=True, exist_ok=True)
        node.pid.unlink(missing_ok=True)
        node.config.write_text(render_conf(node))
        spawn([server, str(node.config)], cwd=node.root, log_file=node.log, pid_file=node.pid)
    _wait(lambda: all(ping(HOST, n.port) for n in wanted), "every node to answer", wanted)
    if cluster_info(wanted[0].port).get("cluster_known_nodes", "1") == "1":
        print(f"redis-cluster: creating {primaries} primaries with one replica each",
              file=out, flush=True)
        _cli(wanted[0].port, "--cluster", "create",
             *(f"{HOST}:{n.port}" for n in wanted), "--cluster-replicas", "1",
             "--cluster-yes", timeout=60.0)
    _wait(lambda: all(cluster_info(n.port).get("cluster_state") == "ok" for n in wanted),
          "every slot to be served (cluster_state:ok)", wanted)
    _wait(lambda: synchronised_replicas(wanted) == primaries,
          "every replica to hold its primary's data (master_link_status:up)", wanted)
    address = url(settings, primaries)
    print(f"redis-cluster: ready in {time.monotonic() - started:.1f} s on ports "
          f"{wanted[0].port}-{wanted[-1].port}: STREAMPROC_REDIS_URL={address}",
          file=out, flush=True)
    return address


def _wait(check: Callable[[], bool], what: str, wanted: list[Node]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not check():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n.log} ---\n{tail(n.log, lines=8)}" for n in wanted)
            raise StackError(f"Redis Cluster: gave up waiting {READY_TIMEOUT_S:.0f} s for "
                             f"{what}.\n{logs}")
        time.sleep(0.2)


def primary_ports(port: int) -> dict[int, int | None]:
    """Each primary's port -> its replica's port (None: it has none), as the node on ``port``
    sees the cluster; nodes flagged as failing are left out."""
    ids: dict[str, int] = {}
    rows = []
    for line in _cli(port, "cluster", "nodes").splitlines():
        parts = line.split()
        match = re.match(r"[^:]*:(\d+)", parts[1]) if len(parts) >= 8 else None
        if match is None or "fail" in parts[2].split(","):
            continue
        ids[parts[0]] = int(match.group(1))
        rows.append(parts)
    out: dict[int, int | None] = {ids[p[0]]: None for p in rows if "master" in p[2].split(",")}
    for parts in rows:
        if "slave" in parts[2].split(",") and parts[3] in ids and out.get(ids[parts[3]]) is None:
            out[ids[parts[3]]] = ids[parts[0]]
    return out


def status(settings: Settings) -> ComponentStatus | None:
    """The local cluster's state (None: none runs under the stack dir: a cluster made once
    and stopped is no part of the stack until `up --redis-cluster` starts it again)."""
    made = existing_nodes(settings)
    up_nodes = running(settings)
    if not up_nodes:
        return None
    address = f"{HOST}:{made[0].port}-{made[-1].port}"
    ok = (len(up_nodes) == len(made)
          and cluster_info(made[0].port).get("cluster_state") == "ok")
    return ComponentStatus("redis-cluster", "running" if ok else "starting", address,
                           detail=f"{len(up_nodes)} of {len(made)} nodes; "
                           f"STREAMPROC_REDIS_URL={url(settings, len(made) // 2)}")


def stop(settings: Settings, out: TextIO) -> None:
    """Stop every node of the stack dir's cluster that this stack started."""
    found = existing_nodes(settings)
    if not found:
        print("redis-cluster: not running", file=out)
        return
    stopped = []
    for node in found:
        info = check_pid(node.pid, str(node.config))
        if info.state == "running" and info.pid is not None:
            stop_pid(info.pid, STOP_TIMEOUT_S)
            stopped.append(str(node.port))
        node.pid.unlink(missing_ok=True)
    print(f"redis-cluster: stopped {len(stopped)} nodes" + (
        f" (ports {', '.join(stopped)})" if stopped else ""), file=out, flush=True)


def kill_node(node: Node) -> int:
    """SIGKILL one node (the failover tests): its pid."""
    info = check_pid(node.pid, str(node.config))
    if info.pid is None or info.state != "running":
        raise StackError(f"Redis Cluster node {node.port} does not run")
    signal_process(info.pid, signal.SIGKILL)
    return info.pid
