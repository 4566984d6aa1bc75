"""The Helm chart (deploy/helm/streamproc), checked offline: `helm lint`, `helm template` piped
to `kubeconform -strict` against the Kubernetes JSON schemas of the kubernetes-validate package,
then what the schemas cannot know: probes on the endpoints each process serves, the grace
period against the worker's stop, settings that exist, secrets only as references, the image
pinned by digest, the KEDA scaler aimed at the workers' consumer group."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streamproc.cli import build_parser
from streamproc.settings import KNOWN_VARIABLES, SECRET_FILES

from .ops_tools import ROOT, run_tool

CHART = ROOT / "deploy" / "helm" / "streamproc"
CI_VALUES = CHART / "ci" / "test-values.yaml"
KUBERNETES_VERSION = "1.33.0"  # the oldest release still supported upstream when written
SCHEMAS = (Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
           / f"v{KUBERNETES_VERSION}-local-strict")
PINNED = re.compile(r"[a-z0-9./_-]+:[A-Za-z0-9._-]+@sha256:[0-9a-f]{64}")


def helm_template(*args: str) -> tuple[int, str, str]:
    done = run_tool("helm", "template", "sp", str(CHART), *args)
    return done.returncode, done.stdout, done.stderr


@cache
def rendered(values: Path = CI_VALUES) -> tuple[str, tuple[dict[str, Any], ...]]:
    code, out, err = helm_template("-f", str(values))
    assert code == 0, err
    return out, tuple(d for d in yaml.safe_load_all(out) if d)


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in rendered()[1] if d["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (found,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(found, dict)
    return found


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", [])}


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kubernetes-validate's strict schemas, their references made file URLs: the package
    refers to its definitions as ``/api/_definitions.json``, which its own validator resolves
    and kubeconform (resolving against each schema's https ``$id``) cannot."""
    into = tmp_path_factory.mktemp("schemas") / SCHEMAS.name
    into.mkdir()
    definitions = (into / "_definitions.json").as_uri()
    for schema in SCHEMAS.glob("*.json"):
        text = schema.read_text().replace('"/api/_definitions.json#', f'"{definitions}#')
        (into / schema.name).write_text(text)
    return into


def kubeconform(schemas: Path, manifests: str) -> tuple[int, str]:
    done = run_tool("kubeconform", "-strict", "-summary", "-output", "text",
                    "-kubernetes-version", KUBERNETES_VERSION,
                    "-schema-location", str(schemas.parent) + "/{{ .NormalizedKubernetesVersion "
                    "}}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json",
                    # KEDA's CRD has no schema in the package: checked below instead.
                    "-skip", "ScaledObject", stdin=manifests)
    return done.returncode, done.stdout + done.stderr


# --- helm and kubeconform ---------------------------------------------------------------------

def test_helm_lint_passes() -> None:
    done = run_tool("helm", "lint", "--strict", str(CHART), "-f", str(CI_VALUES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rendered_manifests_are_valid_kubernetes_objects(schemas: Path) -> None:
    manifests, docs = rendered()
    code, out = kubeconform(schemas, manifests)
    assert code == 0, out
    validated = len([d for d in docs if d["kind"] != "ScaledObject"])
    assert f"Valid: {validated}, Invalid: 0, Errors: 0" in out, out
    assert validated == 7  # the ConfigMap, 3 Deployments, the Service, 2 PDBs


def test_kubeconform_catches_a_field_the_schema_does_not_have(schemas: Path) -> None:
    """The check can fail: a misspelt field (strict: no additional properties), a wrong type."""
    manifests, _ = rendered()
    code, out = kubeconform(schemas, manifests.replace("terminationGracePeriodSeconds:",
                                                       "terminationGracePeriod:", 1))
    assert code != 0 and "terminationGracePeriod" in out, out
    code, out = kubeconform(schemas, manifests.replace("maxUnavailable: 1",
                                                       "maxUnavailable: [1]", 1))
    assert code != 0, out


def test_every_template_renders_with_the_optional_parts_off(tmp_path: Path,
                                                           schemas: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({
        "image": {"digest": "sha256:" + "1" * 64}, "keda": {"enabled": False},
        "learner": {"enabled": False}, "api": {"enabled": False},
        "worker": {"pdb": {"enabled": False}}}))
    code, out, err = helm_template("-f", str(values))
    assert code == 0, err
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(out) if d)
    assert kinds == ["ConfigMap", "Deployment"]
    (worker,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment"]
    assert worker["spec"]["replicas"] == 3  # without KEDA, the chart sets them
    assert "STREAMPROC_LEARNER" not in env_of(container(worker))  # the workers learn
    assert kubeconform(schemas, out)[0] == 0


# --- what the schemas do not know -------------------------------------------------------------

def test_rendering_refuses_an_image_without_a_digest() -> None:
    code, _, err = helm_template()
    assert code != 0 and "image.digest is required" in err, err
    code, _, err = helm_template("-f", str(CI_VALUES), "--set", "image.digest=latest")
    assert code != 0 and "sha256:<64 hex digits>" in err, err


def test_every_image_is_pinned_by_digest() -> None:
    for name, d in objects("Deployment").items():
        for c in d["spec"]["template"]["spec"]["containers"]:
            assert PINNED.fullmatch(c["image"]), (name, c["image"])


def test_each_process_runs_a_command_the_cli_accepts() -> None:
    parser = build_parser()
    commands = {}
    for name, d in objects("Deployment").items():
        args = container(d)["args"]
        parser.parse_args(args)  # exits (fails the test) on an unknown command
        commands[name] = args[0]
    assert commands == {"sp-streamproc-worker": "worker", "sp-streamproc-learner": "learner",
                        "sp-streamproc-api": "serve"}


def test_probes_ask_the_endpoints_each_process_serves() -> None:
    deployments = objects("Deployment")
    worker = container(deployments["sp-streamproc-worker"])
    port = {p["name"]: p["containerPort"] for p in worker["ports"]}["web"]
    assert env_of(worker)["STREAMPROC_WEB_PORT"] == str(port)
    assert env_of(worker)["STREAMPROC_WEB_HOST"] == "0.0.0.0"
    assert worker["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "web"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "web"}
    assert worker["startupProbe"]["httpGet"]["path"] == "/livez"

    learner = container(deployments["sp-streamproc-learner"])
    port = {p["name"]: p["containerPort"] for p in learner["ports"]}["web"]
    assert env_of(learner)["STREAMPROC_LEARNER_WEB_PORT"] == str(port)
    assert learner["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "web"}
    assert "readinessProbe" not in learner  # it serves no /readyz: it takes no traffic

    api = container(deployments["sp-streamproc-api"])
    port = {p["name"]: p["containerPort"] for p in api["ports"]}["http"]
    assert env_of(api)["STREAMPROC_API_PORT"] == str(port)
    assert env_of(api)["STREAMPROC_API_HOST"] == "0.0.0.0"
    assert api["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    service = objects("Service")["sp-streamproc-api"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_the_learner_is_one_replica_replaced_not_rolled() -> None:
    learner = objects("Deployment")["sp-streamproc-learner"]
    assert learner["spec"]["replicas"] == 1
    assert learner["spec"]["strategy"] == {"type": "Recreate"}
    worker = container(objects("Deployment")["sp-streamproc-worker"])
    assert env_of(worker)["STREAMPROC_LEARNER"] == "off"


def test_the_grace_period_covers_the_workers_stop() -> None:
    """The worker's own stop waits at most mode's Service.shutdown_timeout (60 s) and
    docker-compose.yml gives it 30 s: Kubernetes must not SIGKILL it sooner."""
    from mode.services import Service

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    compose_grace = int(compose["services"]["worker"]["stop_grace_period"].rstrip("s"))
    worker = objects("Deployment")["sp-streamproc-worker"]["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] >= Service.shutdown_timeout >= compose_grace
    learner = objects("Deployment")["sp-streamproc-learner"]["spec"]["template"]["spec"]
    learner_compose = int(compose["services"]["learner"]["stop_grace_period"].rstrip("s"))
    assert learner["terminationGracePeriodSeconds"] >= learner_compose


def test_disruption_budgets_select_their_pods() -> None:
    deployments = objects("Deployment")
    budgets = objects("PodDisruptionBudget")
    assert set(budgets) == {"sp-streamproc-worker", "sp-streamproc-api"}
    for name, budget in budgets.items():
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        selector = budget["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items(), name
        assert selector == deployments[name]["spec"]["selector"]["matchLabels"]
    assert budgets["sp-streamproc-worker"]["spec"]["maxUnavailable"] == 1


def test_settings_exist_and_secrets_are_only_referenced() -> None:
    (config,) = objects("ConfigMap").values()
    assert set(config["data"]) <= KNOWN_VARIABLES, sorted(set(config["data"]) - KNOWN_VARIABLES)
    assert not objects("Secret")  # the chart never carries a secret's value
    for name, d in objects("Deployment").items():
        spec = d["spec"]["template"]["spec"]
        c = container(d)
        env = env_of(c)
        assert set(env) <= KNOWN_VARIABLES, (name, sorted(set(env) - KNOWN_VARIABLES))
        assert c["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
        (secrets,) = [v for v in spec["volumes"] if v["name"] == "secrets"]
        # Files owned by root, group fsGroup: readable by the image's user through its group.
        assert secrets["secret"]["defaultMode"] == 0o440
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]
        mount = next(m for m in c["volumeMounts"] if m["name"] == "secrets")["mountPath"]
        files = {f"{mount}/{item['path']}" for item in secrets["secret"]["items"]}
        named = {k: v for k, v in env.items() if k.endswith("_FILE")}
        assert {k.removeprefix("STREAMPROC_").removesuffix("_FILE") for k in named} \
            <= set(SECRET_FILES)
        assert set(named.values()) == files, name
        assert "STREAMPROC_MODEL_SECRET_FILE" in named and "STREAMPROC_REDIS_URL_FILE" in named
    api_env = env_of(container(objects("Deployment")["sp-streamproc-api"]))
    assert {"STREAMPROC_API_KEYS_FILE", "STREAMPROC_API_ADMIN_TOKEN_FILE"} <= set(api_env)


@pytest.mark.parametrize(("setting", "message"), [
    ("settings.MODEL_SECRET=x", "is a secret"),
    ("settings.STREAMPROC_PARTITIONS=12", "without the STREAMPROC_ prefix"),
    ("keda.maxReplicas=13", "more than the partitions"),
])
def test_rendering_refuses_values_that_would_go_wrong(setting: str, message: str) -> None:
    code, _, err = helm_template("-f", str(CI_VALUES), "--set", setting)
    assert code != 0 and message in err, err


def test_keda_scales_the_workers_on_their_consumer_groups_lag() -> None:
    (scaled,) = objects("ScaledObject").values()
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"name": "sp-streamproc-worker"}
    assert "replicas" not in objects("Deployment")["sp-streamproc-worker"]["spec"]
    (config,) = objects("ConfigMap").values()
    partitions = int(config["data"]["STREAMPROC_PARTITIONS"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    # KEDA's Kafka scaler reads every metadata value as a string.
    assert all(isinstance(v, str) for v in meta.values()), meta
    assert meta["bootstrapServers"] == config["data"]["STREAMPROC_KAFKA_BOOTSTRAP"]
    assert meta["consumerGroup"] == config["data"].get("STREAMPROC_APP_ID", "streamproc")
    assert meta["topic"] == "streamproc.browsing" and int(meta["lagThreshold"]) > 0
    assert trigger["authenticationRef"] == {"name": "streamproc-kafka"}
