"""RuleFile: reload on change, keep the previous rules on an invalid version, never raise."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from streamproc.errors import ConfigError
from streamproc.segments.rulefile import RuleFile

EVENT_TYPES = {"purchase", "product_view"}


def rule_text(*names: str) -> str:
    lines = ["segments:"]
    for name in names:
        lines += [f"  - name: {name}", "    when: {field: device, op: exists}"]
    return "\n".join(lines) + "\n"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, text: str, bump_s: int = 0) -> None:
    path.write_text(text)
    if bump_s:  # a later mtime even on coarse file systems
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump_s * 1_000_000_000))


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Clock, RuleFile]:
    path = tmp_path / "rules.yaml"
    write(path, rule_text("a"))
    clock = Clock()
    return path, clock, RuleFile(path, check_every_s=2.0, clock=clock, event_types=EVENT_TYPES)


def test_first_load_raises(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, "segments: [{name: Bad}]")
    with pytest.raises(ConfigError, match=r"segments\[0\]"):
        RuleFile(path, event_types=EVENT_TYPES)
    with pytest.raises(ConfigError, match="cannot read"):
        RuleFile(tmp_path / "absent.yaml", event_types=EVENT_TYPES)


def test_reload_on_change_after_the_check_interval(setup: tuple[Path, Clock, RuleFile]) -> None:
    path, clock, rules = setup
    assert rules.current().names == ("a",) and rules.version == 1
    write(path, rule_text("a", "b"), bump_s=1)
    clock.now += 1.9
    assert rules.current().names == ("a",)  # not looked at yet
    clock.now += 0.1
    assert rules.current().names == ("a", "b")
    assert rules.version == 2 and rules.last_error is None


def test_same_size_rewrite_is_seen_by_mtime(setup: tuple[Path, Clock, RuleFile]) -> None:
    path, clock, rules = setup
    write(path, rule_text("z"), bump_s=1)  # same length as "a"
    clock.now += 2
    assert rules.current().names == ("z",)


def test_unchanged_file_is_not_reparsed(setup: tuple[Path, Clock, RuleFile],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _, clock, rules = setup
    before = rules.current()

    def fail() -> None:
        raise AssertionError("reloaded an unchanged file")

    monkeypatch.setattr(rules, "_load", fail)
    clock.now += 10
    assert rules.current() is before


def test_invalid_reload_keeps_the_previous_rules(setup: tuple[Path, Clock, RuleFile],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    path, clock, rules = setup
    before = rules.current()
    write(path, rule_text("a") + "  - name: b\n    when: {count: {event: purchase, "
                                  "within_days: 45, at_least: 1}}\n", bump_s=1)
    clock.now += 2
    with caplog.at_level(logging.ERROR):
        assert rules.current() is before
    assert rules.last_error is not None
    assert ("segments[1] (name: b).when.count.within_days: 45 is more than the 30 days"
            in rules.last_error)
    assert "keeping the previous 1 rule(s)" in caplog.text
    # reported once, not on every check
    caplog.clear()
    clock.now += 2
    with caplog.at_level(logging.ERROR):
        assert rules.current() is before
    assert caplog.text == ""
    # a fixed version loads and clears the error
    write(path, rule_text("c"), bump_s=2)
    clock.now += 2
    assert rules.current().names == ("c",)
    assert rules.last_error is None and rules.version == 2


@pytest.mark.parametrize("text", ["segments: [", "", "- 1", "\xff"])
def test_unparseable_reload_never_raises(setup: tuple[Path, Clock, RuleFile], text: str) -> None:
    path, clock, rules = setup
    if text == "\xff":
        path.write_bytes(b"\xff\xfe\x00")
    else:
        write(path, text, bump_s=1)
    clock.now += 2
    assert rules.current().names == ("a",)
    assert rules.last_error


def test_deleted_file_keeps_the_rules(setup: tuple[Path, Clock, RuleFile]) -> None:
    path, clock, rules = setup
    path.unlink()
    clock.now += 2
    assert rules.current().names == ("a",)
    assert rules.last_error is not None and "cannot read" in rules.last_error
    write(path, rule_text("d"))
    clock.now += 2
    assert rules.current().names == ("d",)
    assert rules.last_error is None


def test_activity_days_are_passed_on(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, "segments:\n  - name: a\n    when: {count: {event: purchase, within_days: 45, "
                "at_least: 1}}\n")
    assert RuleFile(path, activity_days=60, event_types=EVENT_TYPES).current().names == ("a",)


def test_rules_command_checks_a_file_as_the_worker_does(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    from streamproc.cli import main
    from streamproc.events.schemas import schema_dir

    example = schema_dir() / "examples" / "segment-rules.yaml"
    assert main(["rules", str(example)]) == 0
    out = capsys.readouterr().out
    assert f"{example}: valid, 4 custom segments" in out
    assert "cart_abandoners" in out and "Has 50 or more in the cart" in out

    text = example.read_text()
    text = text.replace("segments:\n", "version: 2\nsegments:\n", 1)
    text = text.replace("within_days: 7, at_least: 3}", "within_days: 70, at_least: 3}", 1)
    text = text.replace('{field: device, op: "==", value: mobile}',
                        '{field: devise, op: "=", value: mobile}', 1)
    text = text.replace("  - name: cart_abandoners\n    description",
                        "  - name: cart_abandoners\n    descripton", 1)
    broken = tmp_path / "rules.yaml"
    broken.write_text(text)
    assert main(["rules", str(broken)]) == 1
    out = capsys.readouterr().out
    found = [line.strip() for line in out.splitlines()[1:]]
    assert out.startswith(f"{broken}: 5 problems in the segment rules:")

    def line_of(fragment: str) -> int:
        return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)

    assert found[0] == (f"line {line_of('version')}: top level: unknown key 'version'; "
                        "expected segments, allow_sensitive, sensitive")
    assert found[1] == (f"line {line_of('within_days: 70')}: segments[0] "
                        "(name: shoe_browsers_not_buying).when.all[0].count.within_days: 70 is "
                        "more than the 30 days of activity kept")
    assert found[2].startswith(f"line {line_of('devise')}: segments[1] "
                               "(name: big_spenders_on_mobile).when.all[1].op: must be one of")
    assert found[3].startswith(f"line {line_of('devise')}: segments[1] "
                               "(name: big_spenders_on_mobile).when.all[1].field: unknown "
                               "profile field 'devise'")
    assert found[4] == (f"line {line_of('descripton')}: segments[2] (name: cart_abandoners): "
                        "unknown key 'descripton'; expected name, description, when")


def test_rules_command_without_a_file_says_what_to_give(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    from streamproc.cli import main

    monkeypatch.delenv("STREAMPROC_SEGMENT_RULES", raising=False)
    assert main(["rules"]) == 2
    assert "STREAMPROC_SEGMENT_RULES" in capsys.readouterr().err
