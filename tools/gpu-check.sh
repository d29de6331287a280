#!/usr/bin/env bash
# tools/gpu-check.sh: the CUDA backend's whole check on a GPU machine, in one call:
#   1. build (CUDA on: kernels for sm_80 and sm_90),
#   2. every CUDA test (tests/cuda: each op against its CPU twin, the training step against the CPU
#      backend, ZeRO stages and offload on one GPU with NCCL, the NCCL communicator), then the op
#      tests again under compute-sanitizer (memcheck) where it works,
#   3. the benchmarks: the device's ceilings, every kernel against them, GPT-2 124M training
#      tokens/s and MFU beside PyTorch eager (bf16 autocast, SDPA) at each one's largest micro-batch,
#      and the largest GPT-2-shaped model ZeRO-3 + CPU offload trains on one GPU,
# then prints one table (and writes gpu-check.jsonl / gpu-check.md to $OUT or the build dir).
#
# Modes:
#   tools/gpu-check.sh                 on a GPU machine with the project's packages: setup, build,
#                                      test, benchmark.
#   tools/gpu-check.sh --bundle        on a machine WITHOUT a GPU but with the packages (this
#                                      workplace's dev machine): builds the CUDA binaries for sm_90
#                                      and packs them with the shared libraries they need (not
#                                      glibc, not CUDA's) into .gpu/bundle.tar.xz (git-ignored).
#   tools/gpu-check.sh --from-bundle   on a bare GPU machine that has CUDA 13 and PyTorch but none
#                                      of the Debian packages (this workplace's device machine):
#                                      unpacks .gpu/bundle.tar.xz and runs steps 2-3.
# Environment: ZT_GPU_BUDGET_S bounds the offload search (default 150 s); ZT_GPU_SKIP_SANITIZER=1
# skips compute-sanitizer.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-full}
RESULTS=${OUT:-$ROOT/.gpu}
mkdir -p "$RESULTS"
JSONL=$RESULTS/gpu-check.jsonl
: > "$JSONL"
FAILED=0

note() { printf '\n== %s\n' "$*"; }

build_cuda() {  # build_cuda DIR ARCHS NATIVE
  cmake -S "$ROOT" -B "$1" -DCMAKE_BUILD_TYPE=Release -DZT_ENABLE_CUDA=ON -DZT_WERROR=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$2" -DZT_NATIVE="$3" >/dev/null || return 1
  cmake --build "$1" -j "$(nproc)" --target cuda_smoke_test cuda_ops_test cuda_training_test \
    nccl_communicator_test bench_cuda
}

if [[ $MODE == --bundle ]]; then
  tools/setup.sh >/dev/null || exit 1
  command -v /usr/local/cuda/bin/nvcc >/dev/null || { echo "gpu-check: nvcc not found"; exit 1; }
  BUILD=$ROOT/build-gpu
  build_cuda "$BUILD" 90 OFF || exit 1
  STAGE=$(mktemp -d)
  mkdir -p "$STAGE/bundle/bin" "$STAGE/bundle/lib"
  for b in cuda_smoke_test cuda_ops_test cuda_training_test nccl_communicator_test bench_cuda; do
    cp "$BUILD/bin/$b" "$STAGE/bundle/bin/"
  done
  # The shared libraries the binaries need, except glibc's, the compiler runtime's and CUDA's
  # (the GPU machine has its own CUDA 13 and a newer glibc/libstdc++).
  ldd "$STAGE"/bundle/bin/* | awk '/=> \//{print $3}' | sort -u |
    grep -Ev '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libnccl)\.so' |
    while read -r lib; do cp -L "$lib" "$STAGE/bundle/lib/"; done
  # Open MPI's own plugins are loaded only by MPI_Init, which these binaries never call.
  mkdir -p .gpu
  tar -C "$STAGE" -cJf .gpu/bundle.tar.xz bundle
  rm -rf "$STAGE"
  ls -l .gpu/bundle.tar.xz
  echo "gpu-check: bundle ready; on the GPU machine run: tools/gpu-check.sh --from-bundle"
  exit 0
fi

if [[ $MODE == --from-bundle ]]; then
  [[ -f .gpu/bundle.tar.xz ]] || { echo "gpu-check: .gpu/bundle.tar.xz missing (run --bundle first)"; exit 1; }
  BIN_ROOT=$(mktemp -d)
  tar -C "$BIN_ROOT" -xJf .gpu/bundle.tar.xz
  BIN=$BIN_ROOT/bundle/bin
  # CUDA's libraries: the toolkit's, or the pip wheels PyTorch brings (NCCL is only there).
  CUDA_LIBS=$(python3 - <<'PY' 2>/dev/null
import glob, os
dirs = ["/usr/local/cuda/lib64"]
try:
    import nvidia, os.path as p
    for d in nvidia.__path__:
        dirs += glob.glob(p.join(d, "*", "lib"))
except Exception:
    pass
print(":".join(d for d in dirs if os.path.isdir(d)))
PY
)
  export LD_LIBRARY_PATH=$BIN_ROOT/bundle/lib:$CUDA_LIBS:${LD_LIBRARY_PATH:-}
else
  tools/setup.sh >/dev/null || exit 1
  BUILD=$ROOT/build-gpu
  build_cuda "$BUILD" "80;90" ON || exit 1
  BIN=$BUILD/bin
fi

note "device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

note "CUDA tests"
for t in cuda_smoke_test cuda_ops_test nccl_communicator_test cuda_training_test; do
  if "$BIN/$t" --gtest_brief=1 --gtest_output="json:$RESULTS/$t.json"; then
    echo "{\"bench\":\"test\",\"test\":\"$t\",\"ok\":true}" >> "$JSONL"
  else
    echo "{\"bench\":\"test\",\"test\":\"$t\",\"ok\":false}" >> "$JSONL"
    FAILED=1
  fi
done
if [[ ${ZT_GPU_SKIP_SANITIZER:-0} != 1 ]] && command -v compute-sanitizer >/dev/null; then
  note "compute-sanitizer (memcheck) on the op tests"
  if compute-sanitizer --tool memcheck --error-exitcode 9 "$BIN/cuda_ops_test" --gtest_brief=1 \
      --gtest_filter='*Elementwise*:*Encoder*:*LayerNorm*:*Attention*:*SoftmaxCrossEntropy*:*EightBit*:*Adafactor*' \
      > "$RESULTS/sanitizer.log" 2>&1; then
    echo '{"bench":"test","test":"compute-sanitizer memcheck","ok":true}' >> "$JSONL"
  else
    echo '{"bench":"test","test":"compute-sanitizer memcheck","ok":false}' >> "$JSONL"
    tail -30 "$RESULTS/sanitizer.log"
    FAILED=1
  fi
fi

note "benchmarks"
"$BIN/bench_cuda" kernels | tee -a "$JSONL"
"$BIN/bench_cuda" train --config configs/gpt2-124m.yaml | tee -a "$JSONL"
PYTHONUNBUFFERED=1 python3 tools/bench/torch_gpt2_cuda.py --config configs/gpt2-124m.yaml | tee -a "$JSONL"
"$BIN/bench_cuda" offload-search --budget-s "${ZT_GPU_BUDGET_S:-150}" | tee -a "$JSONL"

note "summary"
python3 - "$JSONL" "$RESULTS/gpu-check.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
out = []
def p(s=""):
    out.append(s)
p("| check | result |")
p("|---|---|")
for r in rows:
    if r["bench"] == "test":
        p(f"| test {r['test']} | {'pass' if r['ok'] else 'FAIL'} |")
for r in rows:
    if r["bench"] == "ceiling":
        p(f"\n{r['device']}: measured copy {r['copy_gbs']:.0f} GB/s (read + write), "
          f"bf16 GEMM 8192^3 {r['bf16_gemm_tflops']:.0f} TFLOP/s")
p()
p("| kernel | ms | achieved | % of ceiling |")
p("|---|---|---|---|")
for r in rows:
    if r["bench"] == "kernel":
        ach = f"{r['tflops']:.1f} TFLOP/s" if "tflops" in r else f"{r.get('gbs', 0):.0f} GB/s"
        p(f"| {r['op']} ({r['dtype']}) | {r['ms']:.3f} | {ach} | {r.get('pct_of_ceiling', 0):.0f}% |")
p()
p("| training (one GPU, bf16) | params | micro-batch | step ms | tokens/s | MFU |")
p("|---|---|---|---|---|---|")
train = {r["impl"]: r for r in rows if r["bench"] == "train"}
for impl, r in train.items():
    p(f"| {impl} | {r['params']/1e6:.1f}M | {r['micro_batch']} | {r['step_ms']:.1f} | "
      f"{r['tokens_per_s']:,.0f} | {100*r['mfu']:.1f}% |")
if "zerotrain" in train and "pytorch-eager" in train:
    p(f"\nzerotrain / PyTorch eager tokens/s: "
      f"{train['zerotrain']['tokens_per_s']/train['pytorch-eager']['tokens_per_s']:.2f}x")
p()
p("| ZeRO-3 + CPU offload | params | tokens/s | MFU | result |")
p("|---|---|---|---|---|")
for r in rows:
    if r["bench"] == "offload":
        if r["ok"]:
            p(f"| {r['model']} | {r['params']/1e9:.2f}B | {r['tokens_per_s']:,.0f} | "
              f"{100*r['mfu']:.1f}% | trains |")
        else:
            p(f"| {r['model']} | | | | {r['error'][:120]} |")
text = "\n".join(out)
open(sys.argv[2], "w").write(text + "\n")
print(text)
PY
exit $FAILED
