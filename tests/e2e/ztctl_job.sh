#!/usr/bin/env bash
# End to end through ztctl with the real binaries:
#  1. `ztctl launch --np 2` runs a job; `status --json` says running with world 2 and both ranks;
#     `status` prints the table; `checkpoint` is taken and waited for (exit 0, "committed step N");
#     `top` exits 0 on SIGINT, and another `top` exits 0 when the job ends; `stop` ends the job
#     after the step in flight (exit 0), launch exits 0, nothing is left running, and `status`
#     afterwards says nobody listens and what the job last did.
#  2. SIGINT to `ztctl launch` (Ctrl-C) stops the job gracefully: exit 0, "stopped" in events.log.
#  3. kill -9 of a worker: launch exits non-zero, events.log names the failed rank, `top` exits 1,
#     no process is left.
#  4. Bad input: a run dir without a job, a missing config, an unknown subcommand.
set -euo pipefail
BUILD=${ZT_BUILD_DIR:?}
ZTCTL=$BUILD/bin/ztctl
for b in ztctl zt-coordinator zt-worker; do
  [[ -x $BUILD/bin/$b ]] || { echo "SKIP: $BUILD/bin/$b not built"; exit 77; }
done
[[ -f $BUILD/data/corpus.tok ]] || { echo "SKIP: $BUILD/data/corpus.tok not built"; exit 77; }
command -v mpirun > /dev/null || { echo "SKIP: mpirun not installed"; exit 77; }
command -v python3 > /dev/null || { echo "SKIP: python3 not installed"; exit 77; }
export OMPI_MCA_btl=self,vader OMP_NUM_THREADS=1
unset ZT_COORDINATOR ZT_COORDINATOR_KEY
T=$(mktemp -d /tmp/zt_e2e_ztctl_XXXXXX)
PIDS=()
cleanup() {
  # A killed `ztctl launch` takes its coordinator and mpirun with it (PR_SET_PDEATHSIG).
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$T"/*.txt; do [[ -f $f ]] && { echo "--- $f"; tail -8 "$f"; }; done >&2
  exit 1
}

cat > "$T/job.yaml" <<YAML
train_micro_batch_size_per_gpu: 2
gradient_accumulation_steps: 1
steps_per_print: 1000
model: {family: gpt2, vocab_size: 256, block_size: 32, n_layer: 2, n_head: 2, n_embd: 32, seed: 3}
data: {path: $BUILD/data/corpus.tok, format: llmc}
train: {steps: 10000000}
optimizer: {type: AdamW, params: {lr: 0.001}}
zero_optimization: {stage: 2}
comm: {heartbeat_timeout_s: 3, heartbeat_interval_s: 0.3}
YAML

# launch NAME: `ztctl launch` in the background; sets LPID.
launch() {
  "$ZTCTL" launch --config "$T/job.yaml" --np 2 --run-dir "$T/$1" > "$T/$1.launch.txt" 2>&1 &
  LPID=$!
  PIDS+=("$LPID")
}
source "$(dirname "$0")/lib/jobs.sh"
no_leftovers() {  # run dir: nothing that names it or its endpoint may still run
  local endpoint
  endpoint=$(cat "$1/coordinator.endpoint")
  sleep 0.5
  if pgrep -f -- "$1" > /dev/null || pgrep -f -- "$endpoint" > /dev/null; then
    fail "processes left behind: $(pgrep -af -- "$1"; pgrep -af -- "$endpoint")"
  fi
}

# 1. The job through ztctl.
launch main
wait_metrics "$T/main"
"$ZTCTL" status --run-dir "$T/main" --json > "$T/status.json" || fail "status --json: exit $?"
python3 - "$T/status.json" <<'PY' || fail "status --json: $(cat "$T/status.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["state"] == "running", s["state"]
assert s["world_size"] == 2, s["world_size"]
assert [r["rank"] for r in s["ranks"]] == [0, 1], s["ranks"]
assert s["step"] >= 1 and s["total_steps"] == 10000000, (s["step"], s["total_steps"])
assert s["loss"] is not None and s["ranks"][0]["memory_peak_bytes"]["parameters"] > 0
PY
"$ZTCTL" status --run-dir "$T/main" > "$T/status.txt" || fail "status exited non-zero"
grep -q "^job       running, step" "$T/status.txt" || fail "status: $(cat "$T/status.txt")"
grep -q "current" "$T/status.txt" || fail "status has no memory table"
rc=0
"$ZTCTL" checkpoint --run-dir "$T/main" --reply-timeout 30 > "$T/ckpt.txt" 2>&1 || rc=$?
[[ $rc == 0 ]] && grep -q "committed step [0-9]*: $T/main/checkpoints/step_" "$T/ckpt.txt" \
  || fail "checkpoint: exit $rc: $(cat "$T/ckpt.txt")"
"$ZTCTL" top --run-dir "$T/main" --interval 0.2 > "$T/top_int.txt" 2>&1 &
TOP_INT=$!
"$ZTCTL" top --run-dir "$T/main" --interval 0.2 > "$T/top_end.txt" 2>&1 &
TOP_END=$!
PIDS+=("$TOP_INT" "$TOP_END")
# SIGINT only once top has refreshed twice: a background command of a non-interactive shell
# starts with SIGINT ignored, so a signal sent before ztctl installs its handler is lost (a loaded
# CI machine once took longer than a fixed 1.5 s to get there).
for _ in $(seq 1 300); do
  [[ $(grep -c "^ztctl top " "$T/top_int.txt" || true) -ge 2 ]] && break
  sleep 0.1
done
kill -INT $TOP_INT
wait_exit $TOP_INT 10; [[ $RC == 0 ]] || fail "top exited $RC on SIGINT"
[[ $(grep -c "^ztctl top " "$T/top_int.txt") -ge 2 ]] || fail "top refreshed less than twice"
"$ZTCTL" stop --run-dir "$T/main" > "$T/stop.txt" 2>&1 || fail "stop exited non-zero"
grep -q "the job has ended: stopped after step" "$T/stop.txt" || fail "stop: $(cat "$T/stop.txt")"
wait_exit $LPID 60; [[ $RC == 0 ]] || fail "launch exited $RC after ztctl stop"
grep -q "the job has ended" "$T/main.launch.txt" || fail "launch did not report the end"
wait_exit $TOP_END 30; [[ $RC == 0 ]] || fail "top exited $RC when the job was stopped"
grep -q "the job has ended" "$T/top_end.txt" || fail "top did not report the end"
no_leftovers "$T/main"
rc=0
"$ZTCTL" status --run-dir "$T/main" > /dev/null 2> "$T/after.txt" || rc=$?
[[ $rc == 1 ]] && grep -q "nothing listens there" "$T/after.txt" \
  && grep -q "stopped after step" "$T/after.txt" \
  || fail "status after the end: exit $rc: $(cat "$T/after.txt")"
echo "1. launch/status/checkpoint/top/stop: $(grep -o 'stopped after step [0-9]*' "$T/stop.txt")," \
  "exit 0 everywhere"

# 2. Ctrl-C to ztctl launch.
launch sigint
wait_metrics "$T/sigint"
kill -INT $LPID
wait_exit $LPID 60; [[ $RC == 0 ]] || fail "launch exited $RC after SIGINT"
grep -q "stopped after step" "$T/sigint/events.log" || fail "sigint: $(cat "$T/sigint/events.log")"
no_leftovers "$T/sigint"
echo "2. SIGINT to ztctl launch: $(grep -o 'stopped after step [0-9]*' "$T/sigint/events.log")," \
  "exit 0"

# 3. A worker killed: the job fails, ztctl says so.
launch killed
wait_metrics "$T/killed"
"$ZTCTL" top --run-dir "$T/killed" --interval 0.2 > "$T/top_fail.txt" 2>&1 &
TOP_FAIL=$!
PIDS+=("$TOP_FAIL")
sleep 0.5
victim=$(pgrep -f "zt-worker --coordinator $(cat "$T/killed/coordinator.endpoint")" | tail -1)
[[ -n $victim ]] || fail "killed: no worker process"
kill -KILL "$victim"
wait_exit $LPID 60; [[ $RC != 0 ]] || fail "launch exited 0 after a worker was killed"
LAUNCH_RC=$RC
grep -q "failed: rank" "$T/killed/events.log" || fail "killed: $(cat "$T/killed/events.log")"
wait_exit $TOP_FAIL 30; [[ $RC == 1 ]] || fail "top exited $RC when the job failed"
no_leftovers "$T/killed"
echo "3. kill -9 of a worker: launch exit $LAUNCH_RC, top exit 1;" \
  "$(grep -o 'failed: rank [01][^:]*' "$T/killed/events.log" | head -1)"

# 4. Bad input.
rc=0
"$ZTCTL" status --run-dir "$T/nothing" 2> "$T/bad1.txt" || rc=$?
[[ $rc == 1 ]] && grep -q "$T/nothing" "$T/bad1.txt" \
  || fail "status without a job: exit $rc: $(cat "$T/bad1.txt")"
rc=0
"$ZTCTL" launch --config "$T/missing.yaml" --np 2 --run-dir "$T/x" 2> "$T/bad2.txt" || rc=$?
[[ $rc == 1 ]] && grep -q "cannot read the config $T/missing.yaml" "$T/bad2.txt" \
  || fail "launch with a missing config: exit $rc: $(cat "$T/bad2.txt")"
rc=0
"$ZTCTL" frobnicate > /dev/null 2>&1 || rc=$?
[[ $rc == 2 ]] || fail "an unknown subcommand exited $rc, not 2"
echo "4. bad input: clear errors, exit 1 (2 for usage)"
echo "ztctl_job: all checks passed"
