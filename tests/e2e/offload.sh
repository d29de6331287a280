#!/usr/bin/env bash
# Optimizer-state offload (zero_optimization.offload_optimizer) end to end through the real
# zt-worker, bf16:
#  a. Bit-identical to in-memory state: 2 ranks (mpirun), AdamW at ZeRO stages 1, 2, 3, each with
#     the state in memory, offloaded to cpu, and on nvme (buffer_count 3, buffer_size 4096, so
#     every rank's state spans many chunks and the 3-buffer pipeline wraps); then AdamW8bit,
#     Adafactor (with a first moment), SGD (Nesterov momentum) and Lion, each at one stage. Every
#     step's loss and grad_norm in metrics.jsonl must be the same JSON text (the same double) as
#     the in-memory run's. The in-memory run is one chunk (default buffer_size), the cpu and nvme
#     runs many, so this also checks that chunking does not change the result. Offloaded runs
#     keep no optimizer state in the device tracker (peak optimizer_states 0), in-memory ones do.
#  b. Refusals, each with a non-zero exit within 60 s (no hang) and a message naming the path or
#     the key: nvme_path a directory that does not exist; nvme_path a regular file;
#     buffer_count 2 with nvme (refused by the config check, naming the key); and a full disk:
#     nvme_path on a 256 KiB tmpfs (the state file needs 720 KiB per rank) when resuming a job
#     whose checkpoints were written with in-memory state: "no space for the optimizer state
#     file '<path>'", and the run directory's checkpoints and metrics.jsonl are unchanged and
#     `ztctl verify --checkpoint` passes. With room on the tmpfs
#     the same --resume then trains on from the checkpoint with its state on nvme, bit-identical
#     to the uninterrupted in-memory run (this drives the store's random-access write path), and
#     its own final checkpoint (read back through the store) verifies. The tmpfs part needs
#     permission to mount (root); it is skipped, with a note, otherwise.
#  c. Resident memory with the state on nvme is bounded by the buffers: one rank (zt-worker
#     without mpirun: a world of one; stage 1 is allowed there), the small config's model
#     (10.8M parameters, 12 B each of AdamW state = 123 MiB) with buffer_count 3 x buffer_size
#     65536 (2.25 MiB of buffers, 1/55 of the state). The worker's VmRSS/VmHWM is sampled every
#     20 ms (/proc/PID/status). Asserted:
#        peak RSS (nvme) <= tracked + buffers + overhead
#     where tracked = the per-category peaks in metrics.jsonl (parameters, gradients,
#     activations, communication, workspace; the maximum over steps of each, summed), buffers =
#     buffer_count * buffer_size * 12 bytes, overhead = the peak RSS of the same run with a
#     1-layer width-8 model (libraries, MPI, OpenBLAS, allocator; ~23 MiB here) + 24 MiB of slack
#     (allocator fragmentation, untracked host structures that grow with the model). The test
#     can fail: the bound is below tracked + the state measured in the in-memory run's
#     metrics.jsonl + the baseline, and the same config in memory is measured above it. (In a
#     CUDA build the baseline is ~225 MiB: loading cuBLAS(Lt) alone costs ~215 MiB of RSS.) The same nvme run with
#     an at_end checkpoint must stay within the bound too (the checkpoint reads the state from
#     the file as the shard is written, never the whole state at once).
# Runs in ~25 s on 2 idle cores (~60 s on busy ones). ZT_KEEP_TMP=1 keeps the work dir.
set -euo pipefail
BUILD=${ZT_BUILD_DIR:?}
WORKER=$BUILD/bin/zt-worker
ZTCTL=$BUILD/bin/ztctl
PY=/usr/bin/python3
for b in zt-worker ztctl; do
  [[ -x $BUILD/bin/$b ]] || { echo "SKIP: $BUILD/bin/$b not built"; exit 77; }
done
[[ -f $BUILD/data/corpus.tok ]] || { echo "SKIP: $BUILD/data/corpus.tok not built"; exit 77; }
command -v mpirun > /dev/null || { echo "SKIP: mpirun not installed"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1
T=$(mktemp -d /tmp/zt_e2e_offload_XXXXXX)
NV=$T/nvme    # nvme_path of the runs that succeed
MNT=$T/small  # the small tmpfs of the full-disk check
mkdir -p "$NV" "$MNT"
MOUNTED=0
cleanup() {
  if [[ $MOUNTED == 1 ]]; then umount "$MNT" 2> /dev/null || true; fi
  if [[ ${ZT_KEEP_TMP:-0} == 1 ]]; then echo "work dir kept: $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
START=$SECONDS

cat > "$T/ck.py" <<'PY'
"""Checks for offload.sh."""
import json, sys


def rows(path, text=True):
    # text=True: numbers kept as their JSON text, so "equal" means the same printed double.
    kw = {"parse_float": str} if text else {}
    with open(path) as f:
        return [json.loads(l, **kw) for l in f if l.strip()]


def opt_bytes(r):
    return [int(m["optimizer_states"]) for m in r["peak_memory_bytes"]]


def same(ref_path, run_path, offloaded):
    """Every step's loss and grad_norm string-equal; where the state lives, by the tracker."""
    ref, run = rows(ref_path), rows(run_path)
    assert len(ref) == len(run) and len(ref) > 1, f"{len(ref)} vs {len(run)} steps"
    for a, b in zip(ref, run):
        assert a["step"] == b["step"], (a["step"], b["step"])
        for key in ("loss", "grad_norm"):
            assert a[key] == b[key], (f"step {a['step']}: {key} {b[key]} ({float(b[key]).hex()}) "
                                      f"in {run_path} but {a[key]} ({float(a[key]).hex()}) "
                                      f"in {ref_path}")
    # The comparison can tell runs apart: training moved the loss.
    assert ref[0]["loss"] != ref[-1]["loss"], "the loss did not change"
    assert all(b > 0 for b in opt_bytes(ref[-1])), f"{ref_path}: no optimizer state tracked"
    if offloaded == "1":
        assert all(b == 0 for b in opt_bytes(run[-1])), \
            f"{run_path}: offloaded, yet optimizer_states {opt_bytes(run[-1])} on the device"
    last = run[-1]
    return (f"{len(run)} steps bit-identical, last loss {last['loss']} "
            f"({float(last['loss']).hex()}), grad_norm {float(last['grad_norm']).hex()}")


def tracked(path):
    """The non-optimizer categories: each one's maximum over steps (rank 0; one rank), summed."""
    cats = ("parameters", "gradients", "activations", "communication", "workspace")
    peak = dict.fromkeys(cats, 0)
    for r in rows(path, text=False):
        m = r["peak_memory_bytes"][0]
        for c in cats:
            peak[c] = max(peak[c], m[c])
    return sum(peak.values())


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "same":  # REF RUN OFFLOADED(0|1)
        print(same(*args))
    elif cmd == "tracked":  # METRICS: the tracked non-optimizer bytes
        print(tracked(args[0]))
    elif cmd == "optstate":  # METRICS: the peak optimizer_states bytes (rank 0)
        print(max(opt_bytes(r)[0] for r in rows(args[0], text=False)))
    elif cmd == "params":  # EVENTS_LOG: the parameter count of the "started" line
        import re
        with open(args[0]) as f:
            print(re.search(r"started: (\d+) parameters", f.read()).group(1))
    else:
        raise SystemExit(f"unknown command {cmd}")


try:
    main()
except AssertionError as e:
    print(f"check failed: {e}", file=sys.stderr)
    sys.exit(1)
PY
ck() { "$PY" "$T/ck.py" "$@"; }

# rss.py OUT CMD...: runs CMD, samples its VmRSS and VmHWM every 20 ms; writes "rc peak_kib
# samples" to OUT (peak_kib: the largest of the VmRSS samples and the last VmHWM, the kernel's own
# high-water mark, which sees peaks between samples).
cat > "$T/rss.py" <<'PY'
import subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
with open(out + ".log", "w") as log:
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    peak = samples = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        peak = max(peak, int(line.split()[1]))
            samples += 1
        except OSError:
            pass
        time.sleep(0.02)
with open(out, "w") as f:
    f.write(f"{p.returncode} {peak} {samples}\n")
PY

# write_config FILE [key=value ...]: stage, opt (the optimizer YAML), off (none | cpu | nvme |
# a zero_optimization.offload_optimizer YAML map), steps, model, micro, accum, ckpt (YAML map).
TINY="{family: gpt2, vocab_size: 256, block_size: 32, n_layer: 2, n_head: 2, n_embd: 64, seed: 5}"
ADAMW="{type: AdamW, params: {lr: 0.002, weight_decay: 0.1}}"
write_config() {
  local f=$1
  shift
  local stage=2 opt=$ADAMW off=none steps=5 model=$TINY micro=2 accum=2 ckpt="{at_end: false}"
  local kv
  for kv in "$@"; do local "$kv"; done
  case $off in
    none) off="" ;;
    cpu) off=", offload_optimizer: {device: cpu, buffer_size: 4096}" ;;
    nvme) off=", offload_optimizer: {device: nvme, nvme_path: $NV, buffer_count: 3,"
      off+=" buffer_size: 4096}" ;;
    *) off=", offload_optimizer: $off" ;;
  esac
  cat > "$f" <<YAML
train_micro_batch_size_per_gpu: $micro
gradient_accumulation_steps: $accum
gradient_clipping: 1.0
steps_per_print: 1000
model: $model
data: {path: $BUILD/data/corpus.tok, format: llmc}
train: {steps: $steps}
bf16: {enabled: true}
optimizer: $opt
zero_optimization: {stage: $stage$off}
checkpoint: $ckpt
YAML
}

# mpi NAME CONFIG [worker args...]: 2 ranks; sets RC; output in $T/NAME.txt; never hangs.
mpi() {
  local name=$1 cfg=$2
  shift 2
  RC=0
  timeout -k 5 60 mpirun -np 2 --oversubscribe "$WORKER" --config "$cfg" --run-dir "$T/$name" \
    "$@" > "$T/$name.txt" 2>&1 || RC=$?
  [[ $RC != 124 && $RC != 137 ]] || fail "$name: still running after 60 s (hung?)"
}
mpi_ok() {
  mpi "$@"
  [[ $RC == 0 ]] || fail "$1: exit $RC: $(tail -5 "$T/$1.txt")"
}
no_state_files() {  # DIR: the stores removed their files
  local left
  left=$(find "$1" -name 'zerotrain-states-*' | head -3)
  [[ -z $left ]] || fail "state files left behind: $left"
}

# ---- a. offloaded == in memory, bit for bit ------------------------------------------------------

# opt_case NAME STAGE OPTIMIZER_YAML MODES...: the in-memory run, then each offloaded mode.
opt_case() {
  local name=$1 stage=$2 opt=$3
  shift 3
  write_config "$T/$name.none.yaml" stage="$stage" opt="$opt" off=none
  mpi_ok "$name.none" "$T/$name.none.yaml"
  local mode out
  for mode in "$@"; do
    write_config "$T/$name.$mode.yaml" stage="$stage" opt="$opt" off="$mode"
    mpi_ok "$name.$mode" "$T/$name.$mode.yaml"
    out=$(ck same "$T/$name.none/metrics.jsonl" "$T/$name.$mode/metrics.jsonl" 1) ||
      fail "$name, $mode: differs from the in-memory run"
    echo "a. $name, stage $stage, $mode vs in memory: $out"
  done
}
for stage in 1 2 3; do opt_case "AdamW.s$stage" $stage "$ADAMW" cpu nvme; done
opt_case AdamW8bit.s3 3 "{type: AdamW8bit, params: {lr: 0.002, weight_decay: 0.1}}" cpu nvme
opt_case Adafactor.s2 2 "{type: Adafactor, params: {beta1: 0.9}}" nvme
opt_case SGD.s1 1 "{type: SGD, params: {lr: 0.05, momentum: 0.9, nesterov: true}}" nvme
opt_case Lion.s2 2 "{type: Lion, params: {lr: 0.0003, weight_decay: 0.1}}" nvme
no_state_files "$NV"

# ---- b. refusals ---------------------------------------------------------------------------------

# refuse NAME CONFIG WORDS...: non-zero exit, no hang, a message with every word in the ranks'
# output. (Not asserted in events.log: without a coordinator only rank 0 writes it, and when
# another rank fails first its MPI_Abort can end rank 0 before it does.)
refuse() {
  local name=$1 cfg=$2 w
  shift 2
  mpi "$name" "$cfg"
  [[ $RC != 0 ]] || fail "$name: exit 0"
  for w in "$@"; do
    grep -qF -- "$w" "$T/$name.txt" ||
      fail "$name: the message lacks '$w': $(head -3 "$T/$name.txt")"
  done
}
write_config "$T/absent.yaml" off="{device: nvme, nvme_path: $T/absent/dir, buffer_count: 3}"
refuse absent "$T/absent.yaml" "directory '$T/absent/dir' does not exist" \
  "'$T/absent/dir/zerotrain-states-rank"
echo "b1. nvme_path missing: exit $RC, '$(grep -om1 "cannot create the optimizer state file[^;]*" \
  "$T/absent.txt")'"
touch "$T/plain_file"
write_config "$T/file.yaml" off="{device: nvme, nvme_path: $T/plain_file, buffer_count: 3}"
refuse file "$T/file.yaml" "'$T/plain_file' is not a directory"
echo "b2. nvme_path a regular file: exit $RC, '$(grep -om1 "'$T/plain_file' is not a directory" \
  "$T/file.txt")'"
write_config "$T/two.yaml" off="{device: nvme, nvme_path: $NV, buffer_count: 2}"
refuse two "$T/two.yaml" \
  "zero_optimization.offload_optimizer.buffer_count: must be >= 3 with device nvme, got 2"
echo "b3. buffer_count 2 with nvme: exit $RC, '$(grep -om1 \
  "offload_optimizer.buffer_count: must be >= 3[^(]*" "$T/two.txt")'"
no_state_files "$NV"

# b4. A full disk. The run dir (with checkpoints of steps 2 and 4, written with in-memory state)
# is on the normal disk; only nvme_path is on the small tmpfs.
if mount -t tmpfs -o size=256k tmpfs "$MNT" 2> /dev/null; then
  MOUNTED=1
  NVME_FULL="{device: nvme, nvme_path: $MNT, buffer_count: 3, buffer_size: 4096}"
  write_config "$T/ck4.yaml" steps=4 ckpt="{every_steps: 2}"
  write_config "$T/ck6.yaml" steps=6 ckpt="{every_steps: 2}"
  write_config "$T/ck6nv.yaml" steps=6 ckpt="{every_steps: 2}" off="$NVME_FULL"
  mpi_ok ref6 "$T/ck6.yaml"
  mpi_ok job "$T/ck4.yaml"
  [[ $(cat "$T/job/checkpoints/latest") == step_00000004 ]] || fail "job: latest is not step 4"
  summ() { (cd "$T/job" && find checkpoints metrics.jsonl -type f -print0 | LC_ALL=C sort -z |
    xargs -0 sha256sum); }
  summ > "$T/before.sum"
  mpi full "$T/ck6nv.yaml" --resume
  [[ $RC != 0 ]] || fail "resume with nvme_path on a full disk: exit 0"
  grep -qF "no space for the optimizer state file '$MNT/zerotrain-states-rank" "$T/full.txt" ||
    fail "full disk: no error naming the state file: $(grep -m2 error "$T/full.txt")"
  summ > "$T/after.sum"
  diff "$T/before.sum" "$T/after.sum" > /dev/null ||
    fail "full disk: the checkpoints or metrics changed: $(diff "$T/before.sum" "$T/after.sum")"
  "$ZTCTL" verify --checkpoint "$T/job/checkpoints/step_00000004" > "$T/verify.txt" 2>&1 ||
    fail "the checkpoint written before the failed resume does not verify: $(cat "$T/verify.txt")"
  no_state_files "$MNT"
  echo "b4. nvme_path on a full 256 KiB tmpfs: exit $RC, '$(grep -om1 \
    "no space for the optimizer state file '[^']*': it needs [0-9]* bytes" "$T/full.txt")';" \
    "checkpoints and metrics unchanged, step 4 verifies"
  mount -o remount,size=4m "$MNT"
  mpi_ok job "$T/ck6nv.yaml" --resume
  grep -qF "resumed from $T/job/checkpoints/step_00000004 at step 4" "$T/job/events.log" ||
    fail "no resume event: $(tail -3 "$T/job/events.log")"
  out=$(ck same "$T/ref6/metrics.jsonl" "$T/job/metrics.jsonl" 1) ||
    fail "resumed onto nvme: differs from the uninterrupted in-memory run"
  "$ZTCTL" verify --checkpoint "$T/job/checkpoints/step_00000006" > "$T/verify.txt" 2>&1 ||
    fail "the checkpoint written from the nvme store does not verify: $(cat "$T/verify.txt")"
  no_state_files "$MNT"
  echo "b5. with room: --resume from step 4 onto nvme, steps 1-6 vs the uninterrupted in-memory" \
    "run: $out; its step-6 checkpoint verifies"
  umount "$MNT"
  MOUNTED=0
else
  echo "b4. SKIPPED (note): cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN); the full-disk" \
    "and checkpoint-kept checks did not run"
fi

# ---- c. resident memory bound with the state on nvme ---------------------------------------------

SMALL="{family: gpt2, vocab_size: 256, block_size: 64, n_layer: 6, n_head: 6, n_embd: 384, seed: 5}"
SPECK="{family: gpt2, vocab_size: 256, block_size: 64, n_layer: 1, n_head: 1, n_embd: 8, seed: 5}"
BC=3 BS=65536
NVME_C="{device: nvme, nvme_path: $NV, buffer_count: $BC, buffer_size: $BS}"
ADAMW_C="{type: AdamW, params: {lr: 0.0006, weight_decay: 0.1}}"
measure() {  # NAME CONFIG: one rank, zt-worker alone, sampled
  timeout -k 5 120 "$PY" "$T/rss.py" "$T/$1.rss" "$WORKER" --config "$2" --run-dir "$T/$1" ||
    fail "$1: the sampler failed"
  read -r rc kib _ < "$T/$1.rss"
  [[ $rc == 0 ]] || fail "$1: exit $rc: $(tail -3 "$T/$1.rss.log")"
  echo $((kib * 1024))
}
C=(stage=1 opt="$ADAMW_C" steps=2 micro=1 accum=1)
write_config "$T/base.yaml" "${C[@]}" off="$NVME_C" model="$SPECK"
write_config "$T/c_nvme.yaml" "${C[@]}" off="$NVME_C" model="$SMALL"
write_config "$T/c_mem.yaml" "${C[@]}" off=none model="$SMALL"
BASE=$(measure base "$T/base.yaml")
NVME_RSS=$(measure c_nvme "$T/c_nvme.yaml")
MEM_RSS=$(measure c_mem "$T/c_mem.yaml")
no_state_files "$NV"
ck same "$T/c_mem/metrics.jsonl" "$T/c_nvme/metrics.jsonl" 1 > /dev/null ||
  fail "c: the nvme run differs from the in-memory one"
PARAMS=$(ck params "$T/c_nvme/events.log")
TRACKED=$(ck tracked "$T/c_nvme/metrics.jsonl")
STATE=$(ck optstate "$T/c_mem/metrics.jsonl")  # master + exp_avg + exp_avg_sq, in memory
BUFFERS=$((BC * BS * 12))
SLACK=$((24 << 20))
OVERHEAD=$((BASE + SLACK))
BOUND=$((TRACKED + BUFFERS + OVERHEAD))
mib() { "$PY" -c "print(f'{$1 / 1048576:.1f}')"; }
echo "c. ${PARAMS} parameters, 1 rank, ZeRO 1, AdamW: state $(mib "$STATE") MiB" \
  "($((STATE / PARAMS)) B/param), nvme buffers $BC x $BS x 12 B = $(mib $BUFFERS) MiB;" \
  "tracked non-optimizer peak $(mib "$TRACKED") MiB; overhead = baseline $(mib "$BASE") MiB" \
  "(1-layer width-8 model) + slack $(mib $SLACK) MiB"
echo "   bound = tracked + buffers + overhead = $(mib $BOUND) MiB; peak RSS: nvme" \
  "$(mib "$NVME_RSS") MiB, in memory $(mib "$MEM_RSS") MiB; tracked + state =" \
  "$(mib $((TRACKED + STATE))) MiB"
((STATE >= 4 * BUFFERS)) || fail "c: the state ($STATE B) is not 4x the buffers ($BUFFERS B)"
((STATE == 12 * PARAMS)) || fail "c: in-memory optimizer_states $STATE B, not 12 x $PARAMS"
# The process overhead (BASE) is in both runs, so the bound discriminates when the resident state
# would not fit in it: tracked + state + overhead without slack must exceed it.
((TRACKED + STATE + BASE > BOUND)) ||
  fail "c: the bound ($BOUND B) would hold even with the state resident" \
    "($((TRACKED + STATE + BASE)) B with the baseline)"
((NVME_RSS <= BOUND)) ||
  fail "c: peak RSS with the state on nvme is $NVME_RSS B, above the bound $BOUND B"
((MEM_RSS > BOUND)) ||
  fail "c: the in-memory run's peak RSS ($MEM_RSS B) is within the bound ($BOUND B)"
echo "   nvme within the bound ($(mib $((BOUND - NVME_RSS))) MiB to spare); in memory above it by" \
  "$(mib $((MEM_RSS - BOUND))) MiB"
# A checkpoint of state on NVMe reads it from the file as the shard is written (a chunk at a
# time), so the bound holds while one is taken too.
write_config "$T/c_ckpt.yaml" "${C[@]}" off="$NVME_C" model="$SMALL" ckpt="{at_end: true}"
CKPT_RSS=$(measure c_ckpt "$T/c_ckpt.yaml")
[[ -f $T/c_ckpt/checkpoints/latest ]] || fail "c: the at_end checkpoint was not committed"
rm -rf "$T/c_ckpt/checkpoints"
((CKPT_RSS <= BOUND)) ||
  fail "c: with an at_end checkpoint the nvme run peaks at $CKPT_RSS B, above the bound $BOUND B"
echo "   the same nvme run with its at_end checkpoint peaks at $(mib "$CKPT_RSS") MiB (within the" \
  "bound)"
echo "offload: all checks passed in $((SECONDS - START)) s"
