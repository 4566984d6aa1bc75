"""Every Kafka client is built with the shared security options (streamproc.kafka_options), and
those options follow the STREAMPROC_KAFKA_* settings."""

from __future__ import annotations

import ast
import ssl
import subprocess
from pathlib import Path

import pytest

from streamproc.errors import ConfigError
from streamproc.kafka_options import faust_credentials, kafka_options, producer_options
from streamproc.settings import Settings, shown_values
from streamproc.worker.app import app_options

ROOT = Path(__file__).resolve().parents[2]
# examples/ is left out: standalone on purpose (aiokafka and the standard library only).
SOURCES = sorted(p for d in ("streamproc", "bench", "deploy")
                 for p in (ROOT / d).rglob("*.py"))
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient",
           "AIOKafkaConnection", "create_conn"}


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def unsecured(tree: ast.AST) -> list[str]:
    """Kafka clients in ``tree`` built without ``**kafka_options(...)``, and Faust apps built
    without the worker's ``app_options`` (which carry the credentials): ``line: call``."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        if name in CLIENTS:
            shared = any(kw.arg is None and isinstance(kw.value, ast.Call)
                         and _name(kw.value.func) in {"kafka_options", "security_options",
                                                      "producer_options"}
                         for kw in node.keywords)
            if not shared or any(kw.arg == "bootstrap_servers" for kw in node.keywords):
                found.append(f"{node.lineno}: {name}")
        elif (name == "App" and _name(getattr(node.func, "value", node.func)) == "faust"
              and not any(kw.arg is None for kw in node.keywords)):
            found.append(f"{node.lineno}: faust.App")
    return found


def weak_producers(tree: ast.AST) -> list[str]:
    """Producers in ``tree`` built without ``**producer_options(...)`` (acks=all, idempotence),
    or that override its acks or idempotence: ``line: call``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _name(node.func) == "AIOKafkaProducer":
            shared = any(kw.arg is None and isinstance(kw.value, ast.Call)
                         and _name(kw.value.func) == "producer_options" for kw in node.keywords)
            if not shared or any(kw.arg in {"acks", "enable_idempotence"}
                                 for kw in node.keywords):
                found.append(f"{node.lineno}: AIOKafkaProducer")
    return found


def test_every_producer_is_idempotent_with_acks_all() -> None:
    assert weak_producers(ast.parse("AIOKafkaProducer(**kafka_options(s), acks='all')")) == [
        "1: AIOKafkaProducer"]
    assert weak_producers(ast.parse("AIOKafkaProducer(**producer_options(s), acks=1)")) == [
        "1: AIOKafkaProducer"]
    assert weak_producers(ast.parse("AIOKafkaProducer(**producer_options(s), linger_ms=5)")
                          ) == []
    found = {str(p.relative_to(ROOT)): weak_producers(ast.parse(p.read_text())) for p in SOURCES}
    assert {path: calls for path, calls in found.items() if calls} == {}
    assert producer_options(Settings()) == {**kafka_options(Settings()), "acks": "all",
                                            "enable_idempotence": True}
    # Faust's own producer: acks from every in-sync replica (it has no idempotence setting,
    # and the worker publishes nothing through it: the emitter does).
    assert app_options(Settings())["producer_acks"] == -1


def test_the_check_finds_a_client_without_the_shared_options() -> None:
    assert unsecured(ast.parse("AIOKafkaProducer(bootstrap_servers=b, acks='all')")) == [
        "1: AIOKafkaProducer"]
    assert unsecured(ast.parse("aiokafka.AIOKafkaConsumer(**other(s))")) == [
        "1: AIOKafkaConsumer"]
    assert unsecured(ast.parse("AIOKafkaAdminClient(**kafka_options(s), bootstrap_servers=b)")
                     ) == ["1: AIOKafkaAdminClient"]
    assert unsecured(ast.parse("faust.App('x', broker='kafka://k:9092')")) == ["1: faust.App"]
    assert unsecured(ast.parse("AIOKafkaClient(**kafka_options(s), request_timeout_ms=5)")) == []


def test_every_kafka_client_uses_the_shared_options() -> None:
    found = {str(p.relative_to(ROOT)): unsecured(ast.parse(p.read_text())) for p in SOURCES}
    assert len(found) > 90  # the whole project was read
    assert {path: calls for path, calls in found.items() if calls} == {}
    # And the one Faust app's options are the worker's, credentials included.
    apps = [p for p in SOURCES if "faust.App(" in p.read_text()]
    assert apps and all("app_options(settings)" in p.read_text() for p in apps), apps


def test_plaintext_is_the_default() -> None:
    assert kafka_options(Settings()) == {"bootstrap_servers": "127.0.0.1:9092",
                                         "security_protocol": "PLAINTEXT"}
    assert "broker_credentials" not in app_options(Settings())


ALICE = {"STREAMPROC_KAFKA_SASL_USERNAME": "alice", "STREAMPROC_KAFKA_SASL_PASSWORD": "pw 1"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "scram-sha-512"])
def test_sasl_plaintext_options(mechanism: str) -> None:
    settings = Settings.from_env({"STREAMPROC_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext",
                                  "STREAMPROC_KAFKA_SASL_MECHANISM": mechanism, **ALICE})
    options = kafka_options(settings)
    assert options == {"bootstrap_servers": "127.0.0.1:9092",
                       "security_protocol": "SASL_PLAINTEXT",
                       "sasl_mechanism": mechanism.upper(), "sasl_plain_username": "alice",
                       "sasl_plain_password": "pw 1"}
    creds = app_options(settings)["broker_credentials"]
    assert (creds.protocol.value, creds.mechanism.value, creds.password) == (
        "SASL_PLAINTEXT", mechanism.upper(), "pw 1")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a client certificate signed by it, made now (nothing secret is committed)."""
    d = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out",
            "client.csr", "-subj", "/CN=client")
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "client.pem", "-days", "2")
    return d


def test_ssl_options_load_the_files(pki: Path) -> None:
    settings = Settings.from_env({
        "STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", **ALICE,
        "STREAMPROC_KAFKA_SSL_CAFILE": str(pki / "ca.pem"),
        "STREAMPROC_KAFKA_SSL_CERTFILE": str(pki / "client.pem"),
        "STREAMPROC_KAFKA_SSL_KEYFILE": str(pki / "client.key")})
    options = kafka_options(settings)
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]
    assert options["security_protocol"] == "SASL_SSL"
    creds = faust_credentials(settings)["broker_credentials"]
    assert creds.protocol.value == "SASL_SSL" and creds.ssl_context is not None
    unchecked = Settings.from_env({"STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SSL",
                                   "STREAMPROC_KAFKA_SSL_CAFILE": str(pki / "ca.pem"),
                                   "STREAMPROC_KAFKA_SSL_CHECK_HOSTNAME": "false"})
    assert kafka_options(unchecked)["ssl_context"].check_hostname is False
    assert faust_credentials(unchecked)["broker_credentials"].protocol.value == "SSL"


def test_an_unusable_tls_file_is_one_clear_error(pki: Path, tmp_path: Path) -> None:
    missing = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match=r"STREAMPROC_KAFKA_SSL_CAFILE=.*nope.pem: no such"):
        kafka_options(missing)
    swapped = Settings(kafka_security_protocol="SSL", kafka_ssl_certfile=pki / "ca.pem",
                       kafka_ssl_keyfile=pki / "client.key")  # the key is not the CA's
    with pytest.raises(ConfigError, match="cannot load the Kafka TLS files"):
        kafka_options(swapped)


@pytest.mark.parametrize(("env", "error"), [
    ({"STREAMPROC_KAFKA_SECURITY_PROTOCOL": "TLS"}, "SECURITY_PROTOCOL='TLS': use PLAINTEXT"),
    ({"STREAMPROC_KAFKA_SASL_MECHANISM": "GSSAPI"}, "SASL_MECHANISM='GSSAPI': use PLAIN"),
    ({"STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
      "STREAMPROC_KAFKA_SASL_USERNAME": "alice"}, "needs STREAMPROC_KAFKA_SASL_USERNAME and"),
    ({"STREAMPROC_KAFKA_SSL_CERTFILE": "c.pem"}, "CERTFILE and STREAMPROC_KAFKA_SSL_KEYFILE go"),
    ({"STREAMPROC_KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "expected true or false"),
])
def test_inconsistent_security_settings_are_refused(env: dict[str, str], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        Settings.from_env(env)


def test_the_passwords_are_masked_where_settings_are_shown() -> None:
    settings = Settings.from_env({"STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                                  **ALICE, "STREAMPROC_KAFKA_SSL_KEY_PASSWORD": "k3y-pw"})
    shown = {name: value for name, value, _ in shown_values(settings)}
    assert shown["STREAMPROC_KAFKA_SASL_PASSWORD"] == "(set, 4 characters)"
    assert shown["STREAMPROC_KAFKA_SSL_KEY_PASSWORD"] == "(set, 6 characters)"
    assert shown["STREAMPROC_KAFKA_SASL_USERNAME"] == "alice"
    assert shown["STREAMPROC_KAFKA_SSL_CHECK_HOSTNAME"] == "true"
    assert "pw 1" not in repr(settings) and "k3y-pw" not in repr(settings)
