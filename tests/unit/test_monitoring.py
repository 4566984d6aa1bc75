"""What operators watch, checked offline: the Prometheus alert rules (`promtool check rules`,
and `promtool test rules` proving each alert fires when it should and not otherwise), the
scrape configuration, the Grafana dashboard and its provisioning, the `monitoring` compose
profile, and that every metric they name is one streamproc exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from streamproc.api.exposures import Exposures
from streamproc.events.codec import RawMessage
from streamproc.learning.learner import Learner
from streamproc.processor import BatchResult
from streamproc.settings import Settings
from streamproc.worker.metrics import LearnerMetrics, WorkerMetrics

from .ops_tools import ROOT, run_tool

PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "streamproc.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
COMPOSE = ROOT / "docker-compose.yml"
METRIC = re.compile(r"\bstreamproc_[a-z0-9_]+")
# Prometheus's own series, not streamproc's.
PROMETHEUS_OWN = {"up"}


def exported() -> set[str]:
    """Every sample name the worker, the learner process and the API expose, each family with
    at least one sample (histogram buckets, sums and counts, counters' _total)."""
    class Scorer:
        version, created_ms = 3, 1_700_000_000_000

        class model:
            @staticmethod
            def stats() -> dict[str, float]:
                return {"auc": 0.7, "logloss": 0.5, "n": 10, "drifts": 0}

    worker = WorkerMetrics(scorer=lambda: Scorer(), learner_lag=lambda: 5)
    worker.on_published([RawMessage("t.browsing", 0, 1, b"c", b"{}", 1_000)], BatchResult(
        decisions=[(b"c", b'{"action": {"id": "a"}, "experiment": null, "trigger": '
                    b'{"topic": "t.browsing", "partition": 0, "offset": 1}}')],
        deadletters=[(b"c", b'{"reason": "invalid_json"}')]), seconds=0.01, now_ms=2_000)
    worker.set_lag({("t.browsing", 0): 4})
    worker.batches_behind.inc()
    worker.redis_round_trips.labels("load").inc()
    worker.redis_errors.labels("load", "ConnectionError").inc()
    worker.retries.inc()
    learner = Learner(Settings())
    learner.active, learner.position, learner.topic_end, learner.version = True, 1, 2, 1
    api = Exposures()
    api.answered("none")
    texts = [worker.render(), LearnerMetrics(lambda: learner).render(), api.render()]
    return {line.split("{")[0].split(" ")[0] for text in texts
            for line in text.decode().splitlines() if line and not line.startswith("#")}


def named_in(text: str) -> set[str]:
    return set(METRIC.findall(text))


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def expressions() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


# --- promtool ---------------------------------------------------------------------------------

def test_promtool_accepts_the_alert_rules() -> None:
    done = run_tool("promtool", "check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"SUCCESS: \d+ rules found", done.stdout), done.stdout


def test_each_alert_fires_when_it_should_and_only_then() -> None:
    done = run_tool("promtool", "test", "rules", "alerts-test.yml", cwd=PROMETHEUS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout, done.stdout


def test_promtool_notices_a_broken_rule(tmp_path: Path) -> None:
    """The check can fail: an expression that does not parse."""
    broken = tmp_path / "alerts.yml"
    broken.write_text(ALERTS.read_text().replace("> 10000", "> > 10000", 1))
    done = run_tool("promtool", "check", "rules", str(broken))
    assert done.returncode != 0, done.stdout


def test_promtool_accepts_the_scrape_configuration() -> None:
    # --syntax-only: the rule file and the token are where the container mounts them.
    done = run_tool("promtool", "check", "config", "--syntax-only",
                    str(PROMETHEUS / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_alerts_cover_lag_dead_letters_and_a_stalled_learner() -> None:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    by_name = {r["alert"]: r["expr"] for r in rules}
    assert "streamproc_consumer_lag" in by_name["StreamprocConsumerLagHigh"]
    assert "streamproc_deadletters_total" in by_name["StreamprocDeadLetterRateHigh"]
    assert "streamproc_learner_position" in by_name["StreamprocLearnerStalled"]
    tested = yaml.safe_load((PROMETHEUS / "alerts-test.yml").read_text())
    fired = {t["alertname"] for test in tested["tests"] for t in test["alert_rule_test"]
             if t["exp_alerts"]}
    assert fired >= {"StreamprocConsumerLagHigh", "StreamprocDeadLetterRateHigh",
                     "StreamprocLearnerStalled", "StreamprocLearnerBehind",
                     "StreamprocNoLearner", "StreamprocRedisErrors", "StreamprocModelStale"}


# --- the metrics named are the ones exported ---------------------------------------------------

def test_every_metric_the_rules_and_dashboard_name_is_exported() -> None:
    names = exported()
    assert "streamproc_model_version" in names and "streamproc_learner_position" in names
    used = named_in(ALERTS.read_text()) | {m for e in expressions() for m in named_in(e)}
    assert used, "no metric found"
    assert used <= names, sorted(used - names)
    built_in = {m for e in expressions() for m in re.findall(r"\b(up)\{", e)}
    assert built_in <= PROMETHEUS_OWN


def test_a_misspelt_metric_would_be_caught() -> None:
    assert "streamproc_deadletter_total" not in exported()
    assert "streamproc_deadletters_total" in exported()


# --- the dashboard ----------------------------------------------------------------------------

def test_the_dashboard_shows_what_operators_watch() -> None:
    board = dashboard()
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    wanted = {  # panel title -> a metric it must query
        "Events/s": "streamproc_events_total",
        "Consumer lag per partition": "streamproc_consumer_lag",
        "Batch latency": "streamproc_batch_seconds_bucket",
        "Dead letters by reason": "streamproc_deadletters_total",
        "Redis round trips": "streamproc_redis_round_trips_total",
        "Learner lag": "streamproc_learner_lag",
        "Model versions": "streamproc_model_version",
    }
    by_title = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels}
    for title, metric in wanted.items():
        assert metric in named_in(by_title[title]), title
    assert "partition" in by_title["Consumer lag per partition"]
    assert "reason" in by_title["Dead letters by reason"]


def test_the_dashboard_uses_the_provisioned_datasource() -> None:
    (source,) = yaml.safe_load(
        (PROVISIONING / "datasources" / "prometheus.yml").read_text())["datasources"]
    for p in dashboard()["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": source["uid"]}, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == source["uid"]
    (provider,) = yaml.safe_load(
        (PROVISIONING / "dashboards" / "streamproc.yml").read_text())["providers"]
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    mounted = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith(".")}
    dashboards_dir = provider["options"]["path"]
    (board,) = [src for dst, src in mounted.items() if dst.startswith(dashboards_dir + "/")]
    assert (ROOT / board).resolve() == DASHBOARD
    assert (ROOT / mounted["/etc/grafana/provisioning"]).resolve() == PROVISIONING


# --- the compose profile ------------------------------------------------------------------------

def test_the_monitoring_profile_scrapes_every_process_where_it_listens() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    assert (ROOT / mounts["/etc/prometheus"]).resolve() == PROMETHEUS
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/" + ALERTS.name]
    ports = {}
    for job in config["scrape_configs"]:
        (sd,) = job["dns_sd_configs"]
        (service,) = sd["names"]
        ports[service] = sd["port"]
    env = {name: services[name]["environment"] for name in ("worker", "learner", "api")}
    assert ports == {"worker": int(env["worker"]["STREAMPROC_WEB_PORT"]),
                     "learner": int(env["learner"]["STREAMPROC_LEARNER_WEB_PORT"]),
                     "api": int(env["api"]["STREAMPROC_API_PORT"])}
    assert all(e["STREAMPROC_WEB_HOST" if n != "api" else "STREAMPROC_API_HOST"] == "0.0.0.0"
               for n, e in env.items())
    # The API's /metrics wants the admin token: the scrape sends it from the compose secret.
    (api_job,) = [j for j in config["scrape_configs"] if j["job_name"] == "streamproc-api"]
    secret = api_job["authorization"]["credentials_file"].rsplit("/", 1)[1]
    assert secret in services["prometheus"]["secrets"]
    assert yaml.safe_load(COMPOSE.read_text())["secrets"][secret] == {
        "environment": "STREAMPROC_API_ADMIN_TOKEN"}
