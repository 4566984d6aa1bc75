"""Create streamproc's topics with the configured partition counts, and refuse mismatches.

Why explicitly: the broker never auto-creates topics (and Faust would create them with its own
default of 8 partitions), and every topic is keyed by customer id, so its partition count decides
which worker owns which customer's state. A topic that exists with another count is therefore an
error to resolve, not something to paper over: adding partitions would move customers between
workers. Safe to run repeatedly and concurrently: a topic created by someone else meanwhile
(``TopicAlreadyExistsError``) is checked like any existing one.
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from streamproc.errors import StackError
from streamproc.kafka_options import kafka_options
from streamproc.settings import Settings

REQUEST_TIMEOUT_MS = 15_000
# After a concurrent creation the topic may take a moment to appear in the metadata.
APPEAR_TIMEOUT_S = 10.0


async def _partition_counts(admin: AIOKafkaAdminClient) -> dict[str, int]:
    """``{topic: partitions}`` of every topic; asks for all, so nothing is auto-created."""
    return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()
            if t["error_code"] == 0}


async def _create(admin: AIOKafkaAdminClient, settings: Settings, names: list[str]
                  ) -> tuple[list[str], list[str]]:
    """Create ``names``; return (created, already existing)."""
    response = await admin.create_topics(
        [NewTopic(n, settings.topics.partitions_of(n, settings.partitions),
                  settings.replication_factor) for n in names],
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


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every topic of ``settings.topics.all()`` that is missing; return those created.

    Raises StackError if Kafka cannot be reached, refuses a creation, or an existing topic has
    a partition count other than ``settings.partitions``.
    """
    wanted = list(settings.topics.all())
    admin = AIOKafkaAdminClient(**kafka_options(settings),
                                request_timeout_ms=REQUEST_TIMEOUT_MS)
    try:
        await asyncio.wait_for(admin.start(), REQUEST_TIMEOUT_MS / 1000)
        counts = await _partition_counts(admin)
        _check(counts, [n for n in wanted if n in counts], settings)  # before changing anything
        missing = [n for n in wanted if n not in counts]
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
