"""Place a checker's problem in the file: the line it is on and the id of the item it is in.

The checkers (:mod:`.rulecheck`, :mod:`streamproc.decisions.catalogue`) locate a problem by its
path in the parsed document (``actions[4].when.field``). A person editing the file looks for a
line and an id, so :func:`place_problems` turns ``actions[4].kind: ...`` into
``line 47: actions[4] (id: cart_reminder).kind: ...``. Lines come from YAML's node marks
(``yaml.compose``), which also read JSON; a path without a line of its own takes the line of
its nearest parent that has one.

>>> text = b"actions:\\n  - id: cart_reminder\\n    kind: mesage\\n"
>>> data = {"actions": [{"id": "cart_reminder", "kind": "mesage"}]}
>>> place_problems(["actions[0].kind: must be one of ..."], data, line_map(text), "id")
['line 3: actions[0] (id: cart_reminder).kind: must be one of ...']
"""

from __future__ import annotations

import re
from typing import Any

import yaml

# Enough for any real catalogue or rules file; YAML aliases can make a small file huge.
MAX_NODES = 100_000
_ITEM = re.compile(r"^([A-Za-z_]+)\[(\d+)\]")
_UNKNOWN_KEY = re.compile(r"unknown keys? '([^']+)'")
_PARENT = re.compile(r"(\.[^.\[]*|\[\d+\])$")


def line_map(text: bytes) -> dict[str, int]:
    """Path (``actions[4].when``) to 1-based line of every node of a YAML or JSON text;
    empty when the text does not parse."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError):
        return {}
    lines: dict[str, int] = {}
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack and len(lines) < MAX_NODES:
        node, path = stack.pop()
        if id(node) in seen:  # an alias: its first place is enough
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                lines[child] = key.start_mark.line + 1
                stack.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = f"{path}[{i}]"
                lines[child] = item.start_mark.line + 1
                stack.append((item, child))
    return lines


def _line(path: str, lines: dict[str, int]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        shorter = _PARENT.sub("", path)
        if shorter == path:
            return None
        path = shorter
    return None


def place_problem(problem: str, data: Any, lines: dict[str, int], id_key: str) -> str:
    """One problem with its line and its item's id (``id_key``: ``id``, or ``name`` for rules)."""
    path, sep, message = problem.partition(": ")
    if path == "top level":
        path = ""
    elif not sep or " " in path:  # free text keeps its form
        return problem
    located = path or "top level"
    found = _ITEM.match(path)
    if found and isinstance(data, dict):
        items = data.get(found[1])
        index = int(found[2])
        item = items[index] if isinstance(items, list) and index < len(items) else None
        ident = item.get(id_key) if isinstance(item, dict) else None
        if isinstance(ident, str) and ident:
            located = f"{found[0]} ({id_key}: {ident}){path[found.end():]}"
    line = None
    unknown = _UNKNOWN_KEY.match(message)
    if unknown:  # the line of the (first) unknown key itself
        line = lines.get(f"{path}.{unknown[1]}" if path else unknown[1])
    line = line or _line(path, lines)
    return f"{'line ' + str(line) + ': ' if line else ''}{located}: {message}"


def place_problems(problems: list[str], data: Any, lines: dict[str, int],
                   id_key: str) -> list[str]:
    out = []
    for problem in problems:
        try:
            out.append(place_problem(problem, data, lines, id_key))
        except Exception:  # placing only adds detail: never lose the problem itself
            out.append(problem)
    return out
