#!/usr/bin/env bash
# End to end: `zt-coordinator --metrics-port` serves the job's live figures to Prometheus while a
# real job (a coordinator and `mpirun -np 2 zt-worker`) runs.
#  1. Before any worker registers the page is valid (promtool check metrics, lint included) and
#     says "starting".
#  2. While the job runs: two scrapes pass promtool; the step counter grows between them; the
#     loss equals metrics.jsonl's at the scraped step; world size, workers alive, per-rank memory
#     by category and the checkpoint counter are there; Content-Type is the 0.0.4 text format;
#     another path is 404.
#  3. A second coordinator asking for the same port exits non-zero naming the port, without
#     creating its run directory, and the first keeps serving.
#  4. SIGTERM ends the job cleanly (exit 0 everywhere).
# Needs promtool (the `prometheus` package: ZT_TEST_TOOLS=1 tools/setup.sh installs it).
set -euo pipefail
BUILD=${ZT_BUILD_DIR:?}
COORD=$BUILD/bin/zt-coordinator
WORKER=$BUILD/bin/zt-worker
# Only a missing promtool skips: everything else is part of every build.
[[ -x $COORD && -x $WORKER ]] || { echo "FAIL: $COORD or $WORKER not built" >&2; exit 1; }
[[ -f $BUILD/data/corpus.tok ]] || { echo "FAIL: $BUILD/data/corpus.tok not built" >&2; exit 1; }
command -v promtool > /dev/null || {
  echo "SKIP: promtool not installed (ZT_TEST_TOOLS=1 tools/setup.sh installs prometheus)"
  exit 77
}
command -v mpirun > /dev/null || { echo "FAIL: mpirun not installed" >&2; exit 1; }
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMP_NUM_THREADS=1
unset ZT_COORDINATOR_KEY
T=$(mktemp -d /tmp/zt_e2e_metrics_XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$T"/*.txt; do [[ -f $f ]] && { echo "--- $f"; tail -20 "$f"; }; done >&2
  exit 1
}
source "$(dirname "$0")/lib/jobs.sh"

# scrape PATH OUT: GET http://127.0.0.1:$PORT/PATH; the body goes to OUT, the status and the
# Content-Type to stdout ("200 text/plain; ...").
scrape() {
  "$PY" - "$PORT" "$1" "$2" <<'PY'
import sys, urllib.error, urllib.request
port, path, out = sys.argv[1:4]
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        status, ctype, body = r.status, r.headers.get("Content-Type", ""), r.read()
except urllib.error.HTTPError as e:
    status, ctype, body = e.code, e.headers.get("Content-Type", ""), e.read()
open(out, "wb").write(body)
print(status, ctype)
PY
}
# value FILE SAMPLE: the value of the sample line SAMPLE (name and labels exactly) in FILE.
value() { awk -v s="$2" '$1 == s { print $2 }' "$1"; }
# lint FILE: promtool's parse and lint must both pass (it exits non-zero on a lint warning).
lint() {
  promtool check metrics < "$1" > "$1.promtool.txt" 2>&1 \
    || fail "promtool check metrics on $1: $(cat "$1.promtool.txt")"
}

PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
cat > "$T/job.yaml" <<YAML
train_micro_batch_size_per_gpu: 2
gradient_accumulation_steps: 1
steps_per_print: 1000
model: {family: gpt2, vocab_size: 256, block_size: 32, n_layer: 2, n_head: 2, n_embd: 32, seed: 3}
data: {path: $BUILD/data/corpus.tok, format: llmc}
train: {steps: 100000}
optimizer: {type: AdamW, params: {lr: 0.001}}
zero_optimization: {stage: 2}
checkpoint: {every_steps: 10, keep_last: 1}
comm: {heartbeat_timeout_s: 10, heartbeat_interval_s: 0.3}
YAML

# 1. The coordinator alone: a valid page in state "starting".
RUN=$T/run
"$COORD" --config "$T/job.yaml" --run-dir "$RUN" --world 2 --metrics-port "$PORT" \
  > "$T/coord.txt" 2>&1 &
CPID=$!
PIDS+=("$CPID")
for _ in $(seq 1 100); do [[ -s $RUN/coordinator.endpoint ]] && break; sleep 0.1; done
[[ -s $RUN/coordinator.endpoint ]] || fail "no endpoint file"
grep -q "metrics on http://127.0.0.1:$PORT/metrics" "$T/coord.txt" || fail "no 'metrics on' line"
head=$(scrape /metrics "$T/start.prom")
[[ $head == "200 text/plain; version=0.0.4"* ]] || fail "/metrics answered '$head'"
lint "$T/start.prom"
[[ $(value "$T/start.prom" 'zerotrain_job_state{state="starting"}') == 1 ]] \
  || fail "not starting: $(grep job_state "$T/start.prom")"
[[ $(value "$T/start.prom" zerotrain_world_size) == 2 ]] || fail "world size before registration"
! grep -q '^zerotrain_loss ' "$T/start.prom" || fail "a loss before any step"
echo "1. before the workers: a valid page, state starting"

# 2. The job runs: two scrapes some steps apart.
mpirun -np 2 --oversubscribe "$WORKER" --coordinator "$(cat "$RUN/coordinator.endpoint")" \
  --run-dir "$RUN" > "$T/workers.txt" 2>&1 &
MPID=$!
PIDS+=("$MPID")
wait_metrics "$RUN"
scrape /metrics "$T/a.prom" > /dev/null
lint "$T/a.prom"
step_a=$(value "$T/a.prom" zerotrain_steps_completed_total)
[[ $step_a -ge 1 ]] || fail "steps_completed_total is '$step_a' after the first metrics line"
# Some steps on, and a checkpoint (every 10 steps) committed: the commit is asynchronous, so
# scrape until the counter shows it.
for _ in $(seq 1 300); do
  if [[ $(wc -l < "$RUN/metrics.jsonl") -ge $((step_a + 5)) ]]; then
    scrape /metrics "$T/b.prom" > /dev/null
    (($(value "$T/b.prom" zerotrain_checkpoints_committed_total) >= 1)) && break
  fi
  sleep 0.1
done
[[ -f $T/b.prom ]] || fail "metrics.jsonl did not grow past step $((step_a + 5))"
lint "$T/b.prom"
step_b=$(value "$T/b.prom" zerotrain_steps_completed_total)
((step_b > step_a)) || fail "the step counter did not grow: $step_a then $step_b"
loss=$(value "$T/b.prom" zerotrain_loss)
# metrics.jsonl gets a step's line before the coordinator publishes the step, so it is there.
"$PY" - "$RUN/metrics.jsonl" "$step_b" "$loss" <<'PY' || fail "loss mismatch"
import json, sys
path, step, loss = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
lines = [json.loads(l) for l in open(path) if l.strip()]
want = [l["loss"] for l in lines if l["step"] == step]
if want != [loss]:
    sys.exit(f"scraped loss {loss} at step {step}; metrics.jsonl has {want}")
PY
[[ $(value "$T/b.prom" 'zerotrain_job_state{state="running"}') == 1 ]] || fail "not running"
[[ $(value "$T/b.prom" zerotrain_workers_alive) == 2 ]] || fail "workers alive is not 2"
[[ $(value "$T/b.prom" zerotrain_zero_stage) == 2 ]] || fail "ZeRO stage is not 2"
ckpts=$(value "$T/b.prom" zerotrain_checkpoints_committed_total)
((ckpts >= 1)) || fail "no checkpoint counted after $step_b steps (every 10)"
last_ckpt=$(value "$T/b.prom" zerotrain_last_checkpoint_step)
((last_ckpt > 0 && last_ckpt % 10 == 0 && last_ckpt <= step_b)) \
  || fail "last checkpoint step $last_ckpt at step $step_b"
for rank in 0 1; do
  for cat in parameters gradients optimizer_states activations communication workspace; do
    v=$(value "$T/b.prom" "zerotrain_rank_memory_peak_bytes{rank=\"$rank\",category=\"$cat\"}")
    [[ -n $v ]] || fail "no peak memory for rank $rank, $cat"
  done
  v=$(value "$T/b.prom" "zerotrain_rank_memory_total_peak_bytes{rank=\"$rank\"}")
  ((v > 0)) || fail "rank $rank total peak memory is '$v'"
  [[ -n $(value "$T/b.prom" "zerotrain_rank_heartbeat_age_seconds{rank=\"$rank\"}") ]] \
    || fail "no heartbeat age for rank $rank"
done
tokens=$(value "$T/b.prom" zerotrain_tokens_total)
((tokens == step_b * 4 * 32)) || fail "tokens_total $tokens after $step_b steps of 4x32 tokens"
head=$(scrape /nothing-here "$T/404.txt")
[[ $head == 404* ]] || fail "/nothing-here answered '$head'"
echo "2. scrapes at steps $step_a and $step_b pass promtool; loss $loss matches metrics.jsonl;" \
  "$ckpts checkpoint(s) counted"

# 3. The port is taken: a second coordinator fails at once, naming it, and writes nothing.
set +e
timeout 20 "$COORD" --config "$T/job.yaml" --run-dir "$T/second" --world 2 \
  --metrics-port "$PORT" > "$T/second.txt" 2>&1
rc=$?
set -e
((rc != 0 && rc != 124)) || fail "a second coordinator on port $PORT exited $rc"
grep -q "port $PORT is already in use" "$T/second.txt" || fail "no message naming port $PORT"
[[ ! -e $T/second ]] || fail "the refused coordinator created its run directory"
scrape /metrics "$T/c.prom" > /dev/null
lint "$T/c.prom"
echo "3. port $PORT in use: exit $rc, '$(head -1 "$T/second.txt")'"

# 4. A clean end.
kill -TERM "$CPID"
wait_exit "$CPID" 60
[[ $RC == 0 ]] || fail "the coordinator exited $RC after SIGTERM"
wait_exit "$MPID" 60
[[ $RC == 0 ]] || fail "the workers exited $RC"
echo "4. SIGTERM: exit 0 everywhere"
echo "metrics_endpoint: all checks passed"
