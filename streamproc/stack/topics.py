"""Create streamproc's topics with the configured partition counts, and refuse mismatches.

Why explicitly: the broker never auto-creates topics (and Faust would create them with its own
default of 8 partitions), and every topic is keyed by customer id, so its partition count decides
which worker owns which customer's state. A topic that exists with another count is therefore an
error to resolve, not something to paper over: adding partitions would move customers between
workers. Safe to run repeatedly and concurrently: a topic created by someone else meanwhile
(``TopicAlreadyExistsError``) is checked like any existing one.

The decisions, segments and dead-letter topics are compacted (:func:`compacted_configs`):
``cleanup.policy=compact,delete`` keeps every record for ``STREAMPROC_COMPACT_AFTER_DAYS``
(``min.compaction.lag.ms``: what ``streamproc report`` and ``evaluate`` read), then compacts
each key to its latest record, so the tombstone an erasure publishes removes the customer's
earlier records once the cleaner passes (``max.compaction.lag.ms``, a day later, bounds when;
Kafka also rolls the active segment by then, since it is never compacted), and retention still
deletes what is older than ``retention.ms``. Plain ``compact`` would keep only the latest
decision per customer for ever and cut the history the reports read. One of these topics that
exists without compaction contradicts erasure: :func:`compaction_advice` says why, the worker
refuses to start on it (:mod:`streamproc.worker.preflight`), and ``ensure_topics(...,
fix_configs=True)`` (``streamproc stack up``, compose's topics job) sets it.
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    for_code,
)

from streamproc.errors import StackError, StreamprocError
from streamproc.kafka_options import kafka_options
from streamproc.settings import Settings
from streamproc.stack.replication import Replication, replication_configs

REQUEST_TIMEOUT_MS = 15_000
# After a concurrent creation the topic may take a moment to appear in the metadata.
APPEAR_TIMEOUT_S = 10.0
DAY_MS = 86_400_000
COMPACTION_POLICY = "compact,delete"
# DescribeConfigs' source of a value set on the topic itself (the others are the broker's or
# the default): what an alter must carry along, since AlterConfigs replaces them all.
_TOPIC_SOURCE = 1


class TopicConfigError(StreamprocError):
    """A topic exists with a configuration that contradicts what streamproc relies on."""


def compacted_topics(settings: Settings) -> tuple[str, ...]:
    """The topics keyed by customer that an erasure's tombstones must reach."""
    t = settings.topics
    return (t.decisions, t.segments, t.deadletter)


def compacted_configs(settings: Settings) -> dict[str, str]:
    """The topic configuration of :func:`compacted_topics` (see the module's docstring).

    >>> compacted_configs(Settings())  # doctest: +NORMALIZE_WHITESPACE
    {'cleanup.policy': 'compact,delete', 'min.compaction.lag.ms': '604800000',
     'max.compaction.lag.ms': '691200000', 'delete.retention.ms': '86400000'}
    """
    history_ms = settings.compact_after_days * DAY_MS
    return {"cleanup.policy": COMPACTION_POLICY,
            "min.compaction.lag.ms": str(history_ms),
            "max.compaction.lag.ms": str(history_ms + DAY_MS),
            "delete.retention.ms": str(settings.tombstone_hours * 3_600_000)}


def not_compacted(configs: dict[str, dict[str, str]]) -> dict[str, str]:
    """``{topic: cleanup.policy}`` of the topics of ``configs`` (``{topic: {name: value}}``)
    that are not compacted.

    >>> not_compacted({"a": {"cleanup.policy": "delete"}, "b": {"cleanup.policy": "compact"}})
    {'a': 'delete'}
    """
    return {name: found.get("cleanup.policy", "?") for name, found in sorted(configs.items())
            if "compact" not in found.get("cleanup.policy", "").split(",")}


def compaction_advice(wrong: dict[str, str], settings: Settings) -> str:
    """Why topics that are not compacted (``{topic: cleanup.policy}``) contradict erasure, and
    the commands that fix them.

    >>> text = compaction_advice({"streamproc.segments": "delete"}, Settings())
    >>> text.startswith("streamproc.segments (cleanup.policy=delete) is not compacted: ")
    True
    >>> text[text.index("--entity-name"):]  # doctest: +ELLIPSIS
    "--entity-name streamproc.segments --add-config 'cleanup.policy=[compact,delete],min...=...'"
    """
    added = ",".join(f"{k}=[{v}]" if "," in v else f"{k}={v}"
                     for k, v in compacted_configs(settings).items())
    listed = ", ".join(f"{n} (cleanup.policy={p})" for n, p in wrong.items())
    commands = "; ".join(
        f"kafka-configs.sh --bootstrap-server {settings.kafka_bootstrap} --alter --entity-type "
        f"topics --entity-name {n} --add-config '{added}'" for n in wrong)
    return (f"{listed} {'is' if len(wrong) == 1 else 'are'} not compacted: the tombstones an "
            "erasure publishes there would delete nothing, and an erased customer's records "
            "would stay until retention. `streamproc stack up` (the local stack) or compose's "
            f"topics service makes them compacted; on a cluster of your own: {commands}")


async def _topic_configs(admin: AIOKafkaAdminClient, names: list[str]
                         ) -> dict[str, dict[str, tuple[str, bool]]]:
    """``{topic: {config: (value, set on the topic)}}`` of ``names``; a topic just created,
    which the broker answering does not know yet, is asked again for APPEAR_TIMEOUT_S."""
    deadline = asyncio.get_running_loop().time() + APPEAR_TIMEOUT_S
    while True:
        try:
            return await _describe_topic_configs(admin, names)
        except UnknownTopicOrPartitionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _describe_topic_configs(admin: AIOKafkaAdminClient, names: list[str]
                                  ) -> dict[str, dict[str, tuple[str, bool]]]:
    answers = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    found: dict[str, dict[str, tuple[str, bool]]] = {}
    for answer in answers:
        for error_code, error_message, _, name, entries in answer.resources:
            if error_code:
                raise for_code(error_code)(f"describing the configuration of {name}: "
                                           f"{error_message}")
            # v0 entries: (name, value, read only, is default, sensitive); v1+: (name, value,
            # read only, source, sensitive, synonyms).
            found[name] = {e[0]: (e[1] or "", e[3] == _TOPIC_SOURCE if len(e) > 5
                                  else not e[3]) for e in entries}
    return found


async def topic_configs(settings: Settings, names: list[str]) -> dict[str, dict[str, str]]:
    """The configuration in force of each topic of ``names`` (they must exist)."""
    admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=REQUEST_TIMEOUT_MS)
    try:
        await asyncio.wait_for(admin.start(), REQUEST_TIMEOUT_MS / 1000)
        found = await _topic_configs(admin, names)
    except (TimeoutError, KafkaError, OSError) as exc:
        raise StackError(f"cannot read the configuration of {', '.join(names)} on Kafka at "
                         f"{settings.kafka_bootstrap}: {type(exc).__name__} {exc}") from exc
    finally:
        await admin.close()
    return {n: {k: v for k, (v, _) in c.items()} for n, c in found.items()}


async def topic_replication(settings: Settings, names: list[str]) -> dict[str, Replication]:
    """The replication of each topic of ``names`` that exists (see
    :mod:`streamproc.stack.replication`)."""
    admin = AIOKafkaAdminClient(**kafka_options(settings), request_timeout_ms=REQUEST_TIMEOUT_MS)
    try:
        await asyncio.wait_for(admin.start(), REQUEST_TIMEOUT_MS / 1000)
        described = {t["topic"]: t for t in await admin.describe_topics(names)
                     if t["error_code"] == 0}
        found = await _topic_configs(admin, sorted(described)) if described else {}
    except (TimeoutError, KafkaError, OSError) as exc:
        raise StackError(f"cannot read the replication of {', '.join(names)} on Kafka at "
                         f"{settings.kafka_bootstrap}: {type(exc).__name__} {exc}") from exc
    finally:
        await admin.close()
    return {name: Replication(min((len(p["replicas"]) for p in topic["partitions"]), default=0),
                              int(found[name].get("min.insync.replicas", ("1", False))[0]))
            for name, topic in described.items()}


async def _make_compacted(admin: AIOKafkaAdminClient, settings: Settings,
                          names: list[str]) -> list[str]:
    """Set :func:`compacted_configs` on those of ``names`` that are not compacted (keeping the
    other values set on the topic); return them."""
    found = await _topic_configs(admin, names)
    plain = {n: {k: v for k, (v, _) in c.items()} for n, c in found.items()}
    wrong = list(not_compacted(plain))
    for name in wrong:
        kept = {k: v for k, (v, own) in found[name].items() if own}
        answers = await admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, name, {**kept, **compacted_configs(settings)})])
        for answer in answers:
            for error_code, error_message, _, _ in answer.resources:
                if error_code:
                    raise StackError(f"Kafka refused to make topic {name} compacted: "
                                     f"{for_code(error_code).__name__} {error_message}")
    # The brokers apply a change a moment after the controller took it: wait until they
    # describe it, so that a worker started next does not find the old value.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + APPEAR_TIMEOUT_S
    while wrong and loop.time() < deadline:
        found = await _topic_configs(admin, wrong)
        if not not_compacted({n: {k: v for k, (v, _) in c.items()} for n, c in found.items()}):
            break
        await asyncio.sleep(0.1)
    return wrong


async def _partition_counts(admin: AIOKafkaAdminClient) -> dict[str, int]:
    """``{topic: partitions}`` of every topic; asks for all, so nothing is auto-created."""
    return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()
            if t["error_code"] == 0}


async def _create(admin: AIOKafkaAdminClient, settings: Settings, names: list[str]
                  ) -> tuple[list[str], list[str]]:
    """Create ``names``; return (created, already existing)."""
    compacted = compacted_topics(settings)
    response = await admin.create_topics(
        [NewTopic(n, settings.topics.partitions_of(n, settings.partitions),
                  settings.replication_factor,
                  topic_configs={**replication_configs(settings),
                                 **(compacted_configs(settings) if n in compacted else {})})
         for n in names],
        timeout_ms=REQUEST_TIMEOUT_MS)
    created, existing = [], []
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 and entry[2] else ""
        if code == 0:
            created.append(name)
        elif code == TopicAlreadyExistsError.errno:
            existing.append(name)
        else:
            raise StackError(f"Kafka refused to create topic {name!r} with {settings.partitions} "
                             f"partitions and replication factor {settings.replication_factor}: "
                             f"{for_code(code).__name__} {message}".rstrip())
    return created, existing


def _check(counts: dict[str, int], names: list[str], settings: Settings) -> None:
    wrong = {n: counts[n] for n in names
             if counts[n] != settings.topics.partitions_of(n, settings.partitions)}
    if wrong:
        listed = ", ".join(f"{n} has {c}" for n, c in sorted(wrong.items()))
        raise StackError(
            f"topic partition counts differ from STREAMPROC_PARTITIONS={settings.partitions}: "
            f"{listed} (the learning and products topics {settings.topics.learning} and "
            f"{settings.topics.products} are meant to have 1). "
            "Keys (customer ids) map to partitions by count, so streamproc will not "
            "change them: set STREAMPROC_PARTITIONS to the existing count, or delete those "
            "topics (for the local stack: `streamproc stack down`, delete the stack dir's "
            "kafka/ directory, `streamproc stack up`)."
        )


async def ensure_topics(settings: Settings, fix_configs: bool = False,
                        out: list[str] | None = None) -> list[str]:
    """Create every topic of ``settings.topics.all()`` that is missing; return those created.

    With ``fix_configs``, an existing topic of :func:`compacted_topics` that is not compacted
    is made so (its name is appended to ``out``). Raises StackError if Kafka cannot be reached,
    refuses a creation, or an existing topic has a partition count other than
    ``settings.partitions``.
    """
    wanted = list(settings.topics.all())
    admin = AIOKafkaAdminClient(**kafka_options(settings),
                                request_timeout_ms=REQUEST_TIMEOUT_MS)
    try:
        await asyncio.wait_for(admin.start(), REQUEST_TIMEOUT_MS / 1000)
        counts = await _partition_counts(admin)
        _check(counts, [n for n in wanted if n in counts], settings)  # before changing anything
        missing = [n for n in wanted if n not in counts]
        if fix_configs:
            fixed = await _make_compacted(
                admin, settings, [n for n in compacted_topics(settings) if n in counts])
            if out is not None:
                out.extend(fixed)
        if not missing:
            return []
        created, raced = await _create(admin, settings, missing)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + APPEAR_TIMEOUT_S
        while raced and not all(n in counts for n in raced) and loop.time() < deadline:
            await asyncio.sleep(0.2)
            counts = await _partition_counts(admin)
        _check(counts, [n for n in raced if n in counts], settings)
        return created
    except (TimeoutError, KafkaError, OSError) as exc:
        raise StackError(
            f"cannot create topics on Kafka at {settings.kafka_bootstrap}: "
            f"{type(exc).__name__} {exc}. Is it running? (`streamproc stack status`)"
        ) from exc
    finally:
        await admin.close()


COORDINATOR_TIMEOUT_S = 30.0


async def wait_group_coordinator(settings: Settings) -> float:
    """Wait until the broker can coordinate consumer groups; return the seconds it took.

    A new broker creates its ``__consumer_offsets`` topic on the first group lookup and answers
    "coordinator not available" until it is ready: waiting here means that the first worker,
    test or tool using a group after ``stack up`` finds it ready.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    admin = AIOKafkaAdminClient(**kafka_options(settings),
                                request_timeout_ms=REQUEST_TIMEOUT_MS)
    try:
        await asyncio.wait_for(admin.start(), REQUEST_TIMEOUT_MS / 1000)
        while True:
            try:
                await admin.find_coordinator(settings.app_id)
                return loop.time() - started
            except KafkaError:
                if loop.time() - started > COORDINATOR_TIMEOUT_S:
                    raise
                await asyncio.sleep(0.2)
    except (TimeoutError, KafkaError, OSError) as exc:
        raise StackError(
            f"Kafka at {settings.kafka_bootstrap} cannot coordinate consumer groups after "
            f"{COORDINATOR_TIMEOUT_S:.0f} s: {type(exc).__name__} {exc}. See its log "
            "(`streamproc stack status` shows where)"
        ) from exc
    finally:
        await admin.close()
