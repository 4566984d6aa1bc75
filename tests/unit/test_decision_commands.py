"""`streamproc evaluate` and `streamproc report` on JSON Lines files (topics: integration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from streamproc.cli import build_parser, main
from streamproc.decisions.bandit import ThompsonChooser

SECRET = "unit-test-secret-42"


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def logs(tmp_path: Path, propensity: Any = 0.5) -> tuple[Path, Path]:
    decisions, feedback = [], []
    treated = 0
    for i in range(40):
        arm = "control" if i % 4 == 0 else "bandit"
        if arm == "control":
            action = "default_content"
        else:
            action = "a" if treated % 2 else "b"
            treated += 1
        decisions.append({
            "decision_id": f"d{i}", "customer_id": f"c{i}", "slot": "hero",
            "action": {"id": action, "kind": "content"}, "personalised": arm != "control",
            "experiment": {"id": "exp", "arm": arm}, "segments": {"rfm": "new"},
            "propensity": 1.0 if arm == "control" else propensity, "policy": "thompson-v1",
        })
        if action == "a":  # "a" always converts, "b" and the neutral action never do
            feedback.append({"event_id": f"f{i}", "type": "feedback", "decision_id": f"d{i}",
                             "outcome": "conversion", "revenue": 5.0})
    return (write_jsonl(tmp_path / "decisions.jsonl", decisions),
            write_jsonl(tmp_path / "feedback.jsonl", feedback))


@pytest.mark.parametrize(("command", "option"), [("evaluate", "--decisions FILE"),
                                                 ("report", "--decisions FILE"),
                                                 ("bandit", "--snapshot FILE"),
                                                 ("respond", "--from-beginning")])
def test_help(command: str, option: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: streamproc" in out and option in out


def test_evaluate_files_for_several_candidates(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    decisions, feedback = logs(tmp_path)
    assert main(["evaluate", "--decisions", str(decisions), "--feedback", str(feedback),
                 "--candidate", "action:a", "--candidate", "uniform", "--json"]) == 0
    always_a, uniform = orjson.loads(capsys.readouterr().out)
    # 30 bandit decisions, half "a" (always converts) at propensity 0.5; 10 control left out.
    assert always_a["decisions"] == 30 and uniform["decisions"] == 30
    assert always_a["ips"]["value"] == pytest.approx(1.0)
    assert uniform["ips"]["value"] == pytest.approx(0.5)
    assert always_a["logged_policy"]["value"] == pytest.approx(0.5)
    assert always_a["excluded"] == {"control-group or neutral-policy decisions": 10}
    assert main(["evaluate", "--decisions", str(decisions), "--feedback", str(feedback)]) == 0
    assert "IPS estimate" in capsys.readouterr().out


def test_evaluate_a_bandit_snapshot_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    decisions, feedback = logs(tmp_path)
    bandit = ThompsonChooser(exploration=0.02)
    for _ in range(200):
        bandit.learn("a", "all", 1.0)
        bandit.learn("b", "all", 0.0)
    snapshot = tmp_path / "bandit.snapshot"
    snapshot.write_bytes(bandit.snapshot(SECRET.encode()))
    monkeypatch.setenv("STREAMPROC_MODEL_SECRET", SECRET)
    assert main(["evaluate", "--decisions", str(decisions), "--feedback", str(feedback),
                 "--candidate", "bandit", "--bandit-snapshot", str(snapshot), "--json"]) == 0
    [result] = orjson.loads(capsys.readouterr().out)
    assert result["candidate"] == "bandit"
    # The current STREAMPROC_BANDIT_EXPLORATION (default 0.1) applies: P(a) = 0.9 + 0.1 / 2.
    assert result["ips"]["value"] == pytest.approx(0.95, abs=0.001)
    monkeypatch.setenv("STREAMPROC_MODEL_SECRET", "a-different-secret")
    assert main(["evaluate", "--decisions", str(decisions), "--feedback", str(feedback),
                 "--candidate", "bandit", "--bandit-snapshot", str(snapshot)]) == 2
    assert "signature does not match" in capsys.readouterr().err


def test_evaluate_errors_say_what_to_do(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    decisions, feedback = logs(tmp_path, propensity=None)
    assert main(["evaluate", "--decisions", str(decisions), "--feedback", str(feedback)]) == 2
    assert "30 of 30 decisions have no usable propensity" in capsys.readouterr().err
    assert main(["evaluate", "--decisions", str(decisions), "--feedback", str(feedback),
                 "--candidate", "greedy"]) == 2
    assert "use uniform, bandit, contextual or action:ID" in capsys.readouterr().err
    assert main(["evaluate", "--decisions", str(tmp_path / "nope.jsonl"),
                 "--feedback", str(feedback)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_report_files_table_and_json(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    decisions, feedback = logs(tmp_path)
    assert main(["report", "--decisions", str(decisions), "--feedback", str(feedback),
                 "--json"]) == 0
    rows = {r["arm"]: r for r in orjson.loads(capsys.readouterr().out)["rows"]}
    assert rows["control"]["customers"] == 10 and rows["control"]["conversion"]["value"] == 0
    assert rows["bandit"]["conversion"]["value"] == pytest.approx(0.5)
    assert rows["bandit"]["revenue_per_customer"]["value"] == pytest.approx(2.5)
    # Ten customers an arm: an interval would only look precise.
    assert rows["bandit"]["uplift"] is None
    assert rows["bandit"]["status"] == "not enough data yet"
    assert main(["report", "--decisions", str(decisions), "--feedback", str(feedback),
                 "--by", "segments.rfm"]) == 0
    table = capsys.readouterr().out
    assert "exp" in table and "new" in table and "not enough data yet" in table


def test_bandit_prints_what_a_snapshot_learnt(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    bandit = ThompsonChooser()
    for reward in (1.0, 0.0, 0.0, 1.0):
        bandit.learn("cart_reminder", "cart_drawer:active", reward)
    bandit.expect("d-open", "cart_reminder", "cart_drawer:active", ts_ms=0)
    snapshot = tmp_path / "bandit.snapshot"
    snapshot.write_bytes(bandit.snapshot(SECRET.encode()))
    assert main(["bandit", "--snapshot", str(snapshot)]) == 2
    assert "STREAMPROC_MODEL_SECRET is not set" in capsys.readouterr().err
    monkeypatch.setenv("STREAMPROC_MODEL_SECRET", SECRET)
    assert main(["bandit", "--snapshot", str(snapshot)]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert shown["updates"] == 4 and shown["pending"] == 1
    assert shown["contexts"]["cart_drawer:active"]["cart_reminder"] == {"outcomes": 4.0,
                                                                         "mean": 0.5}


def test_bandit_reads_the_bandit_the_workers_serve_from_a_model_snapshot(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from streamproc.learning.scorer import ServedModels
    from streamproc.models import IntentModel, dump

    learnt = ThompsonChooser()
    for reward in (1.0, 1.0, 0.0):
        learnt.learn("cart_reminder", "cart_drawer:active", reward)
    learnt.expect("d-open", "cart_reminder", "cart_drawer:active", ts_ms=0)
    figures = {"offset": 9, "bandit_outcomes": 3, "bandit_pending": 1, "bandit_rewards": 3,
               "bandit_duplicates": 2}
    served = ServedModels(IntentModel(), figures, bandit=learnt.serving_copy())
    snapshot = tmp_path / "serving.snapshot"
    snapshot.write_bytes(dump(served, SECRET.encode(), version=12))
    monkeypatch.setenv("STREAMPROC_MODEL_SECRET", SECRET)
    assert main(["bandit", "--snapshot", str(snapshot)]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    # The served copy keeps no open expectations: the learner's count says how many there are.
    assert (shown["version"], shown["updates"], shown["pending"], shown["duplicates"]) == (
        12, 3, 1, 2)
    assert shown["contexts"]["cart_drawer:active"]["cart_reminder"]["outcomes"] == 3.0
    # A model snapshot written before the learner kept the bandit: a clear error.
    snapshot.write_bytes(dump(ServedModels(IntentModel()), SECRET.encode(), version=3))
    assert main(["bandit", "--snapshot", str(snapshot)]) == 2
    assert "the model snapshot v3 holds no bandit" in capsys.readouterr().err


def test_evaluate_says_whether_the_contextual_policy_would_have_done_better(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A logged bandit that ignored the device (each action half the time); mobile customers
    buy after "app" only, desktop ones after "web" only: learnt from the log, the contextual
    policy would have sold about twice as much, and the verdict says so."""
    decisions, feedback = [], []
    for i in range(400):
        device = "mobile" if i % 2 else "desktop"
        action = "app" if (i // 2) % 2 else "web"
        decisions.append({
            "decision_id": f"d{i}", "customer_id": f"c{i}", "slot": "hero",
            "action": {"id": action, "kind": "content"}, "personalised": True,
            "experiment": None, "propensity": 0.5, "policy": "thompson-v1",
            "candidates": ["app", "web"], "context": "hero:new",
            "features": {"bias": 1.0, f"device_{device}": 1.0}})
        if (action == "app") == (device == "mobile"):
            feedback.append({"event_id": f"f{i}", "type": "feedback", "decision_id": f"d{i}",
                             "outcome": "conversion", "revenue": 40.0 + i % 7})
    decisions.append({**decisions[0], "decision_id": "old", "features": None})
    paths = [str(write_jsonl(tmp_path / "d.jsonl", decisions)),
             str(write_jsonl(tmp_path / "f.jsonl", feedback))]
    assert main(["evaluate", "--decisions", paths[0], "--feedback", paths[1], "--candidate",
                 "contextual", "--candidate", "uniform", "--reward", "revenue", "--json"]) == 0
    contextual, uniform = orjson.loads(capsys.readouterr().out)
    assert contextual["decisions"] == uniform["decisions"] == 400  # "old" left out of both
    assert sum(contextual["excluded"].values()) == 1
    logged = contextual["logged_policy"]["value"]
    assert contextual["dr"]["value"] > 1.8 * logged
    assert contextual["gain_over_logged"]["low"] > 0 and contextual["verdict"] == "better"
    assert uniform["verdict"].startswith("cannot tell")
    assert main(["evaluate", "--decisions", paths[0], "--feedback", paths[1], "--candidate",
                 "contextual"]) == 0
    out = capsys.readouterr().out
    assert "gain over logged (DR)" in out and "would it have done better? better" in out
