"""The README and docs/ stay true: the README's examples validate and its settings table
matches the code; links and anchors between the pages resolve; docs/architecture.md's package
map names every package and module, and the imports follow its layers without a cycle."""

from __future__ import annotations

import ast
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


# --- docs/: links, anchors and the package map -----------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it.

    >>> slug("`streamproc bench`: the pipeline against its baselines")
    'streamproc-bench-the-pipeline-against-its-baselines'
    """
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading's anchor (a repeated heading gets -1, -2 ... as on GitHub); code blocks are
    not headings."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def check_target(source: Path, target: str) -> str | None:
    """What is wrong with a link from ``source`` to ``target`` (a path, maybe with #anchor)."""
    path, _, anchor = target.partition("#")
    file = (source.parent / path).resolve() if path else source
    if not file.exists():
        return f"{source.relative_to(ROOT)}: {target}: no such file"
    if anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
        return f"{source.relative_to(ROOT)}: {target}: no such heading"
    return None


def test_links_between_the_readme_and_the_docs_resolve():
    problems = []
    for source in [ROOT / "README.md", *DOCS]:
        text = re.sub(r"^```.*?^```", "", source.read_text(), flags=re.S | re.M)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            problem = check_target(source, target)
            if problem:
                problems.append(problem)
    assert problems == []


def test_docs_named_in_code_and_docs_exist():
    """A page of docs/ (with or without an anchor) named in a docstring, a help or a page."""
    problems = []
    sources = [ROOT / "README.md", *DOCS]
    for tree in ("streamproc", "bench", "tests", "deploy", "examples"):
        sources += sorted((ROOT / tree).rglob("*.py"))
    for source in sources:
        for target in re.findall(r"docs/[\w.-]+\.md(?:#[\w-]+)?", source.read_text()):
            problem = check_target(ROOT / "README.md", target)
            if problem:
                problems.append(f"{source.relative_to(ROOT)}: {target}")
    assert problems == []


def package_map() -> dict[str, str]:
    """``path -> layer`` from the package map of docs/architecture.md (``-``: outside the
    package)."""
    section = ARCHITECTURE.read_text().split("\n## Package map\n", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([^`]+)` \| *(\d+|-) *\|", section, re.M))


def test_package_map_names_every_package_and_module():
    package = ROOT / "streamproc"
    tree = {f"streamproc/{p.name}/" for p in package.iterdir() if (p / "__init__.py").exists()}
    tree |= {f"streamproc/{p.name}" for p in package.glob("*.py") if p.name != "__init__.py"}
    tree |= {f"bench/{p.name}" for p in (ROOT / "bench").glob("*.py") if p.name != "__init__.py"}
    mapped = package_map()
    assert sorted(tree - set(mapped)) == [], "add them to the package map in docs/architecture.md"
    assert [p for p in tree if p.startswith("streamproc/") and not mapped[p].isdigit()] == []


def test_package_map_names_only_what_exists():
    missing = [path for path in package_map()
               if not ((ROOT / path).is_dir() if path.endswith("/") else (ROOT / path).is_file())]
    assert missing == [], "docs/architecture.md names paths that do not exist"


def unit_of(module: str) -> str | None:
    """The package-map entry a ``streamproc.*`` module belongs to (``streamproc/state/``,
    ``streamproc/settings.py``), or None for ``streamproc`` itself and its attributes."""
    parts = module.split(".")
    if parts[0] != "streamproc" or len(parts) < 2 or parts[1] == "__init__":
        return None
    if (ROOT / "streamproc" / parts[1]).is_dir():
        return f"streamproc/{parts[1]}/"
    if (ROOT / "streamproc" / f"{parts[1]}.py").is_file():
        return f"streamproc/{parts[1]}.py"
    return None  # from streamproc import __version__


def imported_units(source: Path) -> set[str]:
    """The package-map entries a module imports, at its top or inside functions."""
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            found |= {unit_of(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "streamproc":
                found |= {unit_of(f"streamproc.{alias.name}") for alias in node.names}
            else:
                found.add(unit_of(node.module))
    return {unit for unit in found if unit is not None}


def test_imports_follow_the_layers_without_a_cycle():
    layers = {path: int(layer) for path, layer in package_map().items() if layer.isdigit()}
    graph: dict[str, set[str]] = {unit: set() for unit in layers}
    upward = []
    for source in sorted((ROOT / "streamproc").rglob("*.py")):
        unit = unit_of(".".join(source.relative_to(ROOT).with_suffix("").parts))
        if unit is None:
            continue
        assert unit in layers, f"{unit} is not in the package map of docs/architecture.md"
        for target in imported_units(source) - {unit}:
            assert target in layers, f"{target} is not in the package map"
            graph[unit].add(target)
            if layers[target] > layers[unit]:
                upward.append(f"{source.relative_to(ROOT)} (layer {layers[unit]}) imports "
                              f"{target} (layer {layers[target]})")
    assert upward == []
    # No cycle: peel off the units that import nothing left; whatever remains is a cycle.
    left = {unit: set(targets) for unit, targets in graph.items()}
    while done := [unit for unit, targets in left.items() if not targets & left.keys()]:
        for unit in done:
            del left[unit]
    assert sorted(left) == [], "these import each other in a cycle (or import one that does)"
