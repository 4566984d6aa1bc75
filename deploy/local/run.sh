#!/usr/bin/env bash
# The main job on one machine: the local stack, a worker and the traffic simulator (in real
# time: pages ask for their slots, customers answer the decisions), with the decisions shown as
# they arrive, one line each. Ctrl-C stops the worker and the simulator; the stack stays up for
# the next run (`.venv/bin/streamproc stack down` stops it).
#   DEMO_CUSTOMERS  simulated customers (default 500)
#   DEMO_RATE       events per second (default 50)
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
  echo "==> stopping the worker and the simulator"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "==> the stack is still up: '$sp stack down' stops it; logs are in $logs/"
}
trap cleanup INT TERM EXIT
echo "==> starting a worker (log: $logs/worker.log)"
# the served models and bandit follow the learner every 10 s (default 30), so the demo's first
# minute already shows outcomes learnt
STREAMPROC_MODEL_SNAPSHOT_SECONDS=${STREAMPROC_MODEL_SNAPSHOT_SECONDS:-10} \
  "$sp" worker >"$logs/worker.log" 2>&1 &
pids+=($!)
echo "==> simulating $customers customers at $rate events/s (log: $logs/simulate.log)"
"$sp" simulate --customers "$customers" --rate "$rate" >"$logs/simulate.log" 2>&1 &
pids+=($!)
echo "==> decisions as they arrive (Ctrl-C to stop): time, customer, slot, action, policy/arm,"
echo "    propensity, why ('$sp tail decisions --why' shows every reason, --json the records)"
"$sp" tail decisions
