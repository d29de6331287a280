#!/usr/bin/env bash
# Convergence of the memory-saving optimizers against AdamW through the real zt-worker: the small
# config's model (configs/small.yaml: 10.8M parameters, GPT-2 6x384, byte tokens) trained for
# --steps steps (default 200) on the shipped corpus with each optimizer: the same data order, seed,
# global batch (2 ranks x micro-batch 8 x 128 tokens by default), ZeRO stage 1, fp32, gradient
# clipping 1.0. The claim tested: "8-bit AdamW and Adafactor end within 3% of AdamW's loss". The
# final loss is the mean of the last 10 steps' training loss (each step's loss is on that step's
# batch, before its update; every optimizer sees the same batches). Prints a markdown table.
#
# Settings (written so they can be quoted):
#   AdamW          lr 6e-4 (--lr), betas [0.9, 0.95], eps 1e-8, weight_decay 0.1 (small.yaml);
#                  WarmupCosineLR: linear warmup over steps/10, cosine to 0.1 x lr at --steps
#   AdamW8bit      the same hyperparameters and schedule (blockwise 8-bit moments)
#   Adafactor      relative_step false, scale_parameter false, lr 6e-4 (--adafactor-lr) with the
#                  same schedule, beta1 0.9 (a first moment: 8 B/param of state with the master
#                  weights, against AdamW's 12), clip_threshold 1.0, decay_rate -0.8,
#                  eps [1e-30, 1e-3], weight_decay 0.1
#   Adafactor (no first moment)  the same with beta1 null: the factored form (4 B/param + the
#                  row/column factors), the one that saves the most memory
#   Adafactor (HF) Hugging Face's defaults: relative_step (lr = min(1e-2, 1/sqrt(t))),
#                  scale_parameter (x RMS of the parameter), beta1 null, no scheduler (refused
#                  with relative_step), weight_decay 0 — shown because they are the defaults.
# Measured here (200 steps, 2 shared cores; final, gap vs AdamW at the same lr): AdamW8bit
# +0.003% (1.8525 vs 1.8525). Adafactor with beta1 0.9: +3.6% at lr 6e-4, +3.5% at lr 1e-3 (AdamW
# 1.6048 there). Adafactor without a first moment: +11.6% at 6e-4, its best of {3e-4, 6e-4, 1e-3,
# 3e-3} (+15.8%, +11.6%, +22.7%, +35.5% against AdamW at 6e-4). Hugging Face's defaults: +16.4%.
# So at this size and length the claim holds for 8-bit AdamW and not for Adafactor, narrowly
# with a first moment and clearly without one. Takes long on a few cores (each run is --steps
# full steps of the 10.8M model): 5-10 min per optimizer on 2 shared cores at the defaults.
# Builds nothing: expects $ZT_BUILD_DIR (default build/) to hold bin/zt-worker and
# data/corpus.tok.
#   tools/bench/run_optimizer_convergence.sh [--steps N] [--np N] [--micro-batch B] [--seq-len T]
#     [--lr LR] [--adafactor-lr LR] [--only NAME,NAME] [--keep DIR]
#   --lr: AdamW's and AdamW8bit's lr (6e-4), and Adafactor's unless --adafactor-lr is given.
#   --only: AdamW8bit, Adafactor, Adafactor_nofm, Adafactor_HF (AdamW always runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=200
NP=2
MICRO=8
SEQ=128
ONLY=
KEEP=
LR=6.0e-4
AF_LR=
while [[ $# -gt 0 ]]; do
  case $1 in
    --steps) STEPS=$2; shift 2 ;;
    --np) NP=$2; shift 2 ;;
    --micro-batch) MICRO=$2; shift 2 ;;
    --seq-len) SEQ=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --lr) LR=$2; shift 2 ;;
    --adafactor-lr) AF_LR=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
BUILD=$(cd "${ZT_BUILD_DIR:-build}" && pwd)
WORKER=$BUILD/bin/zt-worker
PY=/usr/bin/python3
[[ -x $WORKER ]] || { echo "no $WORKER: build first (tools/setup.sh)" >&2; exit 1; }
[[ -f $BUILD/data/corpus.tok ]] ||
  { echo "no $BUILD/data/corpus.tok: run tools/setup.sh" >&2; exit 1; }
command -v mpirun > /dev/null || { echo "mpirun not found: install openmpi-bin" >&2; exit 1; }
((STEPS >= 20)) || { echo "--steps must be at least 20" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
CORES=$(nproc)
THREADS=$((CORES / NP))
((THREADS >= 1)) || THREADS=1
export OMP_NUM_THREADS=$THREADS
if [[ -n $KEEP ]]; then
  mkdir -p "$KEEP"
  T=$(cd "$KEEP" && pwd)
else
  T=$(mktemp -d /tmp/zt_conv_bench_XXXXXX)
  trap 'rm -rf "$T"' EXIT
fi

WARMUP=$((STEPS / 10))
SCHED="{type: WarmupCosineLR, params: {total_num_steps: $STEPS, warmup_num_steps: $WARMUP,"
SCHED+=" warmup_type: linear, cos_min_ratio: 0.1}}"
AF_LR=${AF_LR:-$LR}
ADAM_P="{lr: $LR, betas: [0.9, 0.95], eps: 1.0e-8, weight_decay: 0.1}"
AF_P="lr: $AF_LR, relative_step: false, scale_parameter: false, clip_threshold: 1.0,"
AF_P+=" decay_rate: -0.8, eps: [1.0e-30, 1.0e-3], weight_decay: 0.1"
NAMES=(AdamW AdamW8bit Adafactor Adafactor_nofm Adafactor_HF)
declare -A OPT=(
  [AdamW]="{type: AdamW, params: $ADAM_P}"
  [AdamW8bit]="{type: AdamW8bit, params: $ADAM_P}"
  [Adafactor]="{type: Adafactor, params: {$AF_P, beta1: 0.9}}"
  [Adafactor_nofm]="{type: Adafactor, params: {$AF_P, beta1: null}}"
  [Adafactor_HF]="{type: Adafactor}"
)
declare -A SCHED_OF=([AdamW]=$SCHED [AdamW8bit]=$SCHED [Adafactor]=$SCHED [Adafactor_nofm]=$SCHED
  [Adafactor_HF]="")
MODEL="{family: gpt2, vocab_size: 256, block_size: $SEQ, n_layer: 6, n_head: 6, n_embd: 384,"
MODEL+=" seed: 1337}"

run() {  # NAME
  local name=$1 cfg=$T/$1.yaml
  {
    echo "train_micro_batch_size_per_gpu: $MICRO"
    echo "gradient_accumulation_steps: 1"
    echo "gradient_clipping: 1.0"
    echo "steps_per_print: 20"
    echo "model: $MODEL"
    echo "data: {path: $BUILD/data/corpus.tok, format: llmc, shuffle: false}"
    echo "train: {steps: $STEPS}"
    echo "optimizer: ${OPT[$name]}"
    if [[ -n ${SCHED_OF[$name]} ]]; then echo "scheduler: ${SCHED_OF[$name]}"; fi
    echo "zero_optimization: {stage: 1}"
    echo "checkpoint: {at_end: false}"
  } > "$cfg"
  rm -rf "$T/$name"
  local t0=$SECONDS
  if ! mpirun -np "$NP" --oversubscribe --bind-to none "$WORKER" --config "$cfg" \
      --run-dir "$T/$name" > "$T/$name.txt" 2>&1; then
    echo "$name: zt-worker failed:" >&2
    tail -5 "$T/$name.txt" >&2
    exit 1
  fi
  echo "$name: $STEPS steps in $((SECONDS - t0)) s" >&2
}

RAN=()
for name in "${NAMES[@]}"; do
  if [[ -n $ONLY && ",$ONLY," != *",$name,"* && $name != AdamW ]]; then continue; fi
  run "$name"
  RAN+=("$name")
done

"$PY" - "$T" "$STEPS" "$NP" "$MICRO" "$SEQ" "$LR" "$AF_LR" "${RAN[@]}" <<'PY'
import json, os, statistics, sys
d, steps, np_, micro, seq = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
lr, af_lr = sys.argv[6], sys.argv[7]
names = sys.argv[8:]
rows = {}
for n in names:
    with open(os.path.join(d, n, "metrics.jsonl")) as f:
        rows[n] = [json.loads(l) for l in f if l.strip()]
    assert len(rows[n]) == steps, (n, len(rows[n]))
def final(n):
    return statistics.fmean(r["loss"] for r in rows[n][-10:])
ref = final("AdamW")
marks = sorted({1, steps // 4, steps // 2, 3 * steps // 4, steps})
label = {"AdamW": f"AdamW (lr {lr})", "AdamW8bit": f"AdamW8bit (lr {lr})",
         "Adafactor": f"Adafactor (lr {af_lr}, schedule, beta1 0.9)",
         "Adafactor_nofm": f"Adafactor (lr {af_lr}, schedule, no first moment)",
         "Adafactor_HF": "Adafactor (HF defaults: relative_step, scale_parameter)"}
print(f"## Convergence: small config (10.8M params), {steps} steps, {np_} ranks x micro-batch "
      f"{micro} x {seq} tokens, ZeRO 1, fp32, same data and seed")
print()
print("final = mean training loss of the last 10 steps; gap = final / AdamW's final - 1; "
      "claim: gap <= +3% (a lower loss than AdamW's satisfies it).")
print()
print("| optimizer | " + " | ".join(f"loss @{s}" for s in marks) +
      " | final (last 10) | gap vs AdamW | at most +3% |")
print("|---|" + "---|" * len(marks) + "---|---|---|")
for n in names:
    f = final(n)
    gap = f / ref - 1.0
    cells = " | ".join(f"{rows[n][s - 1]['loss']:.4f}" for s in marks)
    ok = "yes" if gap <= 0.03 else "no"
    print(f"| {label[n]} | {cells} | {f:.4f} | {100 * gap:+.2f}% | {ok if n != 'AdamW' else '-'} |")
PY
