#!/usr/bin/env bash
# `auto` end to end with the real binaries: zt-coordinator + `mpirun -np 2 zt-worker`.
#  1. `ztctl estimate --json` on a config whose stage, micro-batch and checkpointing policy are all
#     `auto`; from its rows, a memory_budget below everything stages 0-2 can do without offload
#     but above the smallest stage-3 / offload combination.
#  2. The job with that budget: the coordinator chooses stage 3 or offload, says why in
#     events.log and `ztctl status`, writes a config.resolved.yaml without `auto` and with
#     train_batch_size unchanged, and the run succeeds with every rank's measured peak (the sum
#     of its category peaks, plus offloaded state) within the budget.
#  3. A budget nothing fits: the coordinator exits 1 at start naming the smallest combination,
#     before any worker is needed.
set -euo pipefail
BUILD=${ZT_BUILD_DIR:?}
COORD=$BUILD/bin/zt-coordinator
WORKER=$BUILD/bin/zt-worker
ZTCTL=$BUILD/bin/ztctl
PY=/usr/bin/python3
for b in "$COORD" "$WORKER" "$ZTCTL"; do [[ -x $b ]] || { echo "SKIP: $b not built"; exit 77; }; done
[[ -f $BUILD/data/corpus.tok ]] || { echo "SKIP: $BUILD/data/corpus.tok not built"; exit 77; }
command -v mpirun > /dev/null || { echo "SKIP: mpirun not installed"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMP_NUM_THREADS=1
T=$(mktemp -d /tmp/zt_e2e_auto_XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$T"/*.txt; do echo "--- $f"; tail -8 "$f"; done >&2; exit 1; }
source "$(dirname "$0")/lib/jobs.sh"

# Many parameters for few tokens (8 blocks of width 96, 16-token sequences), one unit gathered
# ahead and no bucket kept whole: stage 3 saves memory on this model (about 15% at its smallest).
cat > "$T/job.yaml" <<YAML
train_batch_size: 4
train_micro_batch_size_per_gpu: auto
steps_per_print: 5
model: {family: gpt2, vocab_size: 256, block_size: 16, n_layer: 8, n_head: 4, n_embd: 96, seed: 3}
data: {path: $BUILD/data/corpus.tok, format: llmc}
train: {steps: 400}
optimizer: {type: AdamW, params: {lr: 0.001}}
zero_optimization: {stage: auto, stage3_prefetch_bucket_size: 1, stage3_param_persistence_threshold: 0}
activation_checkpointing: {policy: auto}
comm: {heartbeat_timeout_s: 10, heartbeat_interval_s: 0.3}
YAML

# 1. The budget, from the estimator's own table.
"$ZTCTL" estimate --config "$T/job.yaml" --world 2 --json > "$T/estimate.json" \
  || fail "ztctl estimate exited $?"
"$ZTCTL" estimate --config "$T/job.yaml" --world 2 > "$T/estimate.txt" || fail "ztctl estimate (table)"
grep -q "^    3 " "$T/estimate.txt" || fail "the table has no stage-3 row"
BUDGET=$("$PY" - "$T/estimate.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
low = min(r["needed"] for r in rows if r["stage"] <= 2 and r["offload_optimizer"] == "none")
high = min(r["needed"] for r in rows if r["stage"] == 3 or r["offload_optimizer"] != "none")
budget = int((low - 1) / 0.9)
assert high <= budget * 0.9, f"no budget separates stage 3 ({high}) from stages 0-2 ({low})"
print(budget)
PY
) || fail "no budget forces stage 3 or offload: $BUDGET"
echo "memory_budget: $BUDGET" >> "$T/job.yaml"

# 2. The job.
start_coordinator_job "$T/job.yaml" "$T/run" 2
wait_metrics "$T/run"
"$ZTCTL" status --run-dir "$T/run" > "$T/status.txt" 2>&1 || fail "ztctl status exited $?"
grep -q "auto (zero_optimization.stage, train_micro_batch_size_per_gpu, activation_checkpointing.policy): chose" \
  "$T/status.txt" || fail "ztctl status does not say what auto chose"
"$ZTCTL" stop --run-dir "$T/run" > "$T/stop.txt" 2>&1 || fail "ztctl stop exited $?"
wait_exit "$CPID" 60
[[ $RC == 0 ]] || fail "coordinator exited $RC"
wait_exit "$MPID" 60
[[ $RC == 0 ]] || fail "mpirun exited $RC"

grep -q "auto (.*): chose stage" "$T/run/events.log" || fail "events.log has no auto decision"
grep -q "auto: it needs .* of the budget" "$T/run/events.log" || fail "events.log has no budget line"
grep -q "auto: faster but does not fit" "$T/run/events.log" || fail "events.log names no rejected option"
grep -q "memory estimate: .* per rank at its peak of .* (memory_budget in the config)" \
  "$T/run/events.log" || fail "events.log has no memory estimate of the plan"
if grep -q ": auto" "$T/run/config.resolved.yaml"; then fail "config.resolved.yaml still holds auto"; fi
grep -q "^train_batch_size: 4$" "$T/run/config.resolved.yaml" || fail "train_batch_size changed"
"$PY" - "$T/run" "$BUDGET" <<'PY' || fail "resolved plan or measured memory wrong"
import json, re, sys
run, budget = sys.argv[1], int(sys.argv[2])
cfg = open(f"{run}/config.resolved.yaml").read()
stage = int(re.search(r"^  stage: (\d)$", cfg, re.M).group(1))
placement = re.search(r"offload_optimizer:\n    device: (\w+)", cfg).group(1)
assert stage == 3 or placement != "none", f"auto chose stage {stage}, offload {placement}"
micro = int(re.search(r"^train_micro_batch_size_per_gpu: (\d+)$", cfg, re.M).group(1))
acc = int(re.search(r"^gradient_accumulation_steps: (\d+)$", cfg, re.M).group(1))
assert micro * acc * 2 == 4, (micro, acc)
cats = ["parameters", "gradients", "optimizer_states", "activations", "communication", "workspace"]
steps = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
assert len(steps) >= 2, len(steps)
for s in steps:
    offload = {o["rank"]: o["resident"] for o in s["offload_bytes"]}
    for r in s["peak_memory_bytes"]:
        used = sum(r[c] for c in cats) + offload[r["rank"]]
        assert used <= budget, f"step {s['step']} rank {r['rank']}: {used} > budget {budget}"
print(f"auto chose stage {stage}, offload {placement}, micro {micro} x {acc}; peaks within {budget}")
PY

# 3. A budget nothing fits: refused at start.
sed -i "s/^memory_budget: .*/memory_budget: 64KiB/" "$T/job.yaml"
RC=0
timeout 30 "$COORD" --config "$T/job.yaml" --run-dir "$T/run_small" --world 2 > "$T/small.txt" 2>&1 \
  || RC=$?
[[ $RC == 1 ]] || fail "coordinator with a 64 KiB budget exited $RC, expected 1"
grep -q "nothing fits 64.0 KiB per rank" "$T/small.txt" || fail "no 'nothing fits' message"
grep -q "the smallest combination, stage 3, .*, micro-batch . x . accumulation, needs" "$T/small.txt" \
  || fail "the message does not name the smallest combination"
echo "PASS"
