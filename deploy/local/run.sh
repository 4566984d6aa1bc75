#!/usr/bin/env bash
# The main job on one machine: the local stack, a worker, the traffic simulator (in real time:
# pages ask for their slots, customers answer the decisions) and the HTTP API with its demo shop
# and the dashboard,
# with the decisions shown as they arrive, one line each (the shop's visitors' among them).
# Ctrl-C stops the worker, the simulator and the API; the stack stays up for the next run
# (`.venv/bin/streamproc stack down` stops it).
#   DEMO_CUSTOMERS  simulated customers (default 500)
#   DEMO_RATE       events per second (default 50)
#   STREAMPROC_API_PORT  the API's and the shop's port (default 8080)
# (not STREAMPROC_* names: those are the worker's settings, and it refuses names it does not know)
set -euo pipefail
cd "$(dirname "$0")/../.."
sp=.venv/bin/streamproc
# the former names still work, as the new ones
if [[ -n "${STREAMPROC_DEMO_CUSTOMERS:-}" || -n "${STREAMPROC_DEMO_RATE:-}" ]]; then
  echo "==> STREAMPROC_DEMO_CUSTOMERS/STREAMPROC_DEMO_RATE are now DEMO_CUSTOMERS/DEMO_RATE; using them as those"
  DEMO_CUSTOMERS=${DEMO_CUSTOMERS:-${STREAMPROC_DEMO_CUSTOMERS:-}}
  DEMO_RATE=${DEMO_RATE:-${STREAMPROC_DEMO_RATE:-}}
  unset STREAMPROC_DEMO_CUSTOMERS STREAMPROC_DEMO_RATE
fi
customers=${DEMO_CUSTOMERS:-500}
rate=${DEMO_RATE:-50}
logs=.stack/logs
echo "==> bringing the local stack up (Kafka + Redis)"
"$sp" stack up
mkdir -p "$logs"
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "==> stopping the worker, the simulator and the API"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "==> the stack is still up: '$sp stack down' stops it; logs are in $logs/"
}
trap cleanup INT TERM EXIT
# Consent as shipped (STREAMPROC_CONSENT_DEFAULTS): nobody is profiled without personalisation
# consent. The simulated customers answer a consent banner on their first visit, and so does
# the shop's visitor (docs/operations.md, "Consent").
echo "==> starting a worker (log: $logs/worker.log)"
# the served models and bandit follow the learner every 10 s (default 30), so the demo's first
# minute already shows outcomes learnt
STREAMPROC_MODEL_SNAPSHOT_SECONDS=${STREAMPROC_MODEL_SNAPSHOT_SECONDS:-10} \
  "$sp" worker >"$logs/worker.log" 2>&1 &
pids+=($!)
echo "==> simulating $customers customers at $rate events/s (log: $logs/simulate.log)"
"$sp" simulate --customers "$customers" --rate "$rate" >"$logs/simulate.log" 2>&1 &
pids+=($!)
api_port=${STREAMPROC_API_PORT:-8080}
echo "==> starting the HTTP API and its demo shop (log: $logs/api.log)"
"$sp" serve --port "$api_port" >"$logs/api.log" 2>&1 &
pids+=($!)
shop="http://127.0.0.1:$api_port/demo/"
# ready: Kafka producer connected and Redis answering (at most 30 s)
if ! .venv/bin/python - "http://127.0.0.1:$api_port/readyz" "${pids[-1]}" <<'PY'
import os, sys, time, urllib.request
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        urllib.request.urlopen(sys.argv[1], timeout=2)
        sys.exit(0)
    except OSError:
        try:
            os.kill(int(sys.argv[2]), 0)
        except OSError:
            sys.exit(1)  # the API exited
        time.sleep(0.2)
sys.exit(1)
PY
then
  echo "==> the API is not ready (port $api_port taken? set STREAMPROC_API_PORT): see $logs/api.log"
  shop=""
fi
if [ -n "$shop" ]; then
  echo "==> the demo shop: $shop  (browse it: your visits are decided below, customer anon-...;"
  echo "    answer its consent banner with 'Personalise' to be personalised)"
  echo "==> the dashboard: http://127.0.0.1:$api_port/dashboard/  (KPIs, experiments, segments, live)"
fi
echo "==> decisions as they arrive (Ctrl-C to stop): time, customer, slot, action, policy/arm,"
echo "    propensity, why ('$sp tail decisions --why' shows every reason, --json the records)"
"$sp" tail decisions
