#!/usr/bin/env bash
# Training-step benchmark on this machine's CPU: zerotrain against PyTorch (same model, same
# cores, torch.set_num_threads = cores) for the tiny and small configs, then peak activation
# memory and step time per activation-checkpointing policy. Prints markdown tables.
#   tools/bench/run_bench.sh [--steps N] [--micro-batch B]
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=5
MICRO=8
while [[ $# -gt 0 ]]; do
  case $1 in
    --steps) STEPS=$2; shift 2 ;;
    --micro-batch) MICRO=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
BUILD=${ZT_BUILD_DIR:-build}
BENCH=$BUILD/bin/bench_train_step
PY=/usr/bin/python3
THREADS=$(nproc)
[[ -x $BENCH ]] || { echo "build first: tools/setup.sh" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "## Training step, fp32, micro-batch $MICRO, $THREADS threads ($(lscpu | sed -n 's/^Model name: *//p'))"
echo
echo "| config | params | zerotrain tokens/s | PyTorch tokens/s | ratio |"
echo "|---|---|---|---|---|"
for cfg in tiny small; do
  "$BENCH" --config configs/$cfg.yaml --micro-batch "$MICRO" --steps "$STEPS" --warmup 2 > "$TMP/zt_$cfg.json"
  OMP_NUM_THREADS=$THREADS "$PY" tools/bench/torch_step.py --config configs/$cfg.yaml \
    --micro-batch "$MICRO" --steps "$STEPS" --warmup 2 --threads "$THREADS" > "$TMP/pt_$cfg.json"
  "$PY" - "$TMP/zt_$cfg.json" "$TMP/pt_$cfg.json" "$cfg" <<'PY'
import json, sys
zt, pt = (json.load(open(p)) for p in sys.argv[1:3])
print(f"| {sys.argv[3]} | {zt['params']/1e6:.2f}M | {zt['tokens_per_s']:.0f} | "
      f"{pt['tokens_per_s']:.0f} | {zt['tokens_per_s']/pt['tokens_per_s']:.2f}x |")
PY
done

echo
echo "## Activation checkpointing, small config, micro-batch $MICRO"
echo
echo "| policy | peak activations (MiB) | saving | step ms | step time vs none |"
echo "|---|---|---|---|---|"
for policy in none selective every_n layer; do
  "$BENCH" --config configs/small.yaml --micro-batch "$MICRO" --steps "$STEPS" --warmup 2 \
    --policy $policy --every-n 2 > "$TMP/pol_$policy.json"
done
"$PY" - "$TMP" <<'PY'
import json, sys, os
d = sys.argv[1]
rows = {p: json.load(open(os.path.join(d, f"pol_{p}.json")))
        for p in ["none", "selective", "every_n", "layer"]}
base = rows["none"]
for p, r in rows.items():
    act = r["activation_peak_bytes"]
    print(f"| {r['policy']} | {act/2**20:.1f} | {100*(1-act/base['activation_peak_bytes']):.0f}% | "
          f"{r['step_ms_median']:.0f} | {100*(r['step_ms_median']/base['step_ms_median']-1):+.0f}% |")
PY
