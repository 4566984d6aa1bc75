"""The local stack: a real Kafka broker (or several) and a real Redis server on this machine,
no Docker.

``stack_up`` starts what is not running yet (idempotent), waits until both accept connections,
creates the topics and, once, a model secret (:mod:`streamproc.stack.secret`); ``stack_down``
stops only what this stack started; ``stack_status`` reports each component. Everything lives
under ``settings.stack_dir`` (data, configs, logs, pid files, the model secret); the Kafka jars
are cached under ``settings.cache_dir``. Only loopback addresses are managed: a remote Kafka or
Redis is somebody else's to run. See :mod:`streamproc.stack.kafka`
and :mod:`streamproc.stack.redis` for each component, :mod:`streamproc.stack.jars` for how
the broker's jars are fetched and verified.

These functions are synchronous (they run their own event loop for the Kafka admin client),
so call them from plain code, not from inside a running event loop; ``ensure_topics`` is the
async one.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import replace
from typing import TextIO

from streamproc.errors import StackError, masked_url
from streamproc.settings import Settings
from streamproc.stack import kafka, redis, redis_cluster
from streamproc.stack.components import ComponentStatus, StackStatus
from streamproc.stack.process import exclusive
from streamproc.stack.secret import ensure_model_secret
from streamproc.stack.topics import COMPACTION_POLICY, ensure_topics, wait_group_coordinator

# Longest wait for another `up`/`down` of the same stack: a cold start fetches the jars.
LOCK_TIMEOUT_S = 1200.0

__all__ = [
    "ComponentStatus",
    "StackStatus",
    "ensure_topics",
    "stack_down",
    "stack_status",
    "stack_up",
]


def stack_status(settings: Settings) -> StackStatus:
    """What runs where: each component's state, pid and address, every broker of a local
    Kafka made with several (:func:`kafka.as_made`). Changes nothing."""
    settings = kafka.as_made(settings)
    cluster = redis_cluster.status(settings)
    brokers = tuple(kafka.status(settings, node) for node in range(2, settings.kafka_brokers + 1))
    if settings.redis_is_cluster:  # the workers' Redis is the local cluster, or none
        return StackStatus(kafka=kafka.status(settings), redis=cluster or ComponentStatus(
            "redis-cluster", "stopped", settings.redis_url,
            detail="start it with `streamproc stack up --redis-cluster 3`"), brokers=brokers)
    return StackStatus(kafka=kafka.status(settings), redis=redis.status(settings),
                       redis_cluster=cluster, brokers=brokers)


def _require_local(settings: Settings) -> None:
    remote = []
    if not kafka.is_local(settings):
        remote.append(f"STREAMPROC_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}")
    if not redis.is_local(settings) and not settings.redis_is_cluster:
        remote.append(f"STREAMPROC_REDIS_URL={masked_url(settings.redis_url)}")
    if remote:
        raise StackError(
            f"the stack only manages local services (one loopback Kafka server, a redis:// URL "
            f"on a loopback host), but {' and '.join(remote)}: unset these to use the local "
            "stack, or run those services yourself"
        )


def stack_up(settings: Settings, out: TextIO = sys.stderr,
             redis_cluster_primaries: int = 0) -> StackStatus:
    """Start Kafka and Redis unless already running, wait until ready, create the topics.

    With ``redis_cluster_primaries`` (``--redis-cluster N``), also a local Redis Cluster of N
    primaries with one replica each (:mod:`streamproc.stack.redis_cluster`); the single Redis
    is not started when ``STREAMPROC_REDIS_URL`` already names the cluster.

    Idempotent: when both run, it only says so (and creates topics that went missing). Stale
    pid files are cleaned up; a port held by another program is an error naming the setting
    to change. Started processes outlive this process; `stack_down` stops them.
    """
    _require_local(settings)
    made = kafka.as_made(settings)
    if made.kafka_brokers != settings.kafka_brokers:
        print(f"kafka: the local Kafka was made with {made.kafka_brokers} brokers "
              f"(`stack up --kafka-brokers {made.kafka_brokers}`): all of them are its",
              file=out, flush=True)
        settings = made
    stack_dir = settings.stack_dir.expanduser()
    stack_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(stack_dir / ".lock", LOCK_TIMEOUT_S, "starting or stopping this stack"):
        if redis_cluster_primaries:  # it says itself how it started, or that it runs
            redis_cluster.up(settings, redis_cluster_primaries, out)
        elif settings.redis_is_cluster and not redis_cluster.running(settings):
            raise StackError("STREAMPROC_REDIS_URL names a Redis Cluster: start the local one "
                             "with `streamproc stack up --redis-cluster 3`, or unset it")
        return _up(settings, out, reported=("redis-cluster",) if redis_cluster_primaries else ())


def _up(settings: Settings, out: TextIO, reported: tuple[str, ...] = ()) -> StackStatus:
    # Also for a stack already running (made before the secret was): the local commands sign
    # and verify model snapshots with it when STREAMPROC_MODEL_SECRET is not set.
    secret, made = ensure_model_secret(settings.stack_dir.expanduser())
    if made:
        print(f"stack: made a model secret in {secret} (mode 0600; used when "
              "STREAMPROC_MODEL_SECRET is not set)", file=out, flush=True)
    before = stack_status(settings)
    if before.running:
        print("stack: already running" + (
            f" ({len(before.brokers) + 1} Kafka brokers: STREAMPROC_KAFKA_BOOTSTRAP="
            f"{kafka.bootstrap_of(settings)})" if before.brokers else ""), file=out, flush=True)
        _create_topics(settings, out)
        return before
    taken = [c.detail for c in before.components if c.state in ("port-taken", "other-stack")]
    if taken:
        raise StackError("cannot start the stack: " + "; ".join(taken))
    for line in _running_before(before, reported):
        print(line, file=out, flush=True)

    started = time.monotonic()
    # Prerequisites of both first (may install Redis or fetch the jars), so that a missing one
    # does not leave the other component half-started.
    server = (redis.prepare(settings, out)
              if _needs_start(before.redis) and not settings.redis_is_cluster else "")
    nodes = (before.kafka, *before.brokers)
    starting = [n for n, component in enumerate(nodes, 1) if _needs_start(component)]
    if starting:
        kafka.check_formatted_for(settings)
    jvm = kafka.prepare(settings, out) if starting else []

    kafka_pids = {n: component.pid for n, component in enumerate(nodes, 1)}
    cluster = kafka.cluster_id(settings)
    for node in starting:  # all before waiting: a node of several needs a majority to be ready
        kafka_pids[node] = kafka.start(settings, jvm, out, node=node, cluster=cluster)
    redis_pid = before.redis.pid
    if settings.redis_is_cluster:  # started above
        redis_pid = None
    elif _needs_start(before.redis):
        redis_pid = redis.start(settings, server, out)

    # Redis is ready in milliseconds, Kafka in seconds: wait for Redis first.
    if not before.redis.running and redis_pid is not None:
        took = redis.wait_ready(settings, redis_pid, out)
        print(f"redis: ready ({took:.1f} s)", file=out, flush=True)
    for node, component in enumerate(nodes, 1):
        pid = kafka_pids[node]
        if not component.running and pid is not None:
            took = kafka.wait_ready(settings, pid, out, node)
            print(f"{component.name}: ready ({took:.1f} s)", file=out, flush=True)
    if len(nodes) > 1:
        print(f"kafka: {len(nodes)} brokers; clients that must start while any one is down "
              f"list them all: STREAMPROC_KAFKA_BOOTSTRAP={kafka.bootstrap_of(settings)}",
              file=out, flush=True)
    _create_topics(settings, out)
    print(f"stack: up in {time.monotonic() - started:.1f} s", file=out, flush=True)
    return stack_status(settings)


def _running_before(before: StackStatus, reported: tuple[str, ...] = ()) -> list[str]:
    """What ``stack up`` says of the components it finds running or starting, or with a stale
    pid file, before it starts the others; not of those named in ``reported`` (`stack up
    --redis-cluster` has just started or found the cluster, and said so). A Redis Cluster has
    a process per node, no one pid: its line names its nodes.

    >>> cluster = ComponentStatus("redis-cluster", "running", "127.0.0.1:7000-7005",
    ...                           detail="6 of 6 nodes")
    >>> before = StackStatus(kafka=ComponentStatus("kafka", "stopped", "127.0.0.1:9092"),
    ...                      redis=ComponentStatus("redis", "running", "127.0.0.1:6379", pid=42),
    ...                      redis_cluster=cluster)
    >>> _running_before(before)
    ['redis: already running (pid 42)', 'redis-cluster: already running (6 of 6 nodes)']
    >>> _running_before(before, reported=("redis-cluster",))
    ['redis: already running (pid 42)']
    """
    lines = []
    for component in before.components:
        if component.name in reported:
            continue
        which = f"pid {component.pid}" if component.pid is not None else component.detail
        if component.state == "stale":
            lines.append(f"{component.name}: cleaning up a stale pid file ({component.detail})")
        elif component.running:
            lines.append(f"{component.name}: already running ({which})")
        elif component.state == "starting" and component.pid is None:  # a cluster: not waited
            lines.append(f"{component.name}: not ready ({which}); `streamproc stack up "
                         "--redis-cluster N`, N its number of primaries, starts its other nodes")
        elif component.state == "starting":
            lines.append(f"{component.name}: already starting ({which}); waiting for it")
    return lines


def _needs_start(component: ComponentStatus) -> bool:
    """Stopped or stale: start it. Starting (ours, not ready yet): only wait for it."""
    return component.state in ("stopped", "stale")


def cluster_topic_settings(settings: Settings) -> Settings:
    """``settings`` with the replication the local cluster's topics get: as configured, but
    at least 3 replicas (``min.insync.replicas`` 2) when there are 3 brokers or more, so that
    ``stack up --kafka-brokers 3`` alone makes a cluster that survives the loss of a broker.

    >>> s = cluster_topic_settings(Settings(kafka_brokers=3))
    >>> s.replication_factor, s.min_insync_replicas
    (3, 2)
    >>> cluster_topic_settings(Settings()).replication_factor
    1
    """
    replicas = min(3, settings.kafka_brokers)
    return replace(settings,
                   replication_factor=max(settings.replication_factor, replicas),
                   min_insync_replicas=max(settings.min_insync_replicas, replicas - 1))


def _create_topics(settings: Settings, out: TextIO) -> None:
    settings = cluster_topic_settings(settings)
    fixed: list[str] = []
    created = asyncio.run(ensure_topics(settings, fix_configs=True, out=fixed))
    if fixed:
        print(f"kafka: made {', '.join(fixed)} compacted ({COMPACTION_POLICY}; erasure "
              "tombstones need it)", file=out, flush=True)
    if created:
        copies = (f" and {settings.replication_factor} replicas (min.insync.replicas "
                  f"{settings.min_insync_replicas})" if settings.replication_factor > 1 else "")
        print(f"kafka: created {len(created)} topics with {settings.partitions} partitions"
              f"{copies}: {', '.join(created)}", file=out, flush=True)
    took = asyncio.run(wait_group_coordinator(settings))
    if took > 0.5:
        print(f"kafka: group coordinator ready ({took:.1f} s)", file=out, flush=True)


def stack_down(settings: Settings, out: TextIO = sys.stderr) -> None:
    """Stop what this stack started (found by pid file and verified), and say what it stopped.

    Nothing running is fine. Processes not started by this stack are never touched, even when
    they hold the configured ports.
    """
    stack_dir = settings.stack_dir.expanduser()
    if not stack_dir.is_dir():
        print("kafka: not running\nredis: not running", file=out)
        return
    with exclusive(stack_dir / ".lock", LOCK_TIMEOUT_S, "starting or stopping this stack"):
        kafka.stop(settings, out)
        redis.stop(settings, out)
        if redis_cluster.existing_nodes(settings):
            redis_cluster.stop(settings, out)
