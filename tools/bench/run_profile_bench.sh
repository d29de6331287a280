#!/usr/bin/env bash
# Step profile and memory estimate through the real binaries: for each ZeRO stage, the small config
# (configs/small.yaml's model; bf16, micro-batch 4, checkpointing layer) runs under
# zt-coordinator + `mpirun -np N zt-worker`, and the run directory's own records are summarised:
# the step time by phase (time_ms, mean over the steps after the warm-up ones), bytes sent per
# rank per step (comm_bytes), and each rank's measured peak (peak_memory_bytes) against
# `ztctl estimate`. Builds nothing: expects $ZT_BUILD_DIR/bin (default build/). Prints markdown.
#   tools/bench/run_profile_bench.sh [--np N] [--steps S] [--stages "0 1 2 3 3+nvme"]
# A stage written "S+nvme" offloads the optimizer state to NVMe (a folder under /tmp), which is
# where offload_io shows.
set -euo pipefail
cd "$(dirname "$0")/../.."
NP=2
STEPS=8
WARMUP=2
STAGES="0 1 2 3 3+nvme"
while [[ $# -gt 0 ]]; do
  case $1 in
    --np) NP=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --stages) STAGES=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
BUILD=$(realpath "${ZT_BUILD_DIR:-build}")
CORES=$(nproc)  # before OMP_NUM_THREADS, which nproc honours
PY=/usr/bin/python3
for b in zt-coordinator zt-worker ztctl; do
  [[ -x $BUILD/bin/$b ]] || { echo "no $BUILD/bin/$b: build first (tools/setup.sh)" >&2; exit 1; }
done
[[ -f $BUILD/data/corpus.tok ]] || { echo "no $BUILD/data/corpus.tok: run tools/setup.sh" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMP_NUM_THREADS=1
T=$(mktemp -d /tmp/zt_profile_bench_XXXXXX)
trap 'rm -rf "$T"' EXIT

echo "# step profile: small model (10.8M), bf16, micro-batch 4 x 256 tokens, layer checkpointing, $NP ranks on $CORES cores"
echo
echo "| stage | step ms | forward | backward | recompute | comm_wait | optimizer | offload_io | other | sent MiB/rank/step | peak MiB/rank measured / estimated |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for stage in $STAGES; do
  cfg=$T/stage$stage.yaml
  "$PY" - "$cfg" "$stage" "$BUILD" "$STEPS" "$NP" <<'PY'
import sys
out, stage, build, steps, np_ = sys.argv[1:]
nvme = stage.endswith("+nvme")
stage = stage.split("+")[0]
offload = f", offload_optimizer: {{device: nvme, nvme_path: {out}.nvme}}" if nvme else ""
text = open("configs/small.yaml").read()
# Keep the model; the rest is the benchmark's.
model = text[text.index("model:"):text.index("data:")]
open(out, "w").write(f"""train_micro_batch_size_per_gpu: 4
gradient_accumulation_steps: 1
steps_per_print: 1000
{model}
data: {{path: {build}/data/corpus.tok, format: llmc}}
train: {{steps: {steps}}}
optimizer: {{type: AdamW, params: {{lr: 6.0e-4}}}}
bf16: {{enabled: true}}
zero_optimization: {{stage: {stage}, overlap_comm: true, stage3_prefetch_bucket_size: 2000000{offload}}}
activation_checkpointing: {{policy: layer}}
checkpoint: {{at_end: false}}
""")
PY
  mkdir -p "$cfg.nvme"
  "$BUILD/bin/ztctl" estimate --config "$cfg" --world "$NP" --json > "$T/est$stage.json"
  "$BUILD/bin/zt-coordinator" --config "$cfg" --run-dir "$T/run$stage" --world "$NP" \
    > "$T/coord$stage.txt" 2>&1 &
  cpid=$!
  for _ in $(seq 1 100); do [[ -s $T/run$stage/coordinator.endpoint ]] && break; sleep 0.1; done
  mpirun -np "$NP" --oversubscribe "$BUILD/bin/zt-worker" \
    --coordinator "$(cat "$T/run$stage/coordinator.endpoint")" --run-dir "$T/run$stage" \
    > "$T/workers$stage.txt" 2>&1 || { cat "$T/workers$stage.txt" >&2; exit 1; }
  wait "$cpid"
  "$PY" - "$T/run$stage/metrics.jsonl" "$T/est$stage.json" "$stage" "$WARMUP" <<'PY'
import json, sys
path, est_path, label, warmup = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
stage, offload = int(label.split("+")[0]), "nvme" if label.endswith("+nvme") else "none"
steps = [json.loads(l) for l in open(path)][warmup:]
phases = ["forward", "backward", "recompute", "comm_wait", "optimizer", "offload_io", "other"]
mean = lambda xs: sum(xs) / len(xs)
t = {p: mean([s["time_ms"][p] for s in steps]) for p in phases}
step_ms = mean([s["step_ms"] for s in steps])
sent = mean([mean([c["bytes"] for c in s["comm_bytes"]]) for s in steps]) / 2**20
cats = ["parameters", "gradients", "optimizer_states", "activations", "communication", "workspace"]
# Per rank: the compute memory plus offloaded state in host memory (this is the CPU backend).
peak = max(sum(r[c] for c in cats) + o["resident"] for s in steps
           for r, o in zip(s["peak_memory_bytes"], s["offload_bytes"])) / 2**20
rows = json.load(open(est_path))["rows"]
est = [r for r in rows if r["stage"] == stage and r["offload_optimizer"] == offload
       and r["policy"] == "layer"][0]["needed"] / 2**20
cells = " | ".join(f"{t[p]:.0f}" for p in phases)
print(f"| {label} | {step_ms:.0f} | {cells} | {sent:.1f} | {peak:.1f} / {est:.1f} |")
PY
done
