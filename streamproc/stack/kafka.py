"""The local Kafka brokers: KRaft nodes (each broker + controller) run from the cached jars.

One node by default; ``STREAMPROC_KAFKA_BROKERS=N`` (``stack up --kafka-brokers N``) runs N,
each a broker and a voter of an N-voter controller quorum, so that topics can have 3 replicas
and the cluster survives the loss of one node (a majority of voters stays). Node 1 listens on
``STREAMPROC_KAFKA_BOOTSTRAP``'s first address and ``STREAMPROC_KAFKA_CONTROLLER_PORT``; node
n >= 2 on ``STREAMPROC_KAFKA_EXTRA_PORT`` + 2(n-2) and the port above (:func:`node_ports`).

Layout under ``<stack_dir>/kafka`` (node n >= 2: ``kafka-<n>``): ``server.properties``,
``log4j2.properties``, ``data/`` (the log dirs, formatted once), ``brokers`` (the node count it
was formatted for), ``server.log`` (the broker's log), ``console.log`` (the JVM's own
output, e.g. a bad ``-Xmx``) and ``kafka.pid``. The process is ours only if its command line
holds the absolute path of that ``server.properties`` (see :mod:`streamproc.stack.process`).

Why each broker setting: every node is a controller too (``process.roles``,
``controller.quorum.voters``), which keeps a small cluster to N processes; the internal topics
are replicated as far as the nodes allow (up to 3 replicas, ``min.isr`` one less, at least
1); consumer groups should form at once (``group.initial.rebalance.delay.ms=0``);
topics are created only by :func:`streamproc.stack.topics.ensure_topics`, with the configured
partition counts, never implicitly by a client (``auto.create.topics.enable=false``).

Regenerate the jar lock file after changing a version in :mod:`streamproc.stack.jars`::

    python -m streamproc.stack --write-lock
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import signal
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streamproc.errors import StackError
from streamproc.kafka_options import kafka_options
from streamproc.settings import Settings
from streamproc.stack import jars
from streamproc.stack.components import ComponentStatus, State
from streamproc.stack.holders import other_stack_hint, stack_holding
from streamproc.stack.process import (
    check_pid,
    is_loopback,
    log_size,
    pid_alive,
    port_accepts,
    port_in_use,
    run,
    signal_process,
    spawn,
    stop_pid,
    tail,
    wait_dead,
    wait_until,
)

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
# Log sizes when this process started the broker, so that a failure shows only this run's lines.
_log_starts: dict[Path, int] = {}
JAVA_INSTALL = ("`sudo apt-get install openjdk-17-jre-headless` "
                "(macOS: `brew install openjdk@17`)")


@dataclass(frozen=True)
class KafkaPaths:
    """Where the broker's files live; absolute, because the path identifies our process."""

    root: Path

    @classmethod
    def of(cls, settings: Settings, node: int = 1) -> KafkaPaths:
        name = "kafka" if node == 1 else f"kafka-{node}"
        return cls(settings.stack_dir.expanduser().resolve() / name)

    @property
    def brokers(self) -> Path:
        """How many nodes the data dir was formatted for (the quorum's voters are fixed then)."""
        return self.root / "brokers"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.root / "log4j2.properties"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def console(self) -> Path:
        return self.root / "console.log"

    @property
    def pid(self) -> Path:
        return self.root / "kafka.pid"


MAX_NODES = 9


def is_local(settings: Settings) -> bool:
    """True if every bootstrap server is on loopback, the only kind the stack runs (the first
    is node 1; listing the others too lets a client start while node 1 is down)."""
    servers = [s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip()]
    return bool(servers) and all(is_loopback(s.rpartition(":")[0]) for s in servers)


def node_ports(settings: Settings) -> list[tuple[int, int]]:
    """``(broker port, controller port)`` of each node of the local cluster, node 1 first.

    >>> node_ports(Settings(kafka_brokers=3))
    [(9092, 9093), (9100, 9101), (9102, 9103)]
    >>> node_ports(Settings(kafka_bootstrap="127.0.0.1:19392", kafka_brokers=2,
    ...                     kafka_extra_port=19400))
    [(19392, 9093), (19400, 19401)]
    """
    port = settings.kafka_host_port[1]
    base = settings.kafka_extra_port or port + 8
    return [(port, settings.kafka_controller_port)] + [
        (base + 2 * i, base + 2 * i + 1) for i in range(settings.kafka_brokers - 1)]


def bootstrap_of(settings: Settings) -> str:
    """Every node's address, for a client that must start while any one node is down.

    >>> bootstrap_of(Settings(kafka_brokers=2))
    '127.0.0.1:9092,127.0.0.1:9100'
    """
    host = settings.kafka_host_port[0]
    return ",".join(f"{host}:{port}" for port, _ in node_ports(settings))


def _node_settings(settings: Settings, node: int) -> Settings:
    """``settings`` with the bootstrap list reduced to ``node`` (to ask that node alone)."""
    host = settings.kafka_host_port[0]
    return replace(settings, kafka_bootstrap=f"{host}:{node_ports(settings)[node - 1][0]}")


def _escape(value: str) -> str:
    """A value for a Java properties file (backslash is its only special character there)."""
    return value.replace("\\", "\\\\")


def render_server_properties(settings: Settings, paths: KafkaPaths,
                             extra: Mapping[str, str] | None = None, node: int = 1) -> str:
    """The config of ``node``; ``extra`` adds or replaces properties (e.g. a TLS and SASL
    listener for a test of a secured cluster)."""
    host = settings.kafka_host_port[0]
    ports = node_ports(settings)
    port, controller = ports[node - 1]
    internal_rf = min(3, len(ports))
    internal_isr = str(max(1, internal_rf - 1))
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node),
        "controller.quorum.voters": ",".join(f"{n}@{host}:{c}"
                                             for n, (_, c) in enumerate(ports, 1)),
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": _escape(str(paths.data)),
        "num.partitions": str(settings.partitions),
        "offsets.topic.replication.factor": str(internal_rf),
        "transaction.state.log.replication.factor": str(internal_rf),
        "transaction.state.log.min.isr": internal_isr,
        "share.coordinator.state.topic.replication.factor": str(internal_rf),
        "share.coordinator.state.topic.min.isr": internal_isr,
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        **(extra or {}),
    }
    head = "# Written by `streamproc stack up` on every start; edits are overwritten.\n"
    return head + "".join(f"{key}={value}\n" for key, value in props.items())


def render_log4j2(paths: KafkaPaths) -> str:
    """Log to ``server.log``, rolled at 20 MB (3 kept), so that a long-lived stack stays small."""
    log = _escape(str(paths.log))
    return (
        "status = error\n"
        "appender.file.type = RollingFile\n"
        "appender.file.name = FILE\n"
        f"appender.file.fileName = {log}\n"
        f"appender.file.filePattern = {log}.%i\n"
        "appender.file.layout.type = PatternLayout\n"
        "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        "appender.file.policies.type = Policies\n"
        "appender.file.policies.size.type = SizeBasedTriggeringPolicy\n"
        "appender.file.policies.size.size = 20MB\n"
        "appender.file.strategy.type = DefaultRolloverStrategy\n"
        "appender.file.strategy.max = 3\n"
        "rootLogger.level = INFO\n"
        "rootLogger.appenderRef.file.ref = FILE\n"
    )


def java_major(version_output: str) -> int | None:
    """The major version in ``java -version`` output (``1.8.0_x`` is 8), or None."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    major = int(match[1])
    return int(match[2]) if major == 1 and match[2] else major


def find_java() -> str:
    """The ``java`` to run the broker with; Kafka 4.x needs Java 17 or newer."""
    java = shutil.which("java")
    if java is None:
        raise StackError(f"Kafka {jars.KAFKA_VERSION} needs Java 17 or newer and there is no "
                         f"`java` on PATH: install it with {JAVA_INSTALL}, then retry")
    output = run([java, "-version"], timeout=30, what="`java -version`")
    major = java_major(output)
    if major is None or major < 17:
        first = output.splitlines()[0] if output else "an unknown version"
        raise StackError(f"Kafka {jars.KAFKA_VERSION} needs Java 17 or newer, but {java} is "
                         f"{first!r}: install {JAVA_INSTALL} and put it first on PATH")
    return java


def new_cluster_id() -> str:
    """A cluster id as ``kafka.tools.StorageTool random-uuid`` makes it, without starting a JVM.

    Kafka's ``Uuid.randomUuid`` is a random (version 4) UUID in unpadded URL-safe base64 that
    does not start with ``-`` (it would read as a command-line option).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def status(settings: Settings, node: int = 1) -> ComponentStatus:
    """The state of ``node`` (named ``kafka``, or ``kafka-<n>`` for n >= 2)."""
    name = "kafka" if node == 1 else f"kafka-{node}"
    host = settings.kafka_host_port[0]
    port, controller = node_ports(settings)[node - 1]
    if not is_local(settings):
        return ComponentStatus(name, "external", settings.kafka_bootstrap,
                               detail="not a local address: not managed by the stack")
    address = f"{host}:{port} (controller {controller})"
    paths = KafkaPaths.of(settings, node)
    info = check_pid(paths.pid, str(paths.config))
    if info.state == "running":
        state: State = "running" if port_accepts(host, port) else "starting"
        return ComponentStatus(name, state, address, info.pid, f"log: {paths.log}")
    taken = [p for p in (port, controller) if port_in_use(host, p)]
    if taken:
        for p in taken:
            holder = stack_holding(p)
            if holder is not None:
                held = " and ".join(f"{host}:{t}" for t in taken)
                verb = "are" if len(taken) > 1 else "is"
                return ComponentStatus(name, "other-stack", address, holder.pid,
                                       other_stack_hint(holder, f"{held} {verb}", PORTS_HINT))
        return ComponentStatus(name, "port-taken", address, None, port_taken_hint(host, taken))
    if info.state == "stale":
        return ComponentStatus(name, "stale", address, info.pid, info.reason)
    return ComponentStatus(name, "stopped", address)


PORTS_HINT = ("choose free ports with STREAMPROC_KAFKA_BOOTSTRAP, "
              "STREAMPROC_KAFKA_CONTROLLER_PORT and (several brokers) "
              "STREAMPROC_KAFKA_EXTRA_PORT")


def port_taken_hint(host: str, ports: list[int]) -> str:
    held = " and ".join(f"{host}:{p}" for p in ports)
    verb = "are" if len(ports) > 1 else "is"
    return f"{held} {verb} held by another program (not started by this stack): stop it, or " \
        + PORTS_HINT


def prepare(settings: Settings, out: TextIO) -> list[str]:
    """Check Java and get the verified jars; return the JVM command line up to the main class.

    Done before anything starts, so that a missing prerequisite leaves nothing half-running.
    """
    java = find_java()
    libs = jars.ensure_jars(settings.cache_dir, out)
    paths = KafkaPaths.of(settings)
    return [java, f"-Xmx{settings.kafka_heap}", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={paths.log4j}", "-cp", f"{libs}/*"]


def made_for(settings: Settings, node: int = 1) -> int | None:
    """How many brokers the stack dir's ``node`` was formatted for (None: never formatted).

    >>> made_for(Settings(stack_dir=Path("/nonexistent")))
    """
    paths = KafkaPaths.of(settings, node)
    if not (paths.data / "meta.properties").exists():
        return None
    try:
        return int(paths.brokers.read_text().strip())
    except (OSError, ValueError):
        return 1  # made before the file existed: always one node


def as_made(settings: Settings) -> Settings:
    """``settings`` with as many brokers as the local Kafka was made with, when they say one
    (the default) and the stack dir holds a cluster: `stack up`, `status` and `down` without
    ``--kafka-brokers`` then see the whole cluster, not its node 1 alone.

    >>> as_made(Settings(stack_dir=Path("/nonexistent"))).kafka_brokers
    1
    """
    made = made_for(settings)
    if settings.kafka_brokers == 1 and made is not None and made > 1:
        return replace(settings, kafka_brokers=made)
    return settings


def check_formatted_for(settings: Settings) -> None:
    """Refuse to start nodes whose data was formatted for another number of brokers: the
    quorum's voters are part of the cluster's metadata, fixed at the first start."""
    wanted = settings.kafka_brokers
    for node in range(1, MAX_NODES + 1):
        made = made_for(settings, node)
        paths = KafkaPaths.of(settings, node)
        if made is not None and made != wanted:
            raise StackError(
                f"the local Kafka in {paths.root.parent} was made for {made} broker(s), not "
                f"{wanted}: run `streamproc stack up --kafka-brokers {made}` (or "
                f"STREAMPROC_KAFKA_BROKERS={made}), or start afresh: `streamproc stack down`, "
                f"delete {paths.root.parent}/kafka*, then `streamproc stack up "
                f"--kafka-brokers {wanted}`")


def cluster_id(settings: Settings) -> str:
    """The id of the local cluster: the one a node was formatted with, else a new one."""
    for node in range(1, settings.kafka_brokers + 1):
        meta = KafkaPaths.of(settings, node).data / "meta.properties"
        if meta.exists():
            for line in meta.read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "cluster.id" and value.strip():
                    return value.strip()
    return new_cluster_id()


def start(settings: Settings, jvm: list[str], out: TextIO,
          extra: Mapping[str, str] | None = None, format_args: Sequence[str] = (),
          node: int = 1, cluster: str | None = None) -> int:
    """Write the config, format the data dir on first use, start ``node``; return its pid.

    Does not wait for it: :func:`wait_ready` does, so that Redis and the other nodes can start
    meanwhile (a node of several is ready only once a majority of the quorum runs). ``extra``
    goes to :func:`render_server_properties`, ``format_args`` to the storage tool's ``format``
    (e.g. ``--add-scram``, which a KRaft cluster needs for its first SCRAM users); every node
    of a cluster is formatted with the same ``cluster`` id (:func:`cluster_id`).
    """
    paths = KafkaPaths.of(settings, node)
    paths.data.mkdir(parents=True, exist_ok=True)
    paths.pid.unlink(missing_ok=True)  # stale by now: the caller checked that ours is not running
    paths.config.write_text(render_server_properties(settings, paths, extra, node))
    paths.log4j.write_text(render_log4j2(paths))
    if not (paths.data / "meta.properties").exists():
        print(f"kafka: formatting {paths.data} (first start)", file=out, flush=True)
        run(jvm + ["kafka.tools.StorageTool", "format", "-t", cluster or cluster_id(settings),
                   "-c", str(paths.config), *format_args],
            timeout=120, what="formatting the Kafka data dir", cwd=paths.root)
        paths.brokers.write_text(f"{settings.kafka_brokers}\n")
    _log_starts.update({paths.log: log_size(paths.log), paths.console: log_size(paths.console)})
    host = settings.kafka_host_port[0]
    port = node_ports(settings)[node - 1][0]
    print(f"kafka: starting Kafka {jars.KAFKA_VERSION} node {node} on {host}:{port} "
          f"(log: {paths.log})", file=out, flush=True)
    jvm = [arg if not arg.startswith("-Dlog4j2.configurationFile=")
           else f"-Dlog4j2.configurationFile={paths.log4j}" for arg in jvm]
    return spawn(jvm + ["kafka.Kafka", str(paths.config)], cwd=paths.root,
                 log_file=paths.console, pid_file=paths.pid)


async def _metadata_ok(settings: Settings, brokers: int = 1) -> bool:
    """True if the broker answers a real metadata request and lists ``brokers`` brokers."""
    admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 10)
        cluster = await asyncio.wait_for(admin.describe_cluster(), 10)
        return len(cluster.get("brokers") or ()) >= brokers
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()


def failure(settings: Settings, reason: str, node: int = 1) -> StackError:
    """A StackError for a failed start, with the end of the node's logs."""
    paths = KafkaPaths.of(settings, node)
    logs = "\n".join(f"--- last lines of {p} ---\n{text}" for p in (paths.console, paths.log)
                     if (text := tail(p, since=_log_starts.get(p, 0))))
    return StackError(f"Kafka: {reason}.\n{logs or '(no log output)'}\n"
                      f"Fix the cause, then run `streamproc stack down` and `up` again.")


def wait_ready(settings: Settings, pid: int, out: TextIO, node: int = 1) -> float:
    """Wait until ``node`` answers metadata requests listing every node of the cluster;
    return the seconds it took."""
    own = _node_settings(settings, node)
    host, port = own.kafka_host_port

    def ready() -> bool:  # a cheap TCP check first, so aiokafka does not log refused connects
        return port_accepts(host, port) and asyncio.run(
            _metadata_ok(own, settings.kafka_brokers))

    return wait_until(ready, timeout=READY_TIMEOUT_S, what=f"Kafka on {host}:{port}",
                      alive=lambda: pid_alive(pid),
                      on_fail=lambda r: failure(settings, r, node), out=out)


def stop(settings: Settings, out: TextIO) -> None:
    """Stop every node this stack started (SIGTERM, then SIGKILL after a timeout), however
    many STREAMPROC_KAFKA_BROKERS says now.

    All at once: a node stopped after the others would wait for a controller quorum that is
    gone, and take the whole timeout.
    """
    running: list[tuple[str, int]] = []
    for node in range(1, MAX_NODES + 1):
        paths = KafkaPaths.of(settings, node)
        if node > 1 and not paths.pid.exists():
            continue
        name = "kafka" if node == 1 else f"kafka-{node}"
        info = check_pid(paths.pid, str(paths.config))
        if info.state == "running" and info.pid is not None:
            signal_process(info.pid, signal.SIGTERM)
            running.append((name, info.pid))
        elif info.state == "stale":
            print(f"{name}: not running; removed a stale pid file ({info.reason})", file=out)
            paths.pid.unlink(missing_ok=True)
        else:
            print(f"{name}: not running", file=out)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, pid in running:
        killed = not wait_dead(pid, max(0.0, deadline - time.monotonic())) and stop_pid(pid, 0)
        how = f"killed after {STOP_TIMEOUT_S:.0f} s" if killed else "stopped"
        print(f"{name}: {how} (pid {pid})", file=out, flush=True)
    for node in range(1, MAX_NODES + 1):
        KafkaPaths.of(settings, node).pid.unlink(missing_ok=True)
