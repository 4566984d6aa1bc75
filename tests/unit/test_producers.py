"""Every producer of the project partitions keys with Kafka's default (murmur2): none names a
partitioner or sends to a chosen partition, which would put a customer's events off the
partition the worker checks (README, "Producing events")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("streamproc", "bench", "examples", "deploy", "tests")
                 for p in (ROOT / d).rglob("*.py"))
SENDS = {"send", "send_and_wait", "send_batch", "produce"}


def overrides(tree: ast.AST) -> list[str]:
    """Calls in ``tree`` that choose a partition or a partitioner: ``line: call``."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
            node.func, "id", "")
        for kw in node.keywords:
            if kw.arg == "partitioner" or (kw.arg == "partition" and name in SENDS):
                found.append(f"{node.lineno}: {name}(..., {kw.arg}=...)")
    return found


def test_the_check_finds_an_override() -> None:
    assert overrides(ast.parse("p.send_and_wait(t, v, key=k, partition=2)")) == [
        "1: send_and_wait(..., partition=...)"]
    assert overrides(ast.parse("AIOKafkaProducer(partitioner=mine)")) == [
        "1: AIOKafkaProducer(..., partitioner=...)"]
    assert overrides(ast.parse("p.send(t, v, key=k)")) == []


def test_no_producer_chooses_its_partitions() -> None:
    # The partitioning test's librdkafka producer sets partitioner=murmur2_random on purpose.
    # The worker's emitter hands aiokafka a record batch per partition, the partition of each
    # key computed by partition_for (Kafka's murmur2, tests/unit/test_partitioner.py);
    # tests/integration/test_emitter.py checks where its records land.
    allowed = {"tests/integration/test_partitioning.py", "streamproc/worker/emitter.py"}
    found = {str(p.relative_to(ROOT)): overrides(ast.parse(p.read_text())) for p in SOURCES
             if str(p.relative_to(ROOT)) not in allowed}
    assert len(found) > 100  # the whole project was read
    assert {path: calls for path, calls in found.items() if calls} == {}
