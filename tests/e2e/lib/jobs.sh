# Shell helpers for the end-to-end scripts that run jobs in the background (sourced, not a test:
# ctest registers only tests/e2e/*.sh). The sourcing script defines fail().

# wait_metrics RUN_DIR: waits (up to 30 s) for the job's first metrics line.
wait_metrics() {
  for _ in $(seq 1 300); do [[ -s $1/metrics.jsonl ]] && return 0; sleep 0.1; done
  fail "no metrics in $1"
}

# wait_exit PID SECONDS: sets RC to the exit status; fails if still running after SECONDS.
wait_exit() {
  local pid=$1 limit=$2
  RC=0
  timeout "$limit" tail --pid="$pid" -f /dev/null || fail "pid $pid still running after $limit s"
  wait "$pid" || RC=$?
}
