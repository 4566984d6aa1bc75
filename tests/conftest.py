"""Shared test set-up."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# Imported up front: when hypothesis's pytest plugin first imports it at the end of a session
# that ran Faust's test context, CPython 3.11 can fail with "AST constructor recursion depth
# mismatch" while rewriting it.
import hypothesis  # noqa: F401
import pytest

# --- child processes a test leaves running --------------------------------------------------
# CI runs have printed "ResourceWarning: subprocess N is still running" after the summary (a
# child of the test process still running at its exit) without saying which test started it.
# Every test is checked for children it leaves behind (Linux lists them in /proc; elsewhere the
# check is off), and the end of the run names the tests and the processes.

_left_running: list[tuple[str, list[str]]] = []


def _children() -> set[int] | None:
    """The pids of this process's children, or None where /proc does not list them."""
    pids: set[int] = set()
    try:
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            pids.update(int(p) for p in (task / "children").read_text().split())
    except OSError:
        return None
    return pids


def _describe(pid: int) -> str:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return f"{pid} (gone)"
    return f"{pid} [{'zombie' if state == 'Z' else 'running'}] {argv[:200]}"


@pytest.fixture(autouse=True)
def _children_left_running(request: pytest.FixtureRequest) -> Iterator[None]:
    before = _children()
    yield
    after = _children()
    if before is not None and after is not None and after - before:
        _left_running.append((request.node.nodeid, [_describe(p) for p in sorted(after - before)]))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _left_running:
        terminalreporter.section("child processes a test left behind")
        for nodeid, processes in _left_running:
            terminalreporter.write_line(f"{nodeid}: {'; '.join(processes)}")


# --- the cluster stack ------------------------------------------------------------------------
# `--cluster-stack` runs the integration tests marked `core` against a three-broker Kafka and a
# Redis Cluster (three primaries, a replica each) the session starts (tests/integration/conftest.py:
# kafka_cluster, redis_cluster) instead of the single-node stack; the other integration tests
# are deselected (they test the single-node stack itself, or start their own cluster already).


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster-stack", action="store_true",
        help="run the integration tests marked `core` on a three-broker Kafka and a Redis "
             "Cluster started for the session (the README's Development section)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--cluster-stack"):
        return
    integration = Path(__file__).parent / "integration"
    other = [i for i in items if i.path.is_relative_to(integration)
             and i.get_closest_marker("core") is None]
    if other:
        config.hook.pytest_deselected(items=other)
        left = set(map(id, other))
        items[:] = [i for i in items if id(i) not in left]
