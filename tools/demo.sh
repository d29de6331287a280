#!/usr/bin/env bash
# The demo: trains the tiny GPT-2 on the shipped corpus with a coordinator and 2 workers under
# mpirun (ZeRO stage 2), shows progress, then prints where the run directory is. Ctrl-C stops it
# cleanly after the step in flight.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
BUILD_DIR=${ZT_BUILD_DIR:-build}
RUN_DIR=${1:-runs/demo-$(date +%Y%m%d-%H%M%S)}
NP=${ZT_DEMO_WORKERS:-2}
export OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader}
echo "[demo] ztctl launch: a coordinator and $NP workers train configs/tiny.yaml; run dir $RUN_DIR"
echo "[demo] watch it from another terminal: $BUILD_DIR/bin/ztctl top --run-dir $RUN_DIR"
"$BUILD_DIR/bin/ztctl" launch --config configs/tiny.yaml --np "$NP" --run-dir "$RUN_DIR"
echo "[demo] done. Run directory: $RUN_DIR"
echo "[demo]   metrics:  $RUN_DIR/metrics.jsonl (one line per step)"
echo "[demo]   events:   $RUN_DIR/events.log"
echo "[demo]   config:   $RUN_DIR/config.resolved.yaml"
echo "[demo]   checkpoint: $RUN_DIR/checkpoints/$(cat "$RUN_DIR/checkpoints/latest" 2> /dev/null || echo '(none)')"
echo "[demo] train on:  $BUILD_DIR/bin/ztctl launch --config configs/tiny.yaml --np $NP --run-dir $RUN_DIR --resume --steps 1200"
echo "[demo] export:    $BUILD_DIR/bin/ztctl export --checkpoint $RUN_DIR/checkpoints/$(cat "$RUN_DIR/checkpoints/latest" 2> /dev/null) --out model.safetensors"
