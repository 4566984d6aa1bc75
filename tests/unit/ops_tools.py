"""helm, kubeconform and promtool for the offline checks of the Helm chart and the Prometheus
rules: built once by deploy/local/ops-tools.sh (`go install` at pinned versions, into
~/.cache/streamproc/tools) and found there afterwards."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local" / "ops-tools.sh"


@cache
def ops_tool(name: str) -> Path:
    """The path of one built tool; builds it when missing (minutes, the first time)."""
    done = subprocess.run(["bash", str(SCRIPT), name], capture_output=True, text=True,
                          timeout=3600)
    assert done.returncode == 0, f"{SCRIPT.relative_to(ROOT)} failed:\n{done.stderr[-4000:]}"
    found = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return Path(found[name])


def run_tool(name: str, *args: str, stdin: str | None = None,
             cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ops_tool(name)), *args], input=stdin, capture_output=True,
                          text=True, timeout=300, cwd=cwd)
