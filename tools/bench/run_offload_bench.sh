#!/usr/bin/env bash
# Optimizer-state offload benchmark through the real zt-worker (mpirun, no coordinator): the small
# config's model (configs/small.yaml: GPT-2 6x384, 10.8M parameters) in bf16 on --np ranks (2) at
# ZeRO --stage (2), micro-batch 4 x 128 tokens per rank, --steps timed steps (10) after --warmup
# steps (2), AdamW.
#  1. State in memory, offloaded to cpu, on nvme with the default buffers (buffer_count 4 x
#     buffer_size 1048576) and on nvme with smaller buffers (--small-buffer, 65536): median step
#     time, and per rank the optimizer state (master weights + exp_avg + exp_avg_sq) resident in
#     the device tracker (metrics.jsonl peak_memory_bytes.optimizer_states), resident in host
#     memory outside that tracker (cpu: the arrays; nvme: the streaming buffers, computed from the
#     store's chunking, Note [state chunks]), on disk (the state file under nvme_path, its size
#     measured while the job runs), and the peak RSS of the worker processes (VmHWM, sampled).
#  2. The other optimizers, state in memory: median step time in the same setup, and bytes of
#     optimizer state per parameter measured on one rank at ZeRO stage 0 in bf16 (so the fp32
#     master weights are state, not the working weights): peak optimizer_states / parameters,
#     against optimizer_state_bytes_per_param (runtime/optim/optimizer.h: per-element part only).
# The cores are shared: each run is repeated --repeats times (1) and the lowest median kept.
# Builds nothing: expects $ZT_BUILD_DIR (default build/) to hold bin/zt-worker and
# data/corpus.tok. Prints markdown tables.
#   tools/bench/run_offload_bench.sh [--steps N] [--warmup W] [--np N] [--stage S]
#       [--micro-batch B] [--seq-len T] [--small-buffer ELEMENTS] [--nvme-dir DIR] [--repeats R]
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=10
WARMUP=2
NP=2
STAGE=2
MICRO=4
SEQ=128
SMALL_BUF=65536
NVME_PARENT=/tmp
REPEATS=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --steps) STEPS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --np) NP=$2; shift 2 ;;
    --stage) STAGE=$2; shift 2 ;;
    --micro-batch) MICRO=$2; shift 2 ;;
    --seq-len) SEQ=$2; shift 2 ;;
    --small-buffer) SMALL_BUF=$2; shift 2 ;;
    --nvme-dir) NVME_PARENT=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
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
((STAGE >= 1)) || { echo "--stage must be 1 to 3 (offload needs ZeRO stage >= 1)" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
CORES=$(nproc)
THREADS=$((CORES / NP))
((THREADS >= 1)) || THREADS=1
T=$(mktemp -d /tmp/zt_offload_bench_XXXXXX)
NV=$(mktemp -d "$NVME_PARENT/zt_offload_bench_nvme_XXXXXX")
trap 'rm -rf "$T" "$NV"' EXIT

SMALL="{family: gpt2, vocab_size: 256, block_size: $SEQ, n_layer: 6, n_head: 6, n_embd: 384,"
SMALL+=" seed: 1337}"
ADAM_P="{lr: 6.0e-4, betas: [0.9, 0.95], eps: 1.0e-8, weight_decay: 0.1}"
declare -A OPT=(
  [AdamW]="{type: AdamW, params: $ADAM_P}"
  [AdamW8bit]="{type: AdamW8bit, params: $ADAM_P}"
  [Adafactor]="{type: Adafactor, params: {lr: 6.0e-4, relative_step: false,
    scale_parameter: false}}"
  [SGD]="{type: SGD, params: {lr: 0.01, momentum: 0.9}}"
  [Lion]="{type: Lion, params: {lr: 1.0e-4, betas: [0.9, 0.99], weight_decay: 0.1}}"
)

# launch.py OUT RUN_DIR NVME_DIR CMD...: runs CMD; every 20 ms samples the VmHWM of each process
# whose command line names RUN_DIR (the ranks) and the size of the files in NVME_DIR; writes JSON.
cat > "$T/launch.py" <<'PY'
import json, os, subprocess, sys, time
out, run_dir, nv, cmd = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
with open(out + ".log", "w") as log:
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    hwm, disk = {}, 0
    while p.poll() is None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
                if b"--run-dir" not in args or run_dir.encode() not in args:
                    continue
                if not any(a.endswith(b"zt-worker") for a in args):
                    continue
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            hwm[pid] = max(hwm.get(pid, 0), int(line.split()[1]) * 1024)
            except OSError:
                pass
        if nv != "-":
            total = 0
            for name in os.listdir(nv):
                try:
                    total += os.stat(os.path.join(nv, name)).st_size
                except OSError:
                    pass
            disk = max(disk, total)
        time.sleep(0.02)
with open(out, "w") as f:
    json.dump({"rc": p.returncode, "peak_rss": sorted(hwm.values()), "disk_bytes": disk}, f)
PY

# run NAME NP STAGE OPT_NAME OFFLOAD_YAML STEPS BF16: the best of $REPEATS runs into $T/NAME.
run() {
  local name=$1 np=$2 stage=$3 opt=$4 off=$5 steps=$6 bf16=$7 i best=""
  local cfg=$T/$name.yaml
  cat > "$cfg" <<YAML
train_micro_batch_size_per_gpu: $MICRO
gradient_accumulation_steps: 1
gradient_clipping: 1.0
steps_per_print: 1000
model: $SMALL
data: {path: $BUILD/data/corpus.tok, format: llmc}
train: {steps: $steps}
bf16: {enabled: $bf16}
optimizer: ${OPT[$opt]}
zero_optimization: {stage: $stage${off:+, offload_optimizer: $off}}
checkpoint: {at_end: false}
YAML
  local nvdir=-
  [[ $off == *nvme* ]] && nvdir=$NV
  for ((i = 0; i < REPEATS; ++i)); do
    rm -rf "$T/$name.$i"
    OMP_NUM_THREADS=$THREADS "$PY" "$T/launch.py" "$T/$name.$i.json" "$T/$name.$i" "$nvdir" \
      mpirun -np "$np" --oversubscribe --bind-to none "$WORKER" --config "$cfg" \
      --run-dir "$T/$name.$i"
    if [[ $("$PY" -c "import json; print(json.load(open('$T/$name.$i.json'))['rc'])") != 0 ]]; then
      echo "$name failed:" >&2
      tail -5 "$T/$name.$i.json.log" >&2
      exit 1
    fi
  done
  # Keep the repeat with the lowest median step time.
  best=$("$PY" - "$T/$name" "$REPEATS" "$WARMUP" <<'PY'
import json, statistics, sys
base, reps, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def med(i):
    rows = [json.loads(l) for l in open(f"{base}.{i}/metrics.jsonl")]
    return statistics.median(r["step_ms"] for r in rows[warm:] or rows)
print(min(range(reps), key=med))
PY
)
  mv "$T/$name.$best" "$T/$name"
  mv "$T/$name.$best.json" "$T/$name.json"
}

TOTAL=$((WARMUP + STEPS))
echo "offload modes ($NP ranks, stage $STAGE)..." >&2
run mem "$NP" "$STAGE" AdamW "" $TOTAL true
run cpu "$NP" "$STAGE" AdamW "{device: cpu}" $TOTAL true
run nvme "$NP" "$STAGE" AdamW "{device: nvme, nvme_path: $NV}" $TOTAL true
run nvme_small "$NP" "$STAGE" AdamW \
  "{device: nvme, nvme_path: $NV, buffer_count: 4, buffer_size: $SMALL_BUF}" $TOTAL true
for o in AdamW8bit Adafactor SGD Lion; do
  echo "$o ($NP ranks, stage $STAGE, in memory)..." >&2
  run "time_$o" "$NP" "$STAGE" "$o" "" $TOTAL true
done
for o in AdamW AdamW8bit Adafactor SGD Lion; do
  echo "$o (1 rank, stage 0: bytes per parameter)..." >&2
  run "bytes_$o" 1 0 "$o" "" 2 true
done

"$PY" - "$T" "$NP" "$STAGE" "$MICRO" "$SEQ" "$WARMUP" "$STEPS" "$SMALL_BUF" "$REPEATS" \
  "$CORES" <<'PY'
import json, os, re, statistics, sys
d = sys.argv[1]
np_, stage, micro, seq, warm, steps, small_buf, reps, cores = map(int, sys.argv[2:11])
MiB = 2.0 ** 20

def rows(name):
    with open(os.path.join(d, name, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]

def med_ms(name):
    return statistics.median(r["step_ms"] for r in rows(name)[warm:])

def peak(name, cat):  # max over steps and ranks
    return max(m[cat] for r in rows(name) for m in r["peak_memory_bytes"])

def params(name):
    with open(os.path.join(d, name, "events.log")) as f:
        return int(re.search(r"started: (\d+) parameters", f.read()).group(1))

def launch(name):
    return json.load(open(os.path.join(d, name + ".json")))

psi = params("mem")
state_mem = peak("mem", "optimizer_states")  # per rank, in the device tracker
# The owned range per rank (elements): the state is 12 bytes (3 fp32 arrays) per element.
owned = state_mem // 12
def chunk(buffer_size):  # Note [state chunks]: min(buffer_size, owned rounded up to 4096)
    return min(buffer_size, -(-owned // 4096) * 4096)
modes = [
    ("in memory", "mem", "-", None),
    ("cpu", "cpu", "-", None),
    ("nvme", "nvme", "4 x 1048576", (4, 1048576)),
    ("nvme", "nvme_small", f"4 x {small_buf}", (4, small_buf)),
]
base = med_ms("mem")
print(f"## Optimizer-state offload: small config ({psi / 1e6:.2f}M params), bf16, AdamW, "
      f"{np_} ranks, ZeRO stage {stage}, micro-batch {micro} x {seq} tokens per rank, "
      f"median of {steps} steps after {warm} warm-up (best of {reps}), {cores} CPU cores")
print()
print("Per rank: state = fp32 master + exp_avg + exp_avg_sq over the rank's owned range "
      f"({owned} elements, {state_mem / MiB:.1f} MiB). 'device tracker' is metrics.jsonl "
      "peak_memory_bytes.optimizer_states; 'host, outside the tracker' is what the offloaded "
      "store keeps in host memory (cpu: the arrays; nvme: buffer_count x chunk x 12 B), computed "
      "from the store's chunking (metrics.jsonl does not report it); 'on disk' is the state "
      "file's size measured during the run; peak RSS is the largest VmHWM over the ranks.")
print()
print("| state | buffers (count x elements) | step ms (median) | vs in memory | "
      "device tracker MiB | host, outside the tracker MiB | on disk MiB | peak RSS MiB/rank |")
print("|---|---|---|---|---|---|---|---|")
for label, name, bufs, nvme in modes:
    ms = med_ms(name)
    dev = peak(name, "optimizer_states")
    if name == "mem":
        host = 0
    elif nvme is None:
        host = state_mem
    else:
        host = nvme[0] * chunk(nvme[1]) * 12
    disk = launch(name)["disk_bytes"] / np_ if nvme else 0
    rss = max(launch(name)["peak_rss"])
    print(f"| {label} | {bufs} | {ms:.0f} | {ms / base:.2f}x | {dev / MiB:.1f} | "
          f"{host / MiB:.1f} | {disk / MiB:.1f} | {rss / MiB:.0f} |")
print()

formula = {"AdamW": 12.0, "AdamW8bit": 4 + 2 + 8 / 256, "Adafactor": 4.0, "SGD": 8.0, "Lion": 8.0}
note = {"AdamW": "master, exp_avg, exp_avg_sq",
        "AdamW8bit": "master, 8-bit exp_avg / exp_avg_sq, fp32 absmax per 256 (+ small tensors "
                     "in fp32)",
        "Adafactor": "master; row/column factors (+ 1-D second moments); no first moment",
        "SGD": "master, momentum buffer (momentum 0.9)",
        "Lion": "master, exp_avg"}
print(f"## Optimizers, state in memory: step time ({np_} ranks, ZeRO {stage}, bf16, as above) and "
      "optimizer state per parameter (1 rank, ZeRO 0, bf16: peak optimizer_states / parameters)")
print()
print("| optimizer | step ms (median) | vs AdamW | bytes/param measured | per-element formula | "
      "what the state holds |")
print("|---|---|---|---|---|---|")
for o in ("AdamW", "AdamW8bit", "Adafactor", "SGD", "Lion"):
    ms = med_ms("mem" if o == "AdamW" else f"time_{o}")
    b = peak(f"bytes_{o}", "optimizer_states") / params(f"bytes_{o}")
    print(f"| {o} | {ms:.0f} | {ms / base:.2f}x | {b:.3f} | {formula[o]:.3f} | {note[o]} |")
PY
