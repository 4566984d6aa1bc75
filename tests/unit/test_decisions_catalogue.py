"""The decision catalogue: the shipped one loads; every kind of mistake is found and located."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamproc.decisions.catalogue import (
    CatalogueFile,
    check_catalogue,
    default_catalogue_path,
    load_catalogue,
    parse_catalogue,
)
from streamproc.errors import ConfigError

SHIPPED: dict[str, Any] = yaml.safe_load(default_catalogue_path().read_text())


def edited(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(SHIPPED)
    data.update(changes)
    return data


def action(action_id: str, data: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(a for a in data["actions"] if a["id"] == action_id)
    return found


def test_the_shipped_catalogue_is_valid_and_compiles() -> None:
    cat = load_catalogue(default_catalogue_path())
    assert set(cat.slots) >= {"homepage_hero", "cart_drawer", "email", "sms", "call_centre"}
    assert {cat.slots[s].channel for s in cat.slots} >= {"web", "email", "sms", "call_centre"}
    assert [t.id for t in cat.triggers][:3] == ["slot_request", "cart_add", "purchase"]
    assert cat.caps["sms"].quiet_hours == (20 * 60, 9 * 60)
    baby = cat.actions["baby_essentials_15pct"]
    assert baby.when is not None and baby.exclude is not None
    assert cat.version.startswith("catalogue-") and cat.experiment_for("homepage_hero")


def test_json_catalogues_load_too(tmp_path: Path) -> None:
    import orjson

    path = tmp_path / "catalogue.json"
    path.write_bytes(orjson.dumps(SHIPPED))
    assert load_catalogue(path).version == load_catalogue(default_catalogue_path()).version


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d.pop("triggers"), "top level: missing 'triggers'"),
    (lambda d: d["slots"][0].update(channel="fax"), "slots[0].channel: must be one of"),
    (lambda d: d["slots"].append(dict(d["slots"][0])),
     "slots[7].id: 'homepage_hero' is already the id of slots[0]"),
    (lambda d: d["slots"][0].update(neutral="cart_reminder"),
     "slots[0].neutral: 'cart_reminder' is personalised"),
    (lambda d: d["slots"][0].update(neutral="nothing_like_it"),
     "slots[0].neutral: unknown action 'nothing_like_it'"),
    (lambda d: d["slots"][0].update(neutral="newsletter_digest"),
     "slots[0].neutral: 'newsletter_digest' does not list the slot 'homepage_hero'"),
    (lambda d: d["actions"][4].update(slots=["cart_drawer", "basket"]),
     "actions[4].slots: unknown slot 'basket'"),
    (lambda d: d["actions"][4].update(colour="red"), "actions[4]: unknown key 'colour'"),
    (lambda d: d["actions"][4]["when"].update(field="cart.valu"),
     "actions[4].when.field: unknown field cart.'valu'"),
    (lambda d: d["actions"][7]["when"]["any"][1]["count"].update(within_days=90),
     "actions[7].when.any[1].count.within_days: 90 is more than the 30 days"),
    (lambda d: d["actions"][7]["exclude"].update(op="=~"), "actions[7].exclude.op"),
    (lambda d: d["actions"][6].update(valid_from="2027-01-01", valid_until="2026-01-01"),
     "actions[6]: valid_from 2027-01-01 is not before valid_until 2026-01-01: never valid"),
    (lambda d: d["actions"][6].update(valid_until="next tuesday"),
     "actions[6].valid_until: 'next tuesday' is not an ISO 8601 date or time"),
    (lambda d: d["actions"][6].update(requires=["affinity.categories"]),
     "actions[6].requires[0]: unknown profile field 'affinity'"),
    (lambda d: d["actions"][4]["params_from"].update(total="cart.sum"),
     "actions[4].params_from.total: unknown field cart.'sum'"),
    (lambda d: d["actions"][0].update(when={"field": "cart.value", "op": "exists"}),
     "actions[0]: a neutral action is the same for everyone; remove when"),
    (lambda d: d["actions"][0].update(id="none"), "actions[0].id: 'none' is the built-in"),
    (lambda d: d["triggers"][1].update(event="cart_added"),
     "triggers[1].event: unknown event type 'cart_added'"),
    (lambda d: d["triggers"][1].pop("slots"), "triggers[1]: missing 'slots'"),
    (lambda d: d["triggers"][0].update(slots=["email"]),
     "triggers[0].slots: a slot_request names its slot itself"),
    (lambda d: d["triggers"][3]["segment_entry"].update(segment="boiling"),
     "triggers[3].segment_entry.segment: intent has no segment 'boiling'"),
    (lambda d: d["triggers"][3].update(event="purchase"),
     "triggers[3]: give exactly one of event, segment_entry or after"),
    (lambda d: d["caps"].update(fax={"per_day": 1}), "caps.fax: unknown channel"),
    (lambda d: d["caps"]["sms"].update(quiet_hours=["25:00", "09:00"]),
     "caps.sms.quiet_hours[0]: must match pattern"),
    (lambda d: d["caps"]["sms"].update(quiet_hours=["09:00", "09:00"]),
     "caps.sms.quiet_hours: start and end are both 09:00"),
    (lambda d: d["experiments"][0]["arms"][0].update(share=0.5),
     "experiments[0]: experiment hero-2026: arm shares must add up to 1 (over the non-control "
     "part), got 0.7"),
    (lambda d: d["experiments"][0].update(slots=["homepage_hero", "footer"]),
     "experiments[0].slots: unknown slot 'footer'"),
    (lambda d: d.update(context="mood"), "context: unknown segmentation 'mood'"),
])
def test_each_mistake_is_found_and_located(mutate: Any, expected: str) -> None:
    data = copy.deepcopy(SHIPPED)
    mutate(data)
    problems = check_catalogue(data)
    assert any(expected in p for p in problems), problems


def test_every_problem_is_listed_at_once_in_one_error() -> None:
    data = edited()
    data["slots"][0]["channel"] = "fax"
    action("cart_reminder", data)["when"]["field"] = "cart.valu"
    data["triggers"][1]["event"] = "cart_added"
    with pytest.raises(ConfigError) as caught:
        parse_catalogue(data, source="my.yaml")
    message = str(caught.value)
    assert message.startswith("my.yaml: 3 problems in the decision catalogue:")
    assert "slots[0].channel" in message and "actions[4].when.field" in message
    assert "triggers[1].event" in message


def test_an_empty_or_unreadable_file_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_catalogue(empty)
    with pytest.raises(ConfigError, match="cannot read the decision catalogue"):
        load_catalogue(tmp_path / "absent.yaml")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_catalogue_reloads_when_the_file_changes_and_keeps_the_last_good_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(SHIPPED))
    clock = Clock()
    watched = CatalogueFile(path, check_every_s=2.0, clock=clock)
    first = watched.current()
    assert "hot_intent_bundle" in first.actions

    trimmed = edited()
    trimmed["actions"] = [a for a in trimmed["actions"] if a["id"] != "hot_intent_bundle"]
    path.write_text(yaml.safe_dump(trimmed))
    os.utime(path, ns=(1, 1))  # a new stamp even within the file system's time resolution
    assert watched.current() is first  # not checked again before check_every_s
    clock.now = 3.0
    second = watched.current()
    assert "hot_intent_bundle" not in second.actions and watched.version == 2

    broken = edited()
    broken["slots"][0]["channel"] = "fax"
    path.write_text(yaml.safe_dump(broken))
    clock.now = 6.0
    assert watched.current() is second
    assert watched.last_error is not None
    assert "slots[0] (id: homepage_hero).channel" in watched.last_error


def test_a_broken_catalogue_stops_the_first_load(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.yaml"
    path.write_text("slots: []\nactions: []\ntriggers: []\n")
    with pytest.raises(ConfigError, match="slots: must contain at least 1 items"):
        CatalogueFile(path)


def test_the_catalogue_command_shows_a_valid_file_and_lists_the_problems_of_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from streamproc.cli import main

    assert main(["catalogue"]) == 0
    out = capsys.readouterr().out
    assert "catalogue.yaml: valid (catalogue-" in out
    assert "intent_hot           entering intent hot -> homepage_hero" in out
    broken = edited()
    broken["slots"][0]["channel"] = "fax"
    action("cart_reminder", broken)["when"]["field"] = "cart.valu"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(broken))
    assert main(["catalogue", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: 2 problems in the decision catalogue:" in out
    assert "slots[0] (id: homepage_hero).channel" in out
    assert "actions[4] (id: cart_reminder).when.field" in out


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_a_file_gets_every_problem_in_one_pass_with_ids_and_lines(tmp_path: Path) -> None:
    # Mistakes that used to surface one pass at a time: the document's unknown key hid every
    # item, and an item's first schema problem hid its others and its conditions.
    text = default_catalogue_path().read_text()
    text = text.replace("history: 6", "history: 6\nbogus: 1")
    text = text.replace("kind: message\n    title: Your basket is waiting",
                        "kind: mesage\n    titel: Your basket is waiting", 1)
    text = text.replace('when: {field: cart.value, op: ">", value: 0}\n    params_from',
                        'when: {field: cart.valu, op: ">", value: 0}\n    params_from', 1)
    path = tmp_path / "catalogue.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_catalogue(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: 4 problems in the decision catalogue:"
    assert [line.strip() for line in lines[1:]] == [
        f"line {line_of(text, 'bogus')}: top level: unknown key 'bogus'; expected context, "
        "history, slots, actions, triggers, caps, experiments, reveal_limit, "
        "allow_sensitive, sensitive",
        f"line {line_of(text, 'titel')}: actions[4] (id: cart_reminder): unknown key 'titel'; "
        "expected id, kind, title, slots, neutral, when, exclude, consent, valid_from, "
        "valid_until, freshness_hours, requires, max_data_age_hours, params, params_from, "
        "min_trust, reveals_tracking, reveal_limit",
        f"line {line_of(text, 'mesage')}: actions[4] (id: cart_reminder).kind: must be one of "
        "['offer', 'content', 'message', 'recommendation'], got 'mesage'",
        f"line {line_of(text, 'cart.valu,')}: actions[4] (id: cart_reminder).when.field: "
        "unknown field cart.'valu'; known: items, updated_ms, value",
    ]


def test_a_json_file_gets_lines_too(tmp_path: Path) -> None:
    import json

    data = edited()
    data["slots"][1]["channel"] = "fax"
    path = tmp_path / "catalogue.json"
    text = json.dumps(data, indent=1)
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_catalogue(path)
    assert (f"line {line_of(text, 'fax')}: slots[1] (id: product_recs).channel: must be one "
            "of") in str(caught.value)


def test_a_neutral_default_with_a_mistake_is_not_also_unknown() -> None:
    data = edited()
    action("free_delivery_banner", data)["kind"] = "banner"
    with pytest.raises(ConfigError) as caught:
        parse_catalogue(data)
    assert "kind: must be one of" in str(caught.value)
    assert "unknown action" not in str(caught.value)
