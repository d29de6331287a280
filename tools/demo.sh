#!/usr/bin/env bash
# The demo: trains the tiny GPT-2 on the shipped corpus and shows progress, then prints where the
# run directory is. Until the coordinator lands it runs one worker directly.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
BUILD_DIR=${ZT_BUILD_DIR:-build}
RUN_DIR=${1:-runs/demo-$(date +%Y%m%d-%H%M%S)}
echo "[demo] training configs/tiny.yaml on $(nproc) cores; run dir: $RUN_DIR"
"$BUILD_DIR/bin/zt-worker" --config configs/tiny.yaml --run-dir "$RUN_DIR" \
  --export "$RUN_DIR/model.safetensors"
echo "[demo] done. Run directory: $RUN_DIR"
echo "[demo]   metrics:  $RUN_DIR/metrics.jsonl"
echo "[demo]   events:   $RUN_DIR/events.log"
echo "[demo]   weights:  $RUN_DIR/model.safetensors (Hugging Face GPT-2 layout)"
