#!/usr/bin/env bash
# CI-sized check of the claim "8-bit AdamW and Adafactor end within 3% of AdamW's loss"
# (tools/bench/run_optimizer_convergence.sh measures it on the small config). Through the real
# zt-worker, one rank: a 118K-parameter GPT-2 (2 layers, width 64, 64 tokens) trained 200 steps on
# the shipped corpus, micro-batch 8, fp32, gradient clipping 1.0, the same data, seed and batches
# for every optimizer. final = the mean training loss of the last 10 steps.
#   AdamW      lr 3e-3, betas [0.9, 0.95], eps 1e-8, weight_decay 0.1, WarmupCosineLR (20 warmup
#              steps, cosine to 0.1 x lr at 200). 3e-3 is AdamW's best of {1e-3, 3e-3, 6e-3, 1e-2}
#              on this model (final 2.66, 2.46, 2.83, 2.94), so the reference is not handicapped.
#   AdamW8bit  the same hyperparameters and schedule.
#   Adafactor  relative_step false, scale_parameter false, lr 3e-3 with the same schedule,
#              weight_decay 0.1, the other parameters Hugging Face's defaults; twice: beta1 0.9
#              (with a first moment) and beta1 null (none: the factored, memory-saving form).
# Asserted: AdamW learned (final below 60% of the first step's loss); the finals of AdamW8bit and
# of both Adafactor forms are at most 3% above AdamW's (a lower loss is not a failure of the
# claim). Printed, not asserted: Adafactor with Hugging Face's defaults (relative_step,
# scale_parameter, no scheduler), ~3.4% above AdamW here.
# At this size the claim holds (AdamW8bit -0.1%, Adafactor -1.6% / -2.2%). On the small config
# (tools/bench/run_optimizer_convergence.sh, 200 steps) it holds only for AdamW8bit (+0.0%):
# Adafactor with beta1 0.9 ends +3.6% (lr 6e-4) and +3.5% (lr 1e-3) above AdamW at the same lr,
# without a first moment +11.6% at best, with Hugging Face's defaults +16.4%. This test guards
# the CI-sized claim, not the small-config one.
set -euo pipefail
BUILD=${ZT_BUILD_DIR:?}
WORKER=$BUILD/bin/zt-worker
PY=/usr/bin/python3
[[ -x $WORKER ]] || { echo "SKIP: $WORKER not built"; exit 77; }
[[ -f $BUILD/data/corpus.tok ]] || { echo "SKIP: $BUILD/data/corpus.tok not built"; exit 77; }
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
T=$(mktemp -d /tmp/zt_e2e_conv_XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
START=$SECONDS

STEPS=200
SCHED="scheduler: {type: WarmupCosineLR, params: {total_num_steps: $STEPS, warmup_num_steps: 20,"
SCHED+=" warmup_type: linear, cos_min_ratio: 0.1}}"
ADAM_P="{lr: 3.0e-3, betas: [0.9, 0.95], eps: 1.0e-8, weight_decay: 0.1}"
run() {  # NAME OPTIMIZER_YAML SCHEDULER_LINE
  cat > "$T/$1.yaml" <<YAML
train_micro_batch_size_per_gpu: 8
gradient_accumulation_steps: 1
gradient_clipping: 1.0
steps_per_print: 1000
model: {family: gpt2, vocab_size: 256, block_size: 64, n_layer: 2, n_head: 2, n_embd: 64,
        seed: 1337}
data: {path: $BUILD/data/corpus.tok, format: llmc, shuffle: false}
train: {steps: $STEPS}
optimizer: $2
$3
checkpoint: {at_end: false}
YAML
  timeout -k 5 120 "$WORKER" --config "$T/$1.yaml" --run-dir "$T/$1" > "$T/$1.txt" 2>&1 ||
    fail "$1: zt-worker exited $?: $(tail -3 "$T/$1.txt")"
}
run AdamW "{type: AdamW, params: $ADAM_P}" "$SCHED"
run AdamW8bit "{type: AdamW8bit, params: $ADAM_P}" "$SCHED"
AF_P="lr: 3.0e-3, relative_step: false, scale_parameter: false, weight_decay: 0.1"
run Adafactor "{type: Adafactor, params: {$AF_P, beta1: 0.9}}" "$SCHED"
run Adafactor_nofm "{type: Adafactor, params: {$AF_P, beta1: null}}" "$SCHED"
run Adafactor_HF "{type: Adafactor}" ""

"$PY" - "$T" $STEPS <<'PY'
import json, statistics, sys
d, steps = sys.argv[1], int(sys.argv[2])
def rows(n):
    with open(f"{d}/{n}/metrics.jsonl") as f:
        r = [json.loads(l) for l in f if l.strip()]
    assert len(r) == steps, f"{n}: {len(r)} steps"
    return r
def final(n):
    return statistics.fmean(x["loss"] for x in rows(n)[-10:])
ref, first = final("AdamW"), rows("AdamW")[0]["loss"]
print(f"AdamW: step 1 loss {first:.4f}, final (mean of last 10) {ref:.4f}")
failed = []
if not ref < 0.6 * first:
    failed.append(f"AdamW did not learn: final {ref:.4f} vs step 1 {first:.4f}")
for n, asserted in (("AdamW8bit", True), ("Adafactor", True), ("Adafactor_nofm", True),
                    ("Adafactor_HF", False)):
    f = final(n)
    gap = f / ref - 1.0
    ok = gap <= 0.03
    tag = ("ok" if ok else "FAILS the 3% bound") if asserted else \
        ("within 3%" if ok else "not within 3%") + " (informational, not asserted)"
    print(f"{n}: final {f:.4f}, {100 * gap:+.2f}% vs AdamW: {tag}")
    if asserted and not ok:
        failed.append(f"{n} ends {100 * gap:.2f}% above AdamW ({f:.4f} vs {ref:.4f})")
if failed:
    print("FAIL: " + "; ".join(failed), file=sys.stderr)
    sys.exit(1)
PY
echo "optimizer_convergence: all checks passed in $((SECONDS - START)) s"
