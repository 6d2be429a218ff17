#!/usr/bin/env bash
# Runs the api, two fflow replicas and two worker replicas in the
# foreground with readable, prefixed logs; worker-1 also runs the scheduler
# (REELAY_SCHEDULER=true). Ctrl-C (or SIGTERM) stops all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${REELAY_BIN_DIR:-target/debug}

pids=()
stop() {
  trap - INT TERM EXIT
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

# Each binary runs as a child of this shell (its output through a
# prefixing sed), so the pid kept is the binary's own and SIGTERM reaches it.
run() {
  local name=$1; shift
  env REELAY_REPLICA="$name" "$@" > >(sed -u "s/^/[$name] /") 2>&1 &
  pids+=($!)
}

run fflow-r1 env REELAY_FFLOW_REPLICA=r1 REELAY_FFLOW_ADDR=127.0.0.1:4051 "$bin/reelay-fflow"
run fflow-r2 env REELAY_FFLOW_REPLICA=r2 REELAY_FFLOW_ADDR=127.0.0.1:4052 "$bin/reelay-fflow"
export REELAY_FFLOW_URLS=${REELAY_FFLOW_URLS:-http://127.0.0.1:4051,http://127.0.0.1:4052}
run api env REELAY_DEV_TOKENS=${REELAY_DEV_TOKENS:-true} "$bin/reelay-api"
run worker-1 env REELAY_WORKER_HTTP_ADDR=127.0.0.1:9101 REELAY_SCHEDULER=true "$bin/reelay-worker"
run worker-2 env REELAY_WORKER_HTTP_ADDR=127.0.0.1:9102 "$bin/reelay-worker"
echo "[run] console on http://${REELAY_HTTP_ADDR:-127.0.0.1:8080}/console/ (api on the same address); fflow on :4051/r1/ and :4052/r2/; workers' /readyz and /metrics on :9101 (scheduler) and :9102; Ctrl-C stops"
wait
