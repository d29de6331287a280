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

# start_coordinator_job CONFIG RUN_DIR NP: zt-coordinator (--world NP) and `mpirun -np NP
# zt-worker` in the background, output in RUN_DIR.coord.txt / RUN_DIR.workers.txt; sets CPID and
# MPID and adds both to PIDS. The sourcing script sets COORD and WORKER.
start_coordinator_job() {
  local config=$1 run=$2 np=$3
  "$COORD" --config "$config" --run-dir "$run" --world "$np" > "$run.coord.txt" 2>&1 &
  CPID=$!
  PIDS+=("$CPID")
  for _ in $(seq 1 100); do [[ -s $run/coordinator.endpoint ]] && break; sleep 0.1; done
  [[ -s $run/coordinator.endpoint ]] || fail "no endpoint file in $run"
  mpirun -np "$np" --oversubscribe "$WORKER" --coordinator "$(cat "$run/coordinator.endpoint")" \
    --run-dir "$run" > "$run.workers.txt" 2>&1 &
  MPID=$!
  PIDS+=("$MPID")
}
