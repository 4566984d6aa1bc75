"""The README stays true: its examples validate and its settings table matches the code."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from streamproc.events.schemas import load_decision_validator, load_event_schemas
from streamproc.settings import SETTING_DOCS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def json_blocks() -> list[dict]:
    return [orjson.loads(b) for b in re.findall(r"```json\n(.*?)\n```", README, re.S)]


def test_readme_shows_one_valid_example_of_every_event_type():
    schemas = load_event_schemas()
    shown = {}
    for block in json_blocks():
        if "decision_id" in block and "trigger" in block:
            continue
        schemas[block["type"]].validate(block)
        shown[block["type"]] = block
    assert set(shown) == set(schemas)


def test_readme_decision_example_is_valid():
    decisions = [b for b in json_blocks() if "trigger" in b]
    assert len(decisions) == 1
    load_decision_validator()(decisions[0])


def test_readme_lists_every_setting():
    for name, default, _ in SETTING_DOCS:
        if name.startswith("TOPIC_") and name != "TOPIC_PREFIX":
            continue  # shown as one row: STREAMPROC_TOPIC_BROWSING ... _DEADLETTER
        shown = f"`{default}`" if default else "(none)"
        assert f"`STREAMPROC_{name}` | {shown}" in README, name
