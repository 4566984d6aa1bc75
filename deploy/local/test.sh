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
# The demo shop's browser test drives Debian's chromium (tests/integration/test_shop.py).
if ! command -v chromium >/dev/null 2>&1; then
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo -n)
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then
    echo "==> installing chromium for the browser test (apt-get)"
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
  else
    echo "==> chromium is missing: the browser test will fail; install it with"
    echo "    sudo apt-get update && sudo apt-get install -y chromium"
  fi
fi
# The offline checks of the Helm chart and the alert rules (tests/unit/test_helm.py,
# test_monitoring.py) need helm, kubeconform and promtool: built once with Go, then cached.
echo "==> helm, kubeconform and promtool for the chart's and the alert rules' checks"
bash deploy/local/ops-tools.sh >/dev/null
echo "==> bringing the local stack up (Kafka + Redis)"
"$sp" stack up
echo "==> running the tests"
.venv/bin/python -m pytest tests/unit tests/integration streamproc --doctest-modules "$@"
