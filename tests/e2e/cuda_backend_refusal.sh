#!/usr/bin/env bash
# backend: cuda where it cannot run is refused, never run on the CPU instead (DESIGN.md: nothing
# falls back silently). Through the real zt-worker under mpirun -np 2, with the tiny config turned
# to backend: cuda:
#   - a CUDA build on a machine without a usable GPU says "no usable CUDA device";
#   - a CPU-only build says it "was built without CUDA";
# either way every rank exits non-zero, names backend: cuda, and the run dir gets no metrics.
# On a machine with a GPU the refusal cannot happen: the test skips (tests/cuda cover that case).
set -euo pipefail
BUILD=${ZT_BUILD_DIR:?}
SRC=${ZT_SOURCE_DIR:?}
WORKER=$BUILD/bin/zt-worker
[[ -x $WORKER ]] || { echo "SKIP: $WORKER not built"; exit 77; }
[[ -f $BUILD/data/corpus.tok ]] || { echo "SKIP: $BUILD/data/corpus.tok not built"; exit 77; }
command -v mpirun > /dev/null || { echo "SKIP: mpirun not installed"; exit 77; }
if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then
  echo "SKIP: this machine has a GPU, so backend: cuda is not refused here"
  exit 77
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMP_NUM_THREADS=1
T=$(mktemp -d /tmp/zt_e2e_cuda_refusal_XXXXXX)
trap 'rm -rf "$T"' EXIT

sed -e "s#^backend:.*##" "$SRC/configs/tiny.yaml" > "$T/cuda.yaml"
sed -i -e "s#path: .*corpus.tok#path: $BUILD/data/corpus.tok#" "$T/cuda.yaml"
printf '\nbackend: cuda\n' >> "$T/cuda.yaml"

set +e
timeout 120 mpirun -np 2 --oversubscribe "$WORKER" --config "$T/cuda.yaml" --run-dir "$T/run" \
  > "$T/out.log" 2>&1
rc=$?
set -e
cat "$T/out.log"
if [[ $rc == 0 ]]; then
  echo "FAIL: backend: cuda ran on a machine without a usable GPU (exit 0)"
  exit 1
fi
if [[ $rc == 124 ]]; then
  echo "FAIL: the refusal hung (killed after 120 s)"
  exit 1
fi
if ! grep -q "backend: cuda" "$T/out.log"; then
  echo "FAIL: the error does not name backend: cuda"
  exit 1
fi
if ! grep -Eq "no usable CUDA device|built without CUDA" "$T/out.log"; then
  echo "FAIL: the error does not say why backend: cuda cannot run"
  exit 1
fi
if [[ -s $T/run/metrics.jsonl ]]; then
  echo "FAIL: a refused job wrote metrics"
  exit 1
fi
echo "PASS: backend: cuda refused with exit $rc"
