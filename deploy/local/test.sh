#!/usr/bin/env bash
# The whole test suite: unit tests, doctests and integration tests against the real local Kafka
# and Redis. Brings the stack up when it is not running, and stops it again afterwards if it
# started it, so the machine is left as it was found.
set -euo pipefail
cd "$(dirname "$0")/../.."
sp=.venv/bin/streamproc
started_here=0
if ! "$sp" stack status >/dev/null 2>&1; then
  started_here=1
fi
stop_stack() {
  if [ "$started_here" = 1 ]; then
    echo "==> stopping the local stack this run started"
    "$sp" stack down || true
  fi
}
trap stop_stack EXIT
echo "==> bringing the local stack up (Kafka + Redis)"
"$sp" stack up
echo "==> running the tests"
.venv/bin/python -m pytest tests/unit tests/integration streamproc --doctest-modules "$@"
