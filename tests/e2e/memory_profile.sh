#!/usr/bin/env bash
# The step profile end to end (Note [step profile]): zt-coordinator + `mpirun -np 2 zt-worker`,
# ZeRO stage 3 with layer checkpointing, 6 steps with steps_per_print 5.
#  1. metrics.jsonl: every step has time_ms (every phase, >= 0, adding up to at most step_ms),
#     time_ms_by_rank and comm_bytes for ranks 0 and 1 (stage 3 gathers: bytes > 0), and
#     peak_phase naming a part of the step for every category and rank; a peak phase is the start
#     of the step, "other", or a part in that rank's timeline of the step.
#  2. memory.jsonl: the sampled steps only (1, 2, 5, 6: memory_timeline_due), both ranks, the
#     parts in the order the model runs them (forward blocks up, recompute/backward down).
#  3. `ztctl memory` prints each rank's peaks with the part that set them (the same as
#     metrics.jsonl's), --json agrees, --step picks the latest timeline at or before the step, and
#     a malformed line fails naming the file and line.
#  4. `ztctl report` draws the step-time, per-rank step-time, communication and memory-by-phase
#     charts with data, not the "not recorded" placeholders.
set -euo pipefail
BUILD=${ZT_BUILD_DIR:?}
COORD=$BUILD/bin/zt-coordinator
WORKER=$BUILD/bin/zt-worker
ZTCTL=$BUILD/bin/ztctl
for b in "$COORD" "$WORKER" "$ZTCTL"; do [[ -x $b ]] || { echo "SKIP: $b not built"; exit 77; }; done
[[ -f $BUILD/data/corpus.tok ]] || { echo "SKIP: $BUILD/data/corpus.tok not built"; exit 77; }
command -v mpirun > /dev/null || { echo "SKIP: mpirun not installed"; exit 77; }
command -v python3 > /dev/null || { echo "SKIP: python3 not installed"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMP_NUM_THREADS=1
unset ZT_COORDINATOR ZT_COORDINATOR_KEY
T=$(mktemp -d /tmp/zt_e2e_memprof_XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$T"/*.txt; do echo "--- $f"; tail -8 "$f"; done >&2; exit 1; }
source "$(dirname "$0")/lib/jobs.sh"

cat > "$T/job.yaml" <<YAML
train_micro_batch_size_per_gpu: 2
gradient_accumulation_steps: 1
steps_per_print: 5
model: {family: gpt2, vocab_size: 256, block_size: 32, n_layer: 3, n_head: 2, n_embd: 32, seed: 3}
data: {path: $BUILD/data/corpus.tok, format: llmc}
train: {steps: 6}
optimizer: {type: AdamW, params: {lr: 0.001}}
zero_optimization: {stage: 3, overlap_comm: true}
activation_checkpointing: {policy: layer}
comm: {heartbeat_timeout_s: 10, heartbeat_interval_s: 0.3}
YAML
RUN=$T/run
start_coordinator_job "$T/job.yaml" "$RUN" 2
wait_exit $MPID 180; [[ $RC == 0 ]] || fail "workers exited $RC"
wait_exit $CPID 30; [[ $RC == 0 ]] || fail "coordinator exited $RC"

# 1 and 2.
python3 - "$RUN" <<'PY' || fail "metrics.jsonl / memory.jsonl checks"
import json, sys
run = sys.argv[1]
cats = ["parameters", "gradients", "optimizer_states", "activations", "communication", "workspace"]
phases = ["forward", "backward", "recompute", "comm_wait", "optimizer", "offload_io", "other"]
metrics = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6], [m["step"] for m in metrics]
timeline = {}  # (step, rank) -> [phase labels in order]
for l in open(f"{run}/memory.jsonl"):
    e = json.loads(l)
    assert sorted(e["bytes"]) == sorted(cats), e
    assert all(e["peak_bytes"][c] >= e["bytes"][c] >= 0 for c in cats), e
    timeline.setdefault((e["step"], e["rank"]), []).append(e["phase"])
assert sorted(timeline) == [(s, r) for s in (1, 2, 5, 6) for r in (0, 1)], sorted(timeline)
L = 3
want = (["forward embeddings"] + [f"forward block {l}" for l in range(L)] + ["loss"] +
        sum([[f"recompute block {l}", f"backward block {l}"] for l in reversed(range(L))], []) +
        ["backward embeddings", "gradient reduction", "gradient norm", "optimizer"])
for key, parts in timeline.items():
    assert parts == want, (key, parts)
for m in metrics:
    assert set(m["time_ms"]) == set(phases), m["time_ms"]
    assert [t["rank"] for t in m["time_ms_by_rank"]] == [0, 1], m
    assert [c["rank"] for c in m["comm_bytes"]] == [0, 1], m
    assert all(c["bytes"] > 0 for c in m["comm_bytes"]), m["comm_bytes"]
    for t in m["time_ms_by_rank"]:
        assert all(t[p] >= 0 for p in phases), t
        # Each rank's phases add up to its step time; the line's step_ms is the slowest rank's.
        assert sum(t[p] for p in phases) <= m["step_ms"] * 1.0001 + 1e-3, (t, m["step_ms"])
    assert m["time_ms_by_rank"][0]["recompute"] > 0, m  # layer checkpointing re-runs blocks
    assert [p["rank"] for p in m["peak_phase"]] == [0, 1], m
    for p in m["peak_phase"]:
        for c in cats + ["total"]:
            label = p[c]
            assert isinstance(label, str) and label, (c, p)
            parts = timeline.get((m["step"], p["rank"]))
            if parts is not None:
                assert label in ("start of step", "other") or label in parts, (m["step"], c, label)
print("metrics and memory.jsonl ok; step 6 rank 0 peak phases:", metrics[-1]["peak_phase"][0])
PY
echo "1-2. metrics.jsonl has time_ms, time_ms_by_rank, comm_bytes, peak_phase; memory.jsonl has steps 1, 2, 5, 6"

# 3. ztctl memory.
"$ZTCTL" memory --run-dir "$RUN" > "$T/memory.txt" 2>&1 || fail "ztctl memory exited non-zero"
grep -q "step 6 (metrics.jsonl)" "$T/memory.txt" || fail "ztctl memory: not step 6"
grep -q "Memory timeline (memory.jsonl, step 6)" "$T/memory.txt" || fail "ztctl memory: no timeline"
python3 - "$RUN" "$T/memory.txt" <<'PY' || fail "ztctl memory does not show metrics.jsonl's peak phases"
import json, sys
last = [json.loads(l) for l in open(f"{sys.argv[1]}/metrics.jsonl")][-1]
text = open(sys.argv[2]).read()
blocks = text.split("\nrank ")
for p in last["peak_phase"]:
    block = next(b for b in blocks if b.startswith(f"{p['rank']}\n"))
    for c in ["parameters", "gradients", "optimizer_states", "activations", "communication",
              "workspace", "total"]:
        line = next(l for l in block.splitlines() if l.strip().startswith(c + " "))
        assert line.rstrip().endswith(p[c]), (p["rank"], c, line, p[c])
    parts = sum(1 for l in open(f"{sys.argv[1]}/memory.jsonl")
                if json.loads(l)["step"] == 6 and json.loads(l)["rank"] == p["rank"])
    assert f"rank {p['rank']}: {parts} parts" in text, (parts, text)
print("ztctl memory shows both ranks' peak phases")
PY
"$ZTCTL" memory --run-dir "$RUN" --json > "$T/memory.json" || fail "ztctl memory --json"
"$ZTCTL" memory --run-dir "$RUN" --step 4 --json > "$T/memory4.json" || fail "ztctl memory --step 4"
python3 - "$RUN" "$T/memory.json" "$T/memory4.json" <<'PY' || fail "ztctl memory --json"
import json, sys
last = [json.loads(l) for l in open(f"{sys.argv[1]}/metrics.jsonl")][-1]
j, j4 = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
assert j["step"] == 6 and j["timeline"]["step"] == 6, j
assert [r["rank"] for r in j["ranks"]] == [0, 1]
for r, p, b in zip(j["ranks"], last["peak_phase"], last["peak_memory_bytes"]):
    assert r["peak_phase"] == {k: v for k, v in p.items() if k != "rank"}, (r, p)
    assert r["peak_bytes"] == {k: v for k, v in b.items() if k != "rank"}, (r, b)
assert j4["step"] == 4 and j4["timeline"]["step"] == 2, j4
PY
cp -r "$RUN" "$T/bad"
sed -i '3s/.*/{"step": 3, "rank": oops}/' "$T/bad/memory.jsonl"
if "$ZTCTL" memory --run-dir "$T/bad" > "$T/bad.txt" 2>&1; then fail "a malformed memory.jsonl line was accepted"; fi
grep -q "memory.jsonl:3: not valid JSON" "$T/bad.txt" || fail "the error does not name memory.jsonl:3: $(cat "$T/bad.txt")"
echo "3. ztctl memory: peaks and the parts that set them per rank, --json, --step, a bad line named"

# 4. ztctl report draws the new charts with data.
"$ZTCTL" report --run-dir "$RUN" -o "$T/report.html" > "$T/report.txt" 2>&1 || fail "ztctl report"
for id in chart-step-time chart-step-time-ranks chart-comm chart-memory-phases-rank-0 \
  chart-memory-phases-rank-1; do
  grep -q "class=\"zt-chart\" id=\"$id\"" "$T/report.html" || fail "report: $id missing or a placeholder"
done
if grep -q 'class="zt-chart zt-placeholder" id="chart-\(step-time\|comm\|memory-phases\)' "$T/report.html"; then
  fail "report: a step-time, communication or memory-by-phase placeholder"
fi
echo "4. ztctl report: step time by phase, per rank, communication and memory by phase drawn"
echo "memory_profile: all checks passed"
