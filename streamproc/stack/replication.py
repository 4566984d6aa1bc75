"""How many copies of each topic Kafka keeps, and the check a worker makes before it starts.

Every producer of streamproc writes with ``acks=all`` and idempotence
(:func:`streamproc.kafka_options.producer_options`): a write is acknowledged once every in-sync
replica has it, and refused while fewer than the topic's ``min.insync.replicas`` are in sync.
With ``STREAMPROC_REPLICATION_FACTOR=3`` and ``STREAMPROC_MIN_INSYNC_REPLICAS=2`` a topic
survives the loss of any one broker without losing an acknowledged write and without stopping.
:func:`streamproc.stack.topics.ensure_topics` creates topics with both; a topic that exists with
fewer replicas or a lower ``min.insync.replicas`` than configured (made by an earlier
single-broker set-up, or by another tool) would silently weaken that promise, so a worker
refuses to start on it (:mod:`streamproc.worker.preflight`) and says how to fix it
(:func:`replication_advice`).
"""

from __future__ import annotations

from typing import NamedTuple

from streamproc.settings import Settings


class Replication(NamedTuple):
    """A topic's copies: the fewest replicas of any of its partitions, and its
    ``min.insync.replicas``."""

    replicas: int
    min_insync: int


def replication_configs(settings: Settings) -> dict[str, str]:
    """The topic configuration every topic streamproc creates carries.

    >>> replication_configs(Settings(replication_factor=3, min_insync_replicas=2))
    {'min.insync.replicas': '2'}
    """
    return {"min.insync.replicas": str(settings.min_insync_replicas)}


def under_replicated(found: dict[str, Replication], settings: Settings
                     ) -> dict[str, Replication]:
    """The topics of ``found`` with fewer replicas or a lower ``min.insync.replicas`` than
    configured (more is fine).

    >>> s = Settings(replication_factor=3, min_insync_replicas=2)
    >>> under_replicated({"a": Replication(3, 2), "b": Replication(1, 1),
    ...                   "c": Replication(3, 1)}, s)
    {'b': Replication(replicas=1, min_insync=1), 'c': Replication(replicas=3, min_insync=1)}
    """
    return {name: r for name, r in sorted(found.items())
            if r.replicas < settings.replication_factor
            or r.min_insync < settings.min_insync_replicas}


def replication_advice(wrong: dict[str, Replication], settings: Settings) -> str:
    """Why topics with too few copies (from :func:`under_replicated`) are refused, and what
    fixes them.

    >>> text = replication_advice({"streamproc.browsing": Replication(1, 1)},
    ...                           Settings(replication_factor=3, min_insync_replicas=2))
    >>> text.startswith("streamproc.browsing (replication factor 1, min.insync.replicas 1) "
    ...                 "has fewer copies than STREAMPROC_REPLICATION_FACTOR=3 and ")
    True
    >>> "kafka-reassign-partitions.sh" in text and "min.insync.replicas=2'" in text
    True
    """
    rf, isr = settings.replication_factor, settings.min_insync_replicas
    listed = ", ".join(f"{n} (replication factor {r.replicas}, min.insync.replicas "
                       f"{r.min_insync})" for n, r in wrong.items())
    steps = []
    few = [n for n, r in wrong.items() if r.replicas < rf]
    if few:
        steps.append(f"give {', '.join(few)} {rf} replicas with kafka-reassign-partitions.sh "
                     f"(--bootstrap-server {settings.kafka_bootstrap} --execute with a plan that "
                     f"lists {rf} brokers for every partition)")
    low = [n for n, r in wrong.items() if r.min_insync < isr]
    steps.extend(f"kafka-configs.sh --bootstrap-server {settings.kafka_bootstrap} --alter "
                 f"--entity-type topics --entity-name {n} --add-config 'min.insync.replicas="
                 f"{isr}'" for n in low)
    verb = "has" if len(wrong) == 1 else "have"
    return (f"{listed} {verb} fewer copies than STREAMPROC_REPLICATION_FACTOR={rf} and "
            f"STREAMPROC_MIN_INSYNC_REPLICAS={isr} promise: a broker's loss could lose "
            f"acknowledged events or decisions. Fix the topics: {'; '.join(steps)}. Or, if "
            "fewer copies are what you want, lower those settings to what the topics have. "
            "For the local stack: `streamproc stack down`, delete the stack dir's kafka "
            "directories, `streamproc stack up --kafka-brokers 3`")
