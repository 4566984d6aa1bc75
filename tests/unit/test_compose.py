"""The Docker files, checked statically (no Docker engine needed): docker-compose.yml,
.env.example, deploy/Dockerfile, .dockerignore, the hashed locks and the topics script.

They must agree with the code: commands the CLI accepts, settings that exist, the Kafka version
of the local stack, the dependency ranges of pyproject.toml.
"""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import re
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from streamproc.cli import build_parser
from streamproc.errors import StackError
from streamproc.redis_options import cluster_nodes
from streamproc.settings import KNOWN_VARIABLES, Settings
from streamproc.stack import jars

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = ROOT / "deploy" / "requirements.lock"
BUILD_LOCK = ROOT / "deploy" / "build-requirements.lock"
TOPICS_SCRIPT = ROOT / "deploy" / "compose" / "create_topics.py"

VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SETTING_NAME = re.compile(r"\bSTREAMPROC_[A-Z0-9_]+")


# --- helpers ---------------------------------------------------------------------------------

def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Compose's ``${VAR}``/``${VAR:-default}`` substitution, recursively, with ``env``
    (default: nothing set, i.e. the defaults written in the file)."""
    env = env or {}
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        found = env.get(name)
        if (op in (":-", ":?") and not found) or (op in ("-", "?") and found is None):
            if op.endswith("?"):
                raise AssertionError(f"${{{name}}} is required: {arg}")
            return arg
        if found is None:
            raise AssertionError(f"${{{name}}} has no default: the stack would need a .env")
        return found

    return VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


@cache
def raw_compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def compose() -> dict[str, Any]:
    interpolated: dict[str, Any] = interpolate(raw_compose())
    return interpolated


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def uses_our_image(service: dict[str, Any]) -> bool:
    build = service.get("build")
    dockerfile = build.get("dockerfile") if isinstance(build, dict) else None
    return dockerfile == "deploy/Dockerfile" or service.get("image") == "streamproc:local"


def our_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if uses_our_image(s)}


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=value: {line!r}"
            values[key.strip()] = value.strip()
    return values


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), by stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM" and stages[-1] and any(
                i == "FROM" for i, _ in stages[-1]):
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def docker_args(stage: list[tuple[str, str]]) -> dict[str, str]:
    args = {}
    for instruction, rest in stage:
        if instruction == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value
    return args


def expand_args(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m[1], m[0]), text)


def dockerignore_excludes(relative: str) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes; a pattern that
    matches a directory matches everything below it; ``**`` is any number of directories."""
    excluded = False
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = "".join(
            ".*" if part == "**" else re.escape(part).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
            for part in re.split(r"(\*\*)", pattern))
        regex = regex.replace(".*/", "(?:.*/)?")
        parts = relative.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(re.fullmatch(regex, p) for p in prefixes):
            excluded = not negate
    return excluded


PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#\\]+)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def lock_entries(path: Path) -> dict[str, tuple[str, Version, list[str]]]:
    """A pip-compile --generate-hashes file: {canonical name: (name, version, [--hash=...])}.
    Each requirement is one line continued with backslashes; comments are dropped."""
    entries: dict[str, tuple[str, Version, list[str]]] = {}
    text = re.sub(r"\\\n", " ", path.read_text())
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), \
            f"{path.name}: {line.split()[0]} would change where pip downloads from or what it does"
        pin, *options = line.split()
        match = PIN.fullmatch(pin)
        assert match, f"{path.name}: not an exact name==version pin: {pin!r}"
        name = canonicalize_name(match[1])
        assert name not in entries, f"{path.name} pins {name} twice"
        entries[name] = (match[1], Version(match[2]), options)
    return entries


def lock_pins(path: Path = LOCK) -> dict[str, tuple[str, Version]]:
    return {name: (shown, version) for name, (shown, version, _) in lock_entries(path).items()}


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_closure(roots: list[str]) -> Iterator[tuple[Requirement, str]]:
    """Every (requirement, required by) reachable from ``roots`` through the metadata of the
    installed distributions, with markers evaluated for this interpreter (CPython 3.11 on
    Linux, like the image) and extras followed."""
    environment = default_environment()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(Requirement(r), "pyproject.toml") for r in roots]
    while todo:
        requirement, parent = todo.pop()
        yield requirement, parent
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        for text in metadata.distribution(requirement.name).requires or []:
            sub = Requirement(text)
            extras = requirement.extras or {""}
            if sub.marker is None or any(
                    sub.marker.evaluate({**environment, "extra": e}) for e in extras):
                todo.append((sub, name))


def load_topics_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("create_topics", TOPICS_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- docker-compose.yml ------------------------------------------------------------------------

def test_compose_parses_with_the_expected_services() -> None:
    assert {"kafka", "redis", "topics", "worker", "learner", "simulator"} <= set(services())
    assert set(our_services()) >= {"topics", "worker", "learner", "simulator"}
    for name in ("kafka", "redis"):
        assert not uses_our_image(services()[name])


def test_compose_needs_no_env_file() -> None:
    """Every ${VAR} has a default (interpolate() raises otherwise) and .env is optional."""
    compose()
    for name, service in our_services().items():
        for entry in service.get("env_file", []):
            assert isinstance(entry, dict) and entry.get("required") is False, (name, entry)


def test_every_streamproc_command_is_accepted_by_the_cli() -> None:
    parser = build_parser()
    commands = set(next(a for a in parser._actions if a.dest == "command").choices or ())
    checked = 0
    for name, service in our_services().items():
        if "entrypoint" in service:
            continue  # checked by the topics tests below
        command = service.get("command", ["worker"])
        assert isinstance(command, list), f"{name}: use the exec (list) form of command"
        assert command[0] in commands, f"{name}: {command[0]!r} is no streamproc command"
        parser.parse_args([str(word) for word in command])  # SystemExit on a bad argument
        checked += 1
    assert checked >= 2


def test_simulator_command_with_other_values_from_env() -> None:
    raw = raw_compose()["services"]["simulator"]["command"]
    command = interpolate(raw, {"SIM_CUSTOMERS": "50", "SIM_RATE": "12.5", "SIM_SEED": "3"})
    args = build_parser().parse_args(command)
    assert (args.command, args.customers, args.rate, args.seed) == ("simulate", 50, 12.5, 3)


def test_topics_service_runs_the_script_copied_into_the_image() -> None:
    topics = services()["topics"]
    entrypoint = topics["entrypoint"]
    assert entrypoint[0] == "python"
    copies = [rest for stage in dockerfile_stages()[-1:] for i, rest in stage if i == "COPY"]
    assert f"deploy/compose/{TOPICS_SCRIPT.name} {entrypoint[1]}" in copies
    assert topics.get("restart") == "no", "a one-shot service must not be restarted"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    script = load_topics_script()
    calls = []

    async def fake_ensure_topics(settings: Settings, fix_configs: bool = False,
                                 out: list[str] | None = None) -> list[str]:
        calls.append(fix_configs)
        return []

    script.__dict__["ensure_topics"] = fake_ensure_topics
    assert script.main(topics.get("command", []), sleep=lambda s: None) == 0
    # The topics job also makes existing decisions/segments/dead-letter topics compacted.
    assert calls == [True]


def test_topics_script_retries_an_unreachable_kafka_but_not_a_refusal() -> None:
    script = load_topics_script()
    calls = []

    async def unreachable(settings: Settings, **kwargs: object) -> list[str]:
        calls.append(1)
        raise StackError("cannot create topics") from OSError("connection refused")

    script.__dict__["ensure_topics"] = unreachable
    assert script.main(["--attempts", "3"], sleep=lambda s: None) == 1
    assert len(calls) == 3

    async def mismatch(settings: Settings, **kwargs: object) -> list[str]:
        calls.append(1)
        raise StackError("topic partition counts differ")

    calls.clear()
    script.__dict__["ensure_topics"] = mismatch
    assert script.main(["--attempts", "3"], sleep=lambda s: None) == 1
    assert len(calls) == 1


def test_worker_is_scalable_and_waits_for_its_dependencies() -> None:
    worker = services()["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker, "fixed host ports would clash with --scale worker=N"
    assert "hostname" not in worker
    conditions = {name: dep["condition"] for name, dep in worker["depends_on"].items()}
    assert conditions == {"kafka": "service_healthy", "redis": "service_healthy",
                          "topics": "service_completed_successfully"}


def test_the_learner_runs_beside_the_workers_not_in_them() -> None:
    learner, worker = services()["learner"], services()["worker"]
    assert learner["command"] == ["learner"]
    assert Settings.from_env({k: str(v) for k, v in worker["environment"].items()}).learner \
        == "off"
    conditions = {name: dep["condition"] for name, dep in learner["depends_on"].items()}
    assert conditions == {"kafka": "service_healthy", "redis": "service_healthy",
                          "topics": "service_completed_successfully"}
    # Without a secret it exits 0 at once (the workers learn then): not restarted in a loop.
    assert learner["restart"] == "on-failure"


def test_healthy_dependencies_have_healthchecks() -> None:
    for name, service in services().items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: use the long depends_on form"
        for target, dep in depends.items():
            assert target in services(), f"{name} depends on unknown {target}"
            if dep.get("condition") == "service_healthy":
                assert "healthcheck" in services()[target], f"{target} has no healthcheck"


def test_kafka_matches_the_local_stack() -> None:
    kafka = services()["kafka"]
    image, _, tag = kafka["image"].partition("@")[0].partition(":")
    assert image == "apache/kafka"
    assert tag == jars.KAFKA_VERSION
    assert (ROOT / "streamproc" / "stack" / f"kafka-{tag}.lock").is_file()
    env = kafka["environment"]
    assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"
    assert str(env["KAFKA_NODE_ID"]) == "1"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    for key, value in env.items():
        if key.endswith("REPLICATION_FACTOR") or key.endswith("MIN_ISR"):
            assert str(value) == "1", key
    # The workers' bootstrap address is a listener the broker advertises.
    bootstrap = our_services()["worker"]["environment"]["STREAMPROC_KAFKA_BOOTSTRAP"]
    assert f"PLAINTEXT://{bootstrap}" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")


def test_the_kafka_cluster_profile_makes_a_three_node_quorum() -> None:
    """`--profile kafka-cluster` adds nodes 2 and 3; the block of .env.example that goes with
    it makes the three one quorum, with replicated topics, as `stack up --kafka-brokers 3`."""
    block = {}
    for line in ENV_EXAMPLE.read_text().split("# --- three Kafka brokers")[1].splitlines()[1:]:
        if not line.startswith("# ") or "=" not in line or " " in line[2:].split("=")[0]:
            if block:
                break
            continue
        key, _, value = line[2:].partition("=")
        block[key] = value
    nodes = interpolate(raw_compose(), block)["services"]
    cluster = {name: nodes[name] for name in ("kafka", "kafka-2", "kafka-3")}
    assert [s.get("profiles") for s in cluster.values()] == [None, ["kafka-cluster"],
                                                            ["kafka-cluster"]]
    voters = {f"{s['environment']['KAFKA_NODE_ID']}@{s['hostname']}:9093"
              for s in cluster.values()}
    for service in cluster.values():
        env = service["environment"]
        assert service["image"] == services()["kafka"]["image"]
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        assert env["CLUSTER_ID"] == services()["kafka"]["environment"]["CLUSTER_ID"]
        assert str(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "3"
        assert str(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == "2"
        assert f"PLAINTEXT://{service['hostname']}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    settings = Settings.from_env({**env_example(), **block})
    assert settings.kafka_bootstrap == "kafka:9092,kafka-2:9092,kafka-3:9092"
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)


def published_ports() -> list[tuple[str, int, str]]:
    found = []
    for name, service in services().items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                host_ip, published = port.get("host_ip", ""), port.get("published")
            else:
                parts = str(port).split(":")
                assert len(parts) >= 2, f"{name}: {port!r} publishes a random host port"
                host_ip, published = (parts[0] if len(parts) == 3 else ""), parts[-2]
            found.append((name, int(str(published)), host_ip))
    return found


def test_published_host_ports_do_not_clash() -> None:
    ports = published_ports()
    numbers = [port for _, port, _ in ports]
    assert len(numbers) == len(set(numbers)), ports
    local = Settings()  # the local stack (`streamproc stack up`) may run at the same time
    taken = {local.kafka_host_port[1], local.kafka_controller_port, local.redis_host_port[1]}
    assert not taken & set(numbers), f"the local stack uses {sorted(taken)}"
    for name, _, host_ip in ports:
        assert host_ip == "127.0.0.1", f"{name}: publish on loopback only"


def test_kafka_external_listener_advertises_the_published_port() -> None:
    for env in ({}, {"KAFKA_HOST_PORT": "29094"}):
        kafka = interpolate(raw_compose(), env)["services"]["kafka"]
        published = kafka["ports"][0].split(":")[-2]
        assert f"EXTERNAL://127.0.0.1:{published}" in kafka["environment"][
            "KAFKA_ADVERTISED_LISTENERS"]


# --- settings: only known STREAMPROC_* variables ---------------------------------------------

@pytest.mark.parametrize("path", [COMPOSE, ENV_EXAMPLE, DOCKERFILE], ids=lambda p: p.name)
def test_only_known_settings_are_named(path: Path) -> None:
    named = set(SETTING_NAME.findall(path.read_text()))
    assert named, f"{path.name} names no STREAMPROC_* setting"
    assert named <= KNOWN_VARIABLES, sorted(named - KNOWN_VARIABLES)


def test_container_environment_is_valid_settings() -> None:
    for name, service in our_services().items():
        env = {k: str(v) for k, v in service.get("environment", {}).items()}
        assert {k for k in env if k.startswith("STREAMPROC_")} <= KNOWN_VARIABLES
        settings = Settings.from_env({**env_example(), **env})  # raises ConfigError if invalid
        assert settings.kafka_bootstrap == "kafka:9092", name
        assert settings.redis_host_port == ("redis", 6379), name


def test_env_example_mentions_every_setting() -> None:
    """A new setting gets a line (or at least a word) in .env.example, like in the README."""
    mentioned = set(SETTING_NAME.findall(ENV_EXAMPLE.read_text()))
    assert mentioned >= KNOWN_VARIABLES, sorted(KNOWN_VARIABLES - mentioned)


def test_env_example_matches_the_compose_defaults() -> None:
    """Copying .env.example to .env changes nothing; every compose variable is documented."""
    example = env_example()
    text = COMPOSE.read_text()
    referenced = {m["name"]: m["arg"] for m in VARIABLE.finditer(text)}
    for name, default in referenced.items():
        assert name in example, f"${{{name}}} is not documented in .env.example"
        if default is not None:
            assert example[name] == default, f"{name}: .env.example {example[name]!r}, " \
                                             f"compose default {default!r}"
    for name in example:
        assert name.startswith("STREAMPROC_") or name in referenced, \
            f".env.example sets {name}, which docker-compose.yml does not use"
    assert {"STREAMPROC_KAFKA_BOOTSTRAP", "STREAMPROC_REDIS_URL"} <= set(example)
    Settings.from_env({k: v for k, v in example.items() if k.startswith("STREAMPROC_")})


# --- deploy/Dockerfile and .dockerignore -------------------------------------------------------

def test_dockerfile_runtime_stage() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 1
    final = stages[-1]
    preamble_args = {k: v for stage in stages for k, v in docker_args(stage).items()}
    for stage in stages:
        base = expand_args(next(rest for i, rest in stage if i == "FROM"), preamble_args)
        assert base.split()[0].startswith("python:3.11-slim"), base
    args = {**preamble_args, **docker_args(final)}
    users = [expand_args(rest, args) for i, rest in final if i == "USER"]
    assert users, "the image must not run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    entrypoint = [rest for i, rest in final if i == "ENTRYPOINT"]
    cmd = [rest for i, rest in final if i == "CMD"]
    assert entrypoint and yaml.safe_load(entrypoint[-1]) == ["streamproc"]
    assert cmd and yaml.safe_load(cmd[-1]) == ["worker"]
    build_parser().parse_args(yaml.safe_load(cmd[-1]))
    env = " ".join(rest for i, rest in final if i == "ENV")
    for expected in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1",
                     "STREAMPROC_STACK_DIR=/tmp/streamproc"):
        assert expected in env


def test_dockerfile_installs_from_the_lock_without_dependencies() -> None:
    runs = [rest for stage in dockerfile_stages() for i, rest in stage if i == "RUN"]
    copies = [rest for stage in dockerfile_stages() for i, rest in stage if i == "COPY"]
    assert any(c.split()[0] == "deploy/requirements.lock" for c in copies)
    installs = [r for r in runs if "pip install" in r]
    from_lock = [r for r in installs if re.search(r"-r \S*requirements\.lock", r)]
    assert from_lock, "the dependencies must come from deploy/requirements.lock"
    for run in installs:
        for command in re.split(r"&&|;", run):
            if "pip install" in command:
                assert "--no-deps" in command, f"unpinned dependencies could slip in: {command}"


def test_dockerfile_build_backend_is_pinned_and_in_range() -> None:
    pins = lock_pins(BUILD_LOCK)
    for requirement in map(Requirement, pyproject()["build-system"]["requires"]):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in {BUILD_LOCK.name}"
        assert requirement.specifier.contains(pins[name][1])


def test_dockerfile_installs_both_locks_with_their_hashes() -> None:
    """--require-hashes: pip refuses a file whose sha256 is not in the lock (an altered
    upload, a mirror serving something else) and a requirement without a hash."""
    runs = [rest for stage in dockerfile_stages() for i, rest in stage if i == "RUN"]
    copies = " ".join(rest for stage in dockerfile_stages() for i, rest in stage if i == "COPY")
    installs = [command for run in runs for command in re.split(r"&&|;", run)
                if "pip install" in command and re.search(r"-r \S*\.lock", command)]
    for lock in (LOCK, BUILD_LOCK):
        assert f"deploy/{lock.name}" in copies, f"{lock.name} is not copied into the image"
        using = [c for c in installs if re.search(rf"-r \S*/{re.escape(lock.name)}\b", c)]
        assert using, f"nothing is installed from {lock.name}"
        for command in using:
            assert "--require-hashes" in command, f"not checked against its hashes: {command}"


PINNED = re.compile(r"[a-z0-9./_-]+:[A-Za-z0-9._-]+@sha256:[0-9a-f]{64}")


def pulled_images() -> dict[str, str]:
    """Every image a `docker build` of deploy/Dockerfile or a `docker compose up` pulls, by
    where it is named: FROM lines (stage names aside), a `# syntax=` frontend, compose's
    images other than our own build."""
    found = {}
    stages = dockerfile_stages()
    args = {k: v for stage in stages for k, v in docker_args(stage).items()}
    names: set[str] = set()
    for n, stage in enumerate(stages):
        base, *rest = expand_args(next(r for i, r in stage if i == "FROM"), args).split()
        if base not in names:
            found[f"deploy/Dockerfile stage {n + 1}"] = base
        if len(rest) == 2 and rest[0].upper() == "AS":
            names.add(rest[1])
    syntax = re.match(r"#\s*syntax\s*=\s*(\S+)", DOCKERFILE.read_text())
    if syntax:
        found["deploy/Dockerfile # syntax="] = syntax[1]
    for name, service in services().items():
        if not uses_our_image(service):
            found[f"docker-compose.yml {name}"] = service["image"]
    return found


def test_every_pulled_image_is_pinned_by_digest() -> None:
    """A tag moves (python:3.11-slim-bookworm is rebuilt for every Debian or Python fix, and
    anyone who can push to it can change it); a digest is the content. deploy/pin-images.sh
    writes the digests, with registry access."""
    images = pulled_images()
    assert {"deploy/Dockerfile stage 1", "docker-compose.yml kafka",
            "docker-compose.yml redis"} <= set(images)
    for where, reference in images.items():
        assert PINNED.fullmatch(reference), \
            f"{where}: {reference} is not pinned as name:tag@sha256:<digest> (deploy/pin-images.sh)"


def test_build_context_holds_what_the_image_needs_and_nothing_private() -> None:
    sources = []
    for stage in dockerfile_stages():
        for instruction, rest in stage:
            if instruction == "COPY" and not rest.startswith("--from"):
                sources += [w for w in rest.split()[:-1] if not w.startswith("--")]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not dockerignore_excludes(source.rstrip("/")), f".dockerignore drops {source}"
    # the wheel build: the readme and the schemas shipped as streamproc/_schemas
    for needed in ("pyproject.toml", "README.md", "schemas/decision.schema.json",
                   "streamproc/cli/",
                   f"streamproc/stack/kafka-{jars.KAFKA_VERSION}.lock"):
        assert not dockerignore_excludes(needed), needed
    for private in (".venv/bin/python", ".stack/kafka/server.properties", ".env", ".git/config",
                    "tests/unit/test_compose.py", "streamproc/__pycache__/cli.cpython-311.pyc"):
        assert dockerignore_excludes(private), private


# --- deploy/requirements.lock ----------------------------------------------------------------

def test_lock_satisfies_pyproject() -> None:
    pins = lock_pins()
    for text in pyproject()["project"]["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned"
        assert requirement.specifier.contains(pins[name][1], prereleases=True), \
            f"{pins[name][0]}=={pins[name][1]} is outside pyproject's {text!r}"


def installed_version(name: str) -> Version | None:
    try:
        return Version(metadata.version(name))
    except metadata.PackageNotFoundError:
        return None


def test_lock_is_the_complete_runtime_closure() -> None:
    """Read from the metadata of the installed distributions. What a package requires is known
    exactly only for the version installed here, so when .venv has drifted from the lock (a
    fresh `pip install -e .` resolves the newest versions) only the agreeing parts are checked;
    `pip check` in the image build checks the rest."""
    pins = lock_pins()
    runtime: set[str] = set()
    for requirement, parent in requirement_closure(pyproject()["project"]["dependencies"]):
        name = canonicalize_name(requirement.name)
        runtime.add(name)
        locked = pins.get(parent, ("", None))[1]
        if parent != "pyproject.toml" and installed_version(parent) != locked:
            continue
        assert name in pins, f"{requirement.name} (needed by {parent}) is not pinned"
        assert requirement.specifier.contains(pins[name][1], prereleases=True), \
            f"{parent} needs {requirement}, the lock has {pins[name][1]}"
    if all(installed_version(name) == version for name, (_, version) in pins.items()):
        extra = set(pins) - runtime
        assert not extra, f"not needed at run time (test tools?): {sorted(extra)}"


def test_lock_has_no_test_tools() -> None:
    pins = lock_pins()
    for text in pyproject()["project"]["optional-dependencies"]["test"]:
        assert canonicalize_name(Requirement(text).name) not in pins, text


def hash_problems(lock: Path) -> list[str]:
    """What stops pip's --require-hashes on ``lock``: a requirement without a sha256, or with
    one that is malformed or given twice."""
    problems = []
    for name, (_, version, options) in lock_entries(lock).items():
        hashes = [o for o in options if o.startswith("--hash=")]
        if not hashes:
            problems.append(f"{name}=={version} has no --hash")
        problems += [f"{name}: not a sha256 hash: {o!r}" for o in options if not HASH.fullmatch(o)]
        if len(set(hashes)) != len(hashes):
            problems.append(f"{name}: a hash given twice")
    return problems


@pytest.mark.parametrize("lock", [LOCK, BUILD_LOCK], ids=lambda p: p.name)
def test_lock_has_a_sha256_for_every_requirement(lock: Path) -> None:
    """deploy/lock.sh (pip-compile --generate-hashes) writes a hash of every file PyPI has for
    each pinned version; a line edited by hand without one makes the image build fail."""
    assert lock_entries(lock)
    assert hash_problems(lock) == []


def test_a_requirement_without_its_hash_is_found(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    good = "--hash=sha256:" + "ab" * 32
    lock.write_text(f"six==1.17.0 \\\n    {good}\n    # via x\n"
                    "orjson==3.13.0\n    # via y\n"
                    f"numpy==2.4.6 --hash=sha256:abc {good} {good}\n")
    assert hash_problems(lock) == ["orjson==3.13.0 has no --hash",
                                   "numpy: not a sha256 hash: '--hash=sha256:abc'",
                                   "numpy: a hash given twice"]


# --- the worker's web server and healthcheck ---------------------------------------------------

def test_worker_serves_its_endpoints_on_the_compose_network() -> None:
    worker = services()["worker"]
    env = {k: str(v) for k, v in worker["environment"].items()}
    settings = Settings.from_env({**env_example(), **env})
    assert (settings.web_host, settings.web_port) == ("0.0.0.0", 6066)
    assert settings.kafka_bootstrap == "kafka:9092", "the worker keeps the shared environment"
    test = worker["healthcheck"]["test"]
    assert test[0] == "CMD" and f"127.0.0.1:{settings.web_port}/readyz" in test[-1]
    # Only the worker serves HTTP: the simulator and the CLI have no web server.
    for name in ("simulator", "cli"):
        assert "STREAMPROC_WEB_PORT" not in services()[name]["environment"]


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1)])
def test_worker_healthcheck_command_fails_when_not_ready(status: int, exit_code: int) -> None:
    """The healthcheck's own command, run against a server answering /readyz like a worker."""
    import http.server
    import subprocess
    import sys
    import threading

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/readyz" else 404)
            self.end_headers()
            self.wfile.write(b'{"ready": false, "reasons": ["rebalancing"]}')

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        test = services()["worker"]["healthcheck"]["test"]
        assert test[1] == "python"
        code = test[-1].replace(":6066/", f":{server.server_port}/")
        done = subprocess.run([sys.executable, *test[2:-1], code], capture_output=True,
                              timeout=30)
        assert done.returncode == exit_code, done.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_the_redis_cluster_profile_makes_three_primaries_with_a_replica_each() -> None:
    cluster = {name: s for name, s in services().items()
               if "redis-cluster" in s.get("profiles", [])}
    nodes = {name: s for name, s in cluster.items() if name != "redis-cluster-create"}
    assert sorted(nodes) == [f"redis-cluster-{n}" for n in range(1, 7)]
    single = services()["redis"]["image"]
    for name, node in nodes.items():
        assert node["image"] == single, name  # the official image, pinned like `redis`
        command = node["command"]
        assert command[command.index("--cluster-enabled") + 1] == "yes", name
        assert "healthcheck" in node and not node.get("ports"), name
        assert node["volumes"] == [f"{name}:/data"]  # each node its own data
    create = cluster["redis-cluster-create"]
    assert create["image"] == single and create["restart"] == "no"
    assert set(create["depends_on"]) == set(nodes)
    script = create["command"][0].replace("$$", "$")
    assert "--cluster create" in script and "--cluster-replicas 1" in script
    assert "--cluster-yes" in script and "for n in 1 2 3 4 5 6" in script
    subprocess.run(["sh", "-n", "-c", script], check=True)  # valid shell
    # The URL the comment tells users to set is a valid cluster setting naming the nodes.
    url = re.search(r"STREAMPROC_REDIS_URL=(redis\+cluster://\S+)", COMPOSE.read_text())
    assert url is not None
    settings = Settings(redis_url=url[1])
    assert settings.redis_is_cluster
    assert {h for h, _ in cluster_nodes(settings.redis_url)} <= set(nodes)
