#!/usr/bin/env bash
# The main job on one machine: the local stack, a worker and the traffic simulator, with the
# decisions shown as they arrive. Ctrl-C stops the worker and the simulator; the stack stays up
# for the next run (`.venv/bin/streamproc stack down` stops it).
set -euo pipefail
cd "$(dirname "$0")/../.."
sp=.venv/bin/streamproc
customers=${STREAMPROC_DEMO_CUSTOMERS:-500}
rate=${STREAMPROC_DEMO_RATE:-50}
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
"$sp" worker >"$logs/worker.log" 2>&1 &
pids+=($!)
echo "==> simulating $customers customers at $rate events/s (log: $logs/simulate.log)"
"$sp" simulate --customers "$customers" --rate "$rate" >"$logs/simulate.log" 2>&1 &
pids+=($!)
echo "==> decisions as they arrive (Ctrl-C to stop):"
"$sp" tail decisions
