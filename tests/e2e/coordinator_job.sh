#!/usr/bin/env bash
# End to end with the real binaries: zt-coordinator + `mpirun -np 2 zt-worker --coordinator`.
#  1. a job runs to its end: both exit 0; metrics.jsonl has every step; events.log the lifecycle;
#     the endpoint and key files are private (0600).
#  2. SIGTERM to the coordinator stops the job after the step in flight: everything exits 0.
#  3. kill -9 of one worker: the coordinator names a dead rank within the heartbeat timeout and
#     exits non-zero; mpirun exits non-zero; no process is left.
#  4. kill -9 of the coordinator: the workers abort after the heartbeat timeout instead of hanging.
set -euo pipefail
BUILD=${ZT_BUILD_DIR:?}
COORD=$BUILD/bin/zt-coordinator
WORKER=$BUILD/bin/zt-worker
[[ -x $COORD && -x $WORKER ]] || { echo "SKIP: binaries not built"; exit 77; }
[[ -f $BUILD/data/corpus.tok ]] || { echo "SKIP: $BUILD/data/corpus.tok not built"; exit 77; }
command -v mpirun > /dev/null || { echo "SKIP: mpirun not installed"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMP_NUM_THREADS=1
T=$(mktemp -d /tmp/zt_e2e_coord_XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$T"/*.txt; do echo "--- $f"; tail -5 "$f"; done >&2; exit 1; }

write_config() {  # file, steps
  cat > "$1" <<YAML
train_micro_batch_size_per_gpu: 2
gradient_accumulation_steps: 1
steps_per_print: 5
model: {family: gpt2, vocab_size: 256, block_size: 32, n_layer: 2, n_head: 2, n_embd: 32, seed: 3}
data: {path: $BUILD/data/corpus.tok, format: llmc}
train: {steps: $2}
optimizer: {type: AdamW, params: {lr: 0.001}}
zero_optimization: {stage: 2, overlap_comm: true}
comm: {heartbeat_timeout_s: 3, heartbeat_interval_s: 0.3}
YAML
}

# start_job NAME STEPS: coordinator + workers in the background; sets CPID and MPID.
start_job() {
  write_config "$T/$1.yaml" "$2"
  "$COORD" --config "$T/$1.yaml" --run-dir "$T/$1" --world 2 > "$T/$1.coord.txt" 2>&1 &
  CPID=$!
  PIDS+=("$CPID")
  for _ in $(seq 1 100); do [[ -s $T/$1/coordinator.endpoint ]] && break; sleep 0.1; done
  [[ -s $T/$1/coordinator.endpoint ]] || fail "$1: no endpoint file"
  mpirun -np 2 --oversubscribe "$WORKER" --coordinator "$(cat "$T/$1/coordinator.endpoint")" \
    --run-dir "$T/$1" > "$T/$1.workers.txt" 2>&1 &
  MPID=$!
  PIDS+=("$MPID")
}
source "$(dirname "$0")/lib/jobs.sh"
no_leftovers() {  # run dir
  sleep 0.5
  if pgrep -f "$1" > /dev/null; then fail "processes left behind: $(pgrep -af "$1")"; fi
}

# 1. A job to its end.
start_job full 12
wait_exit $MPID 120; [[ $RC == 0 ]] || fail "full: workers exited non-zero"
wait_exit $CPID 30; [[ $RC == 0 ]] || fail "full: coordinator exited non-zero"
[[ $(wc -l < "$T/full/metrics.jsonl") == 12 ]] || fail "full: $(wc -l < "$T/full/metrics.jsonl") metrics lines"
for what in "registered rank 0" "registered rank 1" "plan sent" "finished 12 steps"; do
  grep -q "$what" "$T/full/events.log" || fail "full: events.log lacks '$what'"
done
[[ $(stat -c %a "$T/full/coordinator.key") == 600 && $(stat -c %a "$T/full/coordinator.endpoint") == 600 ]] \
  || fail "endpoint/key files are not private"
[[ -f $T/full/config.resolved.yaml ]] || fail "no config.resolved.yaml"
echo "1. job ran 12 steps through the coordinator; exit 0 everywhere"

# 2. SIGTERM to the coordinator: a graceful stop.
start_job stop 100000
wait_metrics "$T/stop"
kill -TERM $CPID
wait_exit $CPID 60; [[ $RC == 0 ]] || fail "stop: coordinator exited non-zero"
wait_exit $MPID 60; [[ $RC == 0 ]] || fail "stop: workers exited non-zero"
grep -q "stopped after step" "$T/stop/events.log" || fail "stop: no 'stopped' event"
no_leftovers "$T/stop"
echo "2. SIGTERM to the coordinator: stopped after $(wc -l < "$T/stop/metrics.jsonl") steps, exit 0 everywhere"

# 3. kill -9 of one worker.
start_job kill 100000
wait_metrics "$T/kill"
victim=$(pgrep -f "zt-worker --coordinator .* --run-dir $T/kill" | tail -1)
[[ -n $victim ]] || fail "kill: no worker process"
kill -KILL "$victim"
wait_exit $CPID 30
[[ $RC != 0 ]] || fail "kill: coordinator exited 0"
victim_rank=$(sed -n "s/.*registered rank \([0-9]*\) of 2: host [^,]*, pid $victim,.*/\1/p" "$T/kill/events.log")
[[ -n $victim_rank ]] || fail "kill: pid $victim not in events.log: $(cat "$T/kill/events.log")"
grep -qF "failed: rank $victim_rank on $(uname -n) (pid $victim) has been silent" "$T/kill/events.log" \
  || fail "kill: the coordinator did not name rank $victim_rank: $(cat "$T/kill/events.log")"
wait_exit $MPID 30; [[ $RC != 0 ]] || fail "kill: mpirun exited 0"
no_leftovers "$T/kill"
echo "3. kill -9 of rank $victim_rank: $(grep -o 'failed: rank [01][^:]*' "$T/kill/events.log" | head -1); all exited non-zero"

# 4. kill -9 of the coordinator.
start_job orphan 100000
wait_metrics "$T/orphan"
kill -KILL $CPID
wait_exit $MPID 30; [[ $RC != 0 ]] || fail "orphan: workers exited 0 without a coordinator"
grep -q "coordinator has been silent" "$T/orphan.workers.txt" || fail "orphan: no message about the coordinator"
no_leftovers "$T/orphan"
echo "4. kill -9 of the coordinator: the workers aborted after the heartbeat timeout"
echo "coordinator_job: all checks passed"
