"""The local stack's pure parts: config rendering, the jar lock, pid and port checks.

No broker, no Redis and no Maven: processes here are short Python children, Maven and the
admin client are replaced by fakes.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from streamproc.errors import StackError
from streamproc.settings import Settings
from streamproc.stack import jars, kafka, process, redis, stack_status, stack_up, topics
from streamproc.stack.components import ComponentStatus, StackStatus


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        stack_dir=tmp_path / "stack",
        cache_dir=tmp_path / "cache",
        partitions=3,
    )


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- config rendering ---------------------------------------------------------------------

def test_server_properties(settings: Settings) -> None:
    paths = kafka.KafkaPaths.of(settings)
    text = kafka.render_server_properties(settings, paths)
    props = dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))
    host, port = settings.kafka_host_port
    ctrl = settings.kafka_controller_port
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == f"1@{host}:{ctrl}"
    assert props["listeners"] == f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{ctrl}"
    assert props["advertised.listeners"] == f"PLAINTEXT://{host}:{port}"
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert Path(props["log.dirs"]).is_absolute()
    assert Path(props["log.dirs"]) == (settings.stack_dir / "kafka" / "data").resolve()


def test_server_properties_of_a_three_node_cluster(settings: Settings) -> None:
    """Every node is a voter of one quorum, on its own ports, with its own data dir; the
    internal topics get 3 replicas, min.isr 2."""
    three = replace(settings, kafka_brokers=3, kafka_extra_port=free_port())
    host, base = three.kafka_host_port[0], three.kafka_extra_port
    voters = (f"1@{host}:{three.kafka_controller_port},2@{host}:{base + 1},"
              f"3@{host}:{base + 3}")
    for node, port in ((1, three.kafka_host_port[1]), (2, base), (3, base + 2)):
        paths = kafka.KafkaPaths.of(three, node)
        text = kafka.render_server_properties(three, paths, node=node)
        props = dict(line.split("=", 1) for line in text.splitlines()
                     if not line.startswith("#"))
        assert props["node.id"] == str(node)
        assert props["controller.quorum.voters"] == voters
        assert props["advertised.listeners"] == f"PLAINTEXT://{host}:{port}"
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["transaction.state.log.min.isr"] == "2"
        expected = "kafka" if node == 1 else f"kafka-{node}"
        assert Path(props["log.dirs"]) == (three.stack_dir / expected / "data").resolve()
    assert kafka.bootstrap_of(three) == f"{host}:{three.kafka_host_port[1]},{host}:{base}," \
        f"{host}:{base + 2}"
    assert kafka.is_local(replace(three, kafka_bootstrap=kafka.bootstrap_of(three)))
    assert not kafka.is_local(replace(three, kafka_bootstrap="127.0.0.1:9092,kafka:9092"))


def test_a_stack_made_for_other_broker_count_is_refused(settings: Settings) -> None:
    data = kafka.KafkaPaths.of(settings).data
    data.mkdir(parents=True)
    (data / "meta.properties").write_text("cluster.id=abc\nnode.id=1\n")
    kafka.check_formatted_for(settings)  # made before the count was kept: one node, as asked
    assert kafka.cluster_id(settings) == "abc"
    with pytest.raises(StackError, match=r"made for 1 broker\(s\), not 3: run `streamproc "
                       r"stack up --kafka-brokers 1`.*delete .*kafka\*"):
        kafka.check_formatted_for(replace(settings, kafka_brokers=3))


def test_status_without_the_broker_count_sees_every_node_of_the_stack_made(
        settings: Settings) -> None:
    """A stack made by `stack up --kafka-brokers 3`: `status` (and `up`) without the flag
    report its three nodes, not node 1 alone; an explicit other count is still refused."""
    three = replace(settings, kafka_brokers=3, kafka_extra_port=free_port())
    for node in (1, 2, 3):
        paths = kafka.KafkaPaths.of(three, node)
        paths.data.mkdir(parents=True)
        (paths.data / "meta.properties").write_text(f"cluster.id=abc\nnode.id={node}\n")
        paths.brokers.write_text("3\n")
        paths.pid.write_text(f"{dead_pid()}\n")
    one = replace(three, kafka_brokers=1)
    assert kafka.made_for(one) == 3
    assert kafka.as_made(one).kafka_brokers == 3
    status = stack_status(one)
    assert [c.name for c in status.components][:3] == ["kafka", "kafka-2", "kafka-3"]
    assert all(c.state == "stale" for c in status.components[:3])
    with pytest.raises(StackError, match=r"made for 3 broker\(s\), not 2"):
        kafka.check_formatted_for(kafka.as_made(replace(three, kafka_brokers=2)))


def test_stack_down_stops_every_node(settings: Settings) -> None:
    out = io.StringIO()
    three = replace(settings, kafka_brokers=3)
    for node in (1, 2):
        paths = kafka.KafkaPaths.of(three, node)
        paths.root.mkdir(parents=True)
        paths.pid.write_text(f"{dead_pid()}\n")
    kafka.stop(settings, out)  # one broker configured now: node 2's stale pid is found anyway
    assert "kafka-2: not running; removed a stale pid file" in out.getvalue()
    assert not kafka.KafkaPaths.of(three, 2).pid.exists()
    assert "kafka-3" not in out.getvalue()


def test_log4j2_logs_to_stack_dir(settings: Settings) -> None:
    paths = kafka.KafkaPaths.of(settings)
    text = kafka.render_log4j2(paths)
    assert f"appender.file.fileName = {paths.log}" in text
    assert paths.log.parent == (settings.stack_dir / "kafka").resolve()


def test_redis_conf(settings: Settings) -> None:
    paths = redis.RedisPaths.of(settings)
    lines = redis.render_conf(settings, paths).splitlines()
    assert f"port {settings.redis_host_port[1]}" in lines
    assert "bind 127.0.0.1" in lines
    assert "appendonly yes" in lines
    assert "set-proc-title no" in lines  # keeps our config path in the command line
    assert f'dir "{paths.root}"' in lines
    assert not any(line.startswith("requirepass") for line in lines)


def test_redis_conf_password_and_localhost(tmp_path: Path) -> None:
    s = Settings(redis_url="redis://:s%40cret@localhost:6390/2", stack_dir=tmp_path)
    lines = redis.render_conf(s, redis.RedisPaths.of(s)).splitlines()
    assert 'requirepass "s@cret"' in lines
    assert "bind 127.0.0.1" in lines and "port 6390" in lines


def test_pom_pins_versions_and_names_no_repository() -> None:
    pom = jars.render_pom()
    assert "<artifactId>kafka_2.13</artifactId><version>4.1.2</version>" in pom
    for name in ("log4j-api", "log4j-core", "log4j-slf4j-impl"):
        assert f"<artifactId>{name}</artifactId><version>2.24.3</version>" in pom
    assert "<packaging>pom</packaging>" in pom
    assert "http" not in pom and "<repositor" not in pom  # Maven's default repository only


def test_no_registry_host_in_stack_sources() -> None:
    for path in Path(jars.__file__).parent.iterdir():
        if path.suffix in (".py", ".lock"):
            assert "http" not in path.read_text(), path


@pytest.mark.parametrize(("output", "major"), [
    ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
    ('openjdk version "21" 2023-09-19', 21),
    ('java version "1.8.0_292"', 8),
    ("no idea", None),
])
def test_java_major(output: str, major: int | None) -> None:
    assert kafka.java_major(output) == major


def test_missing_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka.shutil, "which", lambda name: None)
    with pytest.raises(StackError, match="apt-get install openjdk-17-jre-headless"):
        kafka.find_java()


def test_old_java_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka.shutil, "which", lambda name: "/usr/bin/java")
    monkeypatch.setattr(kafka, "run", lambda *a, **k: 'openjdk version "11.0.2" 2019-01-15')
    with pytest.raises(StackError, match="needs Java 17 or newer"):
        kafka.find_java()


def test_cluster_id_is_kafka_uuid_format() -> None:
    for _ in range(50):
        cid = kafka.new_cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


# --- the jar lock -------------------------------------------------------------------------

def test_committed_lock_parses() -> None:
    lock = jars.parse_lock(jars.LOCK_FILE.read_text())
    assert len(lock) == 46
    assert "kafka_2.13-4.1.2.jar" in lock and "kafka-clients-4.1.2.jar" in lock
    assert "log4j-core-2.24.3.jar" in lock and "log4j-slf4j-impl-2.24.3.jar" in lock
    assert jars.format_lock(lock) == jars.LOCK_FILE.read_text()  # canonical, round-trips


def test_lock_digest_ignores_comments() -> None:
    lock = {"a.jar": "0" * 64, "b.jar": "1" * 64}
    text = jars.format_lock(lock)
    assert jars.lock_digest(jars.parse_lock("# other header\n" + text)) == jars.lock_digest(lock)
    assert jars.lock_digest({**lock, "b.jar": "2" * 64}) != jars.lock_digest(lock)


def test_write_lock_entry_point_needs_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from streamproc.stack.__main__ import main

    assert main([]) == 2
    assert "--write-lock" in capsys.readouterr().out


@pytest.mark.parametrize("text", [
    "",
    "# only a comment\n",
    "abc  x.jar\n",
    f"{'0' * 64}\n",
    f"{'0' * 64}  a.jar\n{'1' * 64}  a.jar\n",
    f"{'0' * 64}  dir/a.jar\n",
])
def test_malformed_lock_is_refused(text: str) -> None:
    with pytest.raises(StackError, match="--write-lock"):
        jars.parse_lock(text)


def fake_jars(libs: Path, contents: dict[str, bytes]) -> dict[str, str]:
    libs.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        (libs / name).write_bytes(data)
    return jars.hash_dir(libs)


JARS = {"a-1.0.jar": b"alpha", "b-2.0.jar": b"beta", "c-3.0.jar": b"gamma"}


def test_verify_accepts_matching_jars(tmp_path: Path) -> None:
    lock = fake_jars(tmp_path / "libs", JARS)
    jars.verify_jars(tmp_path / "libs", jars.parse_lock(jars.format_lock(lock)))


def test_verify_refuses_changed_missing_and_extra_jars(tmp_path: Path) -> None:
    libs = tmp_path / "libs"
    lock = fake_jars(libs, JARS)
    (libs / "b-2.0.jar").write_bytes(b"tampered")
    (libs / "c-3.0.jar").unlink()
    (libs / "evil-1.0.jar").write_bytes(b"x")
    with pytest.raises(StackError) as info:
        jars.verify_jars(libs, lock)
    message = str(info.value)
    assert "sha256 mismatch: b-2.0.jar" in message
    assert "missing: c-3.0.jar" in message
    assert "unexpected: evil-1.0.jar" in message
    assert "a-1.0.jar" not in message


@pytest.fixture
def maven_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """A lock for JARS, and a Maven that 'downloads' them; returns the list of its runs."""
    lock_file = tmp_path / "fake.lock"
    lock_file.write_text(jars.format_lock(fake_jars(tmp_path / "reference", JARS)))
    monkeypatch.setattr(jars, "LOCK_FILE", lock_file)
    runs: list[Path] = []

    def maven(workdir: Path, out: io.StringIO) -> Path:
        runs.append(workdir)
        fake_jars(workdir / "libs", JARS)
        return workdir / "libs"

    monkeypatch.setattr(jars, "maven_download", maven)
    return runs


def test_ensure_jars_fetches_once_then_uses_cache(tmp_path: Path, maven_runs: list[Path]) -> None:
    out = io.StringIO()
    libs = jars.ensure_jars(tmp_path / "cache", out)
    assert libs == tmp_path / "cache" / "kafka-4.1.2" / "libs"
    assert sorted(p.name for p in libs.iterdir()) == sorted(JARS)
    assert (libs.parent / "verified").exists()
    assert jars.ensure_jars(tmp_path / "cache", out) == libs
    assert len(maven_runs) == 1  # the second call did not run Maven
    assert not list(libs.parent.glob("download-*"))  # the work dir was cleaned up


def test_ensure_jars_caches_nothing_on_mismatch(tmp_path: Path, maven_runs: list[Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def bad_maven(workdir: Path, out: io.StringIO) -> Path:
        fake_jars(workdir / "libs", {**JARS, "b-2.0.jar": b"swapped"})
        return workdir / "libs"

    monkeypatch.setattr(jars, "maven_download", bad_maven)
    with pytest.raises(StackError, match="sha256 mismatch: b-2.0.jar"):
        jars.ensure_jars(tmp_path / "cache", io.StringIO())
    root = tmp_path / "cache" / "kafka-4.1.2"
    assert not (root / "verified").exists() and not (root / "libs").exists()


def test_cache_without_marker_is_not_trusted(tmp_path: Path, maven_runs: list[Path]) -> None:
    fake_jars(tmp_path / "cache" / "kafka-4.1.2" / "libs", JARS)  # e.g. an interrupted copy
    assert jars.cached_libs(tmp_path / "cache", jars.parse_lock(jars.LOCK_FILE.read_text())) \
        is None
    jars.ensure_jars(tmp_path / "cache", io.StringIO())
    assert len(maven_runs) == 1


def test_missing_maven_says_what_to_install(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jars.shutil, "which", lambda name: None)
    with pytest.raises(StackError, match="apt-get install maven"):
        jars.maven_download(tmp_path, io.StringIO())


# --- pids and ports -----------------------------------------------------------------------

def test_pid_file_missing_is_none(tmp_path: Path) -> None:
    assert process.check_pid(tmp_path / "x.pid", "marker").state == "none"


def test_dead_pid_is_stale(tmp_path: Path) -> None:
    pid_file = tmp_path / "kafka.pid"
    process.write_pid(pid_file, dead_pid())
    info = process.check_pid(pid_file, "marker")
    assert info.state == "stale" and "no longer runs" in info.reason


def test_garbage_pid_file_is_stale(tmp_path: Path) -> None:
    pid_file = tmp_path / "kafka.pid"
    pid_file.write_text("not a pid\n")
    assert process.check_pid(pid_file, "marker").state == "stale"


def test_live_process_that_is_not_ours_is_stale(tmp_path: Path) -> None:
    pid_file = tmp_path / "kafka.pid"
    process.write_pid(pid_file, os.getpid())  # alive, but its command line lacks the marker
    info = process.check_pid(pid_file, str(tmp_path / "server.properties"))
    assert info.state == "stale" and "another program" in info.reason


def test_ours_is_recognised_by_whole_argument(tmp_path: Path) -> None:
    config = tmp_path / "a" / "kafka" / "server.properties"
    pid_file = tmp_path / "kafka.pid"
    pid = process.spawn([sys.executable, "-c", "import time; time.sleep(30)", str(config)],
                        cwd=tmp_path, log_file=tmp_path / "out.log", pid_file=pid_file)
    try:
        assert process.read_pid(pid_file) == pid
        assert process.check_pid(pid_file, str(config)).state == "running"
        # A path that is only a suffix of our argument is another stack's process.
        assert process.check_pid(pid_file, "/a/kafka/server.properties").state == "stale"
        assert os.getsid(pid) != os.getsid(0)  # own session: survives the CLI exiting
    finally:
        assert process.stop_pid(pid, timeout=10) is False
    assert not process.pid_alive(pid)  # reaped, not a zombie that looks alive


def until_zombie(pid: int, what: str = "the child did not exit") -> None:
    """Until the process ``pid`` (its first thread) has exited and is not reaped yet."""
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + 10
    while stat.read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_zombie_counts_as_dead() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    until_zombie(proc.pid)  # exited, not yet waited for
    try:
        assert not process.pid_alive(proc.pid)
    finally:
        proc.wait()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_child_that_exits_while_it_is_checked_is_reaped(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pid = process.spawn([sys.executable, "-c", "pass"], cwd=tmp_path, log_file=tmp_path / "out",
                        pid_file=tmp_path / "p.pid")
    child = process._CHILDREN[pid]
    stat = Path(f"/proc/{pid}/stat")
    until_zombie(pid)  # exited, not yet reaped
    # The race: the reaping poll still saw it running, the state check then saw a zombie.
    polls: list[int | None] = []
    poll = child.poll

    def poll_late() -> int | None:
        polls.append(None if not polls else poll())
        return polls[-1]

    monkeypatch.setattr(child, "poll", poll_late)
    assert not process.pid_alive(pid)
    assert len(polls) == 2 and child.returncode == 0  # reaped by the second look
    assert pid not in process._CHILDREN and not stat.exists()


def test_a_child_whose_first_thread_exited_before_the_others_is_waited_for(
        tmp_path: Path) -> None:
    # As a JVM exits: its first thread is a zombie while the others still run. Stopping it
    # must wait for them (and reap it), not take the zombie for the end.
    release = tmp_path / "release"
    code = ("import ctypes, os, threading, time\n"
            "def wait():\n"
            f"    while not os.path.exists({str(release)!r}):\n"
            "        time.sleep(0.01)\n"
            "threading.Thread(target=wait).start()\n"
            "ctypes.CDLL(None).pthread_exit(None)\n")  # the GIL released: the thread goes on
    pid = process.spawn([sys.executable, "-c", code], cwd=tmp_path, log_file=tmp_path / "out",
                        pid_file=tmp_path / "p.pid")
    child = process._CHILDREN[pid]
    stat, tasks = Path(f"/proc/{pid}/stat"), Path(f"/proc/{pid}/task")
    until_zombie(pid, "the first thread did not exit")
    assert len(list(tasks.iterdir())) == 2
    assert process.pid_alive(pid)  # a zombie first thread, but the process runs
    release.touch()
    assert process.wait_dead(pid, 10)
    assert child.returncode == 0 and pid not in process._CHILDREN and not stat.exists()


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)")
    log = tmp_path / "out.log"
    pid = process.spawn([sys.executable, "-c", code], cwd=tmp_path, log_file=log,
                        pid_file=tmp_path / "p.pid")
    deadline = time.monotonic() + 10
    while "ready" not in log.read_text():  # SIGTERM ignored from now on
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    assert process.stop_pid(pid, timeout=0.5) is True
    assert not process.pid_alive(pid)


def test_port_in_use_by_a_bound_socket() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert process.port_in_use("127.0.0.1", port)  # bound, not even listening
        sock.listen()
        assert process.port_in_use("127.0.0.1", port)
        assert process.port_in_use("localhost", port)
        assert process.port_accepts("127.0.0.1", port)
    assert not process.port_in_use("127.0.0.1", port)
    assert not process.port_accepts("127.0.0.1", port)


@pytest.mark.parametrize(("host", "local"), [
    ("127.0.0.1", True), ("localhost", True), ("127.0.1.1", True), ("::1", True),
    ("[::1]", True), ("10.0.0.5", False), ("kafka.internal", False), ("0.0.0.0", False),
])
def test_is_loopback(host: str, local: bool) -> None:
    assert process.is_loopback(host) is local


def test_tail_shows_only_this_runs_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("old 1\nold 2\n")
    since = process.log_size(log)
    with open(log, "a") as f:
        f.write("new 1\nnew 2\n")
    assert process.tail(log, since=since) == "new 1\nnew 2"
    assert process.tail(log, lines=1) == "new 2"
    assert process.tail(tmp_path / "missing.log") == ""


def test_run_timeout_and_failure_are_stack_errors() -> None:
    with pytest.raises(StackError, match="did not finish within"):
        process.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout=0.3, what="x")
    with pytest.raises(StackError, match=r"failed \(exit 3\).*boom"):
        process.run([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], timeout=10,
                    what="x")


# --- status and up, without starting anything --------------------------------------------

def test_status_of_a_fresh_stack_is_stopped(settings: Settings) -> None:
    status = stack_status(settings)
    assert [c.state for c in status.components] == ["stopped", "stopped"]
    assert not status.running


def test_status_reports_stale_pid_files(settings: Settings) -> None:
    kpaths, rpaths = kafka.KafkaPaths.of(settings), redis.RedisPaths.of(settings)
    kpaths.root.mkdir(parents=True)
    rpaths.root.mkdir(parents=True)
    process.write_pid(kpaths.pid, dead_pid())
    process.write_pid(rpaths.pid, os.getpid())
    status = stack_status(settings)
    assert status.kafka.state == "stale" and status.redis.state == "stale"


def test_status_reports_ports_taken_by_others(settings: Settings) -> None:
    with socket.socket() as k, socket.socket() as r:
        k.bind(("127.0.0.1", settings.kafka_controller_port))
        r.bind(settings.redis_host_port)
        r.listen()
        status = stack_status(settings)
    assert status.kafka.state == "port-taken"
    assert "STREAMPROC_KAFKA_CONTROLLER_PORT" in status.kafka.detail
    assert str(settings.kafka_controller_port) in status.kafka.detail
    assert status.redis.state == "port-taken" and "STREAMPROC_REDIS_URL" in status.redis.detail


def test_up_refuses_a_taken_port_before_starting_anything(settings: Settings) -> None:
    with socket.socket() as r:
        r.bind(settings.redis_host_port)
        r.listen()
        with pytest.raises(StackError, match="STREAMPROC_REDIS_URL"):
            stack_up(settings, io.StringIO())
    assert not (settings.stack_dir / "kafka").exists()  # nothing was started or written


def test_up_refuses_remote_services(tmp_path: Path) -> None:
    s = Settings(kafka_bootstrap="kafka.example:9092", redis_url="redis://10.1.2.3:6379/0",
                 stack_dir=tmp_path)
    with pytest.raises(StackError, match="only manages local services") as info:
        stack_up(s, io.StringIO())
    assert "STREAMPROC_KAFKA_BOOTSTRAP" in str(info.value)
    assert "STREAMPROC_REDIS_URL" in str(info.value)
    assert stack_status(s).kafka.state == "external"


def test_render_table() -> None:
    status = StackStatus(
        kafka=ComponentStatus("kafka", "running", "127.0.0.1:9092 (controller 9093)", 123,
                              "log: x"),
        redis=ComponentStatus("redis", "stopped", "127.0.0.1:6379"),
    )
    lines = status.render().splitlines()
    assert lines[0].split() == ["COMPONENT", "STATE", "PID", "ADDRESS", "DETAIL"]
    assert lines[1].split()[:3] == ["kafka", "running", "123"]
    assert lines[2].split() == ["redis", "stopped", "-", "127.0.0.1:6379"]
    assert lines[1].index("running") == lines[2].index("stopped")  # aligned columns
    assert not status.running


# --- Redis installation --------------------------------------------------------------------

def test_missing_redis_without_root_says_what_to_install(settings: Settings,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis.shutil, "which", lambda name, path=None: None)
    monkeypatch.setattr(redis, "_can_sudo", lambda: False)
    with pytest.raises(StackError, match="sudo apt-get install redis-server.*brew install redis"):
        redis.prepare(settings, io.StringIO())


def test_missing_redis_is_installed_as_root(settings: Settings,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[list[str]] = []
    installed: list[bool] = []

    def which(name: str, path: str | None = None) -> str | None:
        if name == "apt-get":
            return "/usr/bin/apt-get"
        return "/usr/bin/redis-server" if installed else None

    def run(argv: list[str], **kwargs: object) -> str:
        commands.append(argv)
        if argv[-1] == "redis-server" and len(commands) == 1:
            raise StackError("E: Unable to locate package redis-server")  # no package lists
        if argv[-1] == "redis-server":
            installed.append(True)
        return ""

    monkeypatch.setattr(redis.shutil, "which", which)
    monkeypatch.setattr(redis.os, "geteuid", lambda: 0)
    monkeypatch.setattr(redis, "run", run)
    out = io.StringIO()
    assert redis.prepare(settings, out) == "/usr/bin/redis-server"
    assert [c[-2:] for c in commands] == [["-y", "redis-server"], ["/usr/bin/apt-get", "update"],
                                          ["-y", "redis-server"]]
    assert "DEBIAN_FRONTEND=noninteractive" in commands[0]
    assert "apt-get install -y redis-server" in out.getvalue()


def test_redis_ping_on_a_closed_port_is_false() -> None:
    assert not redis.ping("127.0.0.1", free_port(), timeout=0.2)


def test_resp_encoding() -> None:
    assert redis._resp("AUTH", "pw") == b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n"


# --- topics, against a fake admin client --------------------------------------------------

class FakeAdmin:
    """Enough of AIOKafkaAdminClient for ensure_topics: a dict of topic -> partition count."""

    topics: dict[str, int] = {}
    racing: set[str] = set()  # created by "someone else" between describe and create

    def __init__(self, **kwargs: object) -> None:
        self.closed = False

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True

    async def describe_topics(self) -> list[dict]:
        return [{"topic": t, "error_code": 0, "partitions": [{}] * n}
                for t, n in self.topics.items()]

    async def create_topics(self, new_topics: list, timeout_ms: int) -> SimpleNamespace:
        errors = []
        for nt in new_topics:
            if nt.name in self.racing or nt.name in self.topics:
                self.topics.setdefault(nt.name, nt.num_partitions)
                errors.append((nt.name, 36, "already exists"))
            else:
                self.topics[nt.name] = nt.num_partitions
                errors.append((nt.name, 0, None))
        return SimpleNamespace(topic_errors=errors)


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> type[FakeAdmin]:
    FakeAdmin.topics, FakeAdmin.racing = {}, set()
    monkeypatch.setattr(topics, "AIOKafkaAdminClient", FakeAdmin)
    return FakeAdmin


async def test_ensure_topics_creates_missing_only(settings: Settings,
                                                  admin: type[FakeAdmin]) -> None:
    names = settings.topics.all()
    admin.topics = {names[0]: 3, "unrelated": 1}
    created = await topics.ensure_topics(settings)
    assert created == list(names[1:])
    assert {n: admin.topics[n] for n in names} == {
        n: 1 if n in (settings.topics.learning, settings.topics.products) else 3
        for n in names}  # the learner's topics have one partition
    assert await topics.ensure_topics(settings) == []  # repeatable


async def test_ensure_topics_tolerates_a_concurrent_creator(settings: Settings,
                                                            admin: type[FakeAdmin]) -> None:
    admin.racing = {settings.topics.browsing}
    created = await topics.ensure_topics(settings)
    assert settings.topics.browsing not in created and len(created) == 8


async def test_ensure_topics_refuses_other_partition_counts(settings: Settings,
                                                            admin: type[FakeAdmin]) -> None:
    admin.topics = {settings.topics.purchases: 8}
    with pytest.raises(StackError, match=r"STREAMPROC_PARTITIONS=3: streamproc.purchases has 8"):
        await topics.ensure_topics(settings)
    assert admin.topics == {settings.topics.purchases: 8}  # refused before creating anything
    admin.topics = {settings.topics.learning: 3}
    with pytest.raises(StackError, match=r"streamproc.learning has 3 \(the learning and products"):
        await topics.ensure_topics(settings)


async def test_ensure_topics_without_kafka_is_a_stack_error(settings: Settings) -> None:
    with pytest.raises(StackError, match="cannot create topics"):
        await topics.ensure_topics(settings)


def test_signal_helper_ignores_gone_processes() -> None:
    process.signal_process(dead_pid(), signal.SIGTERM)  # no exception


def test_status_names_another_stack_holding_the_port(settings: Settings, tmp_path: Path) -> None:
    """A process started like another stack's Redis (its config path as an argument, its pid in
    that stack's pid file) listening on our Redis port: reported as that stack, not anonymous."""
    other = tmp_path / "other-checkout" / ".stack"
    (other / "redis").mkdir(parents=True)
    host, port = settings.redis_host_port
    script = ("import socket, sys, time; s = socket.socket(); "
              "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
              f"s.bind(({host!r}, {port})); s.listen(); print('ok', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(other / "redis" / "redis.conf")],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ok\n"
        process.write_pid(other / "redis" / "redis.pid", proc.pid)
        status = stack_status(settings)
        assert status.redis.state == "other-stack" and status.redis.pid == proc.pid
        assert f"held by another streamproc stack in {other} (redis, pid {proc.pid})" in \
            status.redis.detail
        assert f"STREAMPROC_STACK_DIR={other} streamproc stack down" in status.redis.detail
        with pytest.raises(StackError, match="another streamproc stack"):
            stack_up(settings, io.StringIO())
        (other / "redis" / "redis.pid").unlink()  # not that stack's process after all
        assert stack_status(settings).redis.state == "port-taken"
    finally:
        proc.kill()
        proc.wait()


# --- the local Redis Cluster (`stack up --redis-cluster N`) ------------------------------------

def test_cluster_nodes_are_configured_as_a_cluster_on_consecutive_ports(tmp_path: Path) -> None:
    from streamproc.stack import redis_cluster

    settings = Settings(stack_dir=tmp_path, redis_cluster_port=17400)
    nodes = redis_cluster.nodes(settings, 3)
    assert [n.port for n in nodes] == list(range(17400, 17406))
    conf = redis_cluster.render_conf(nodes[4])
    for line in ("port 17404", "bind 127.0.0.1", "cluster-enabled yes", "appendonly yes",
                 f'dir "{tmp_path.resolve()}/redis-cluster/17404"'):
        assert line in conf.splitlines(), line
    assert redis_cluster.url(settings, 3).startswith("redis+cluster://127.0.0.1:17400,")
    assert Settings(redis_url=redis_cluster.url(settings, 3)).redis_is_cluster


def test_a_cluster_of_another_size_is_not_mixed_with_the_one_made(tmp_path: Path) -> None:
    from streamproc.stack import redis_cluster

    settings = Settings(stack_dir=tmp_path, redis_cluster_port=17400)
    for node in redis_cluster.nodes(settings, 3):
        node.root.mkdir(parents=True)
    assert redis_cluster.status(settings) is None  # made once, not running: not shown
    with pytest.raises(StackError, match="already exists"):
        redis_cluster.up(settings, 2, io.StringIO())
    with pytest.raises(StackError, match="at least 1"):
        redis_cluster.up(settings, 0, io.StringIO())
    out = io.StringIO()
    redis_cluster.stop(settings, out)
    assert out.getvalue() == "redis-cluster: stopped 0 nodes\n"


def test_a_cluster_url_needs_the_local_cluster_running(tmp_path: Path) -> None:
    settings = Settings(stack_dir=tmp_path, redis_url="redis+cluster://127.0.0.1:17400")
    status = stack_status(settings)
    assert status.redis.name == "redis-cluster" and status.redis.state == "stopped"
    assert "--redis-cluster 3" in status.redis.detail
    with pytest.raises(StackError, match="--redis-cluster 3"):
        stack_up(settings, io.StringIO())


def test_stack_up_names_a_running_cluster_by_its_nodes_not_a_pid() -> None:
    """A Redis Cluster runs a process per node: the component has no one pid. `stack up` says
    which nodes run instead of "(pid None)", and nothing of a cluster its own `--redis-cluster`
    step has just reported."""
    from streamproc.stack import _running_before

    cluster = ComponentStatus("redis-cluster", "running", "127.0.0.1:7000-7005",
                              detail="6 of 6 nodes; STREAMPROC_REDIS_URL=redis+cluster://x")
    before = StackStatus(kafka=ComponentStatus("kafka", "stopped", "127.0.0.1:9092"),
                         redis=ComponentStatus("redis", "running", "127.0.0.1:6379", pid=42),
                         redis_cluster=cluster)
    assert _running_before(before) == [
        "redis: already running (pid 42)",
        "redis-cluster: already running (6 of 6 nodes; STREAMPROC_REDIS_URL=redis+cluster://x)"]
    assert _running_before(before, reported=("redis-cluster",)) == [
        "redis: already running (pid 42)"]

    # Some nodes down: `stack up` does not wait for the cluster, and says how to start them.
    partial = replace(cluster, state="starting", detail="4 of 6 nodes")
    [line] = _running_before(replace(before, redis=partial, redis_cluster=None))
    assert line.startswith("redis-cluster: not ready (4 of 6 nodes)"), line
    assert "--redis-cluster N" in line and "None" not in line and "waiting" not in line
    starting = ComponentStatus("kafka", "starting", "127.0.0.1:9092", pid=7)
    assert _running_before(replace(before, kafka=starting, redis_cluster=None)) == [
        "kafka: already starting (pid 7); waiting for it", "redis: already running (pid 42)"]
