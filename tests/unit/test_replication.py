"""Replication settings: validated together, carried by every created topic, and a topic with
fewer copies than configured is refused with what to do (streamproc.stack.replication)."""

from __future__ import annotations

import pytest

from streamproc.errors import ConfigError
from streamproc.settings import Settings
from streamproc.stack import cluster_topic_settings
from streamproc.stack.replication import (
    Replication,
    replication_advice,
    replication_configs,
    under_replicated,
)

CLUSTER = {"STREAMPROC_REPLICATION_FACTOR": "3", "STREAMPROC_MIN_INSYNC_REPLICAS": "2"}


def test_min_insync_replicas_above_the_replication_factor_is_refused() -> None:
    Settings.from_env(CLUSTER).validate()
    with pytest.raises(ConfigError, match=r"MIN_INSYNC_REPLICAS=3 is more than "
                       r"STREAMPROC_REPLICATION_FACTOR=1: no write could succeed"):
        Settings.from_env({"STREAMPROC_MIN_INSYNC_REPLICAS": "3"}).validate()
    assert Settings().min_insync_replicas == 1 and Settings().replication_factor == 1


def test_created_topics_carry_min_insync_replicas() -> None:
    assert replication_configs(Settings.from_env(CLUSTER)) == {"min.insync.replicas": "2"}


def test_fewer_copies_than_configured_are_refused_with_the_fix() -> None:
    settings = Settings.from_env(CLUSTER)
    found = {"streamproc.browsing": Replication(1, 1), "streamproc.decisions": Replication(3, 1),
             "streamproc.feedback": Replication(3, 2), "streamproc.learning": Replication(5, 4)}
    wrong = under_replicated(found, settings)
    assert list(wrong) == ["streamproc.browsing", "streamproc.decisions"]
    text = replication_advice(wrong, settings)
    assert "streamproc.browsing (replication factor 1, min.insync.replicas 1)" in text
    assert "give streamproc.browsing 3 replicas with kafka-reassign-partitions.sh" in text
    assert "streamproc.decisions 3 replicas" not in text  # it has them: only its min ISR
    for name in wrong:
        assert (f"--entity-name {name} --add-config 'min.insync.replicas=2'") in text
    assert "streamproc stack up --kafka-brokers 3" in text
    assert under_replicated(found, Settings()) == {}  # one copy configured: all are enough


def test_the_local_cluster_gives_its_topics_three_replicas() -> None:
    three = cluster_topic_settings(Settings(kafka_brokers=3))
    assert (three.replication_factor, three.min_insync_replicas) == (3, 2)
    two = cluster_topic_settings(Settings(kafka_brokers=2))
    assert (two.replication_factor, two.min_insync_replicas) == (2, 1)
    more = cluster_topic_settings(Settings(kafka_brokers=5, replication_factor=5,
                                           min_insync_replicas=3))
    assert (more.replication_factor, more.min_insync_replicas) == (5, 3)
