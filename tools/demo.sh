#!/usr/bin/env bash
# The demo: trains the tiny GPT-2 on the shipped corpus with 2 workers under mpirun (ZeRO stage 2),
# shows progress, then prints where the run directory is. Until the coordinator lands the workers
# run the job on their own (rank 0 writes the run directory).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
BUILD_DIR=${ZT_BUILD_DIR:-build}
RUN_DIR=${1:-runs/demo-$(date +%Y%m%d-%H%M%S)}
NP=${ZT_DEMO_WORKERS:-2}
export OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader}
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
# Share the cores between the workers instead of letting each spin up one thread per core.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / NP > 0 ? $(nproc) / NP : 1 ))}
echo "[demo] training configs/tiny.yaml with $NP workers (mpirun), $OMP_NUM_THREADS thread(s) each; run dir: $RUN_DIR"
mpirun -np "$NP" --oversubscribe "$BUILD_DIR/bin/zt-worker" --config configs/tiny.yaml \
  --run-dir "$RUN_DIR" --export "$RUN_DIR/model.safetensors"
echo "[demo] done. Run directory: $RUN_DIR"
echo "[demo]   metrics:  $RUN_DIR/metrics.jsonl"
echo "[demo]   events:   $RUN_DIR/events.log"
echo "[demo]   weights:  $RUN_DIR/model.safetensors (Hugging Face GPT-2 layout)"
