#!/usr/bin/env bash
# A full disk during a checkpoint write, through the real binaries: the run directory lives on a
# small tmpfs that holds one checkpoint but not two. The job must fail with an error naming the
# file and the full device (never hang, never crash), exit non-zero, and lose nothing already
# written: `latest` still names the first checkpoint, which verifies; once the disk has room,
# --resume continues from it. Needs permission to mount a tmpfs (root); skips (77) otherwise.
set -euo pipefail
BUILD=${ZT_BUILD_DIR:?}
ZTCTL=$BUILD/bin/ztctl
for b in ztctl zt-coordinator zt-worker; do
  [[ -x $BUILD/bin/$b ]] || { echo "SKIP: $BUILD/bin/$b not built"; exit 77; }
done
[[ -f $BUILD/data/corpus.tok ]] || { echo "SKIP: $BUILD/data/corpus.tok not built"; exit 77; }
command -v mpirun > /dev/null || { echo "SKIP: mpirun not installed"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMP_NUM_THREADS=1
T=$(mktemp -d /tmp/zt_e2e_diskfull_XXXXXX)
DISK=$T/disk
mkdir -p "$DISK"
cleanup() {
  umount "$DISK" 2> /dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; tail -5 "$T"/*.txt >&2 || true; exit 1; }
# One checkpoint of this model is 12 bytes x 34,688 parameters (+ headers) = ~420 KiB; the disk
# holds the run directory's small files and one checkpoint, not a second.
mount -t tmpfs -o size=700k tmpfs "$DISK" 2> /dev/null || {
  echo "SKIP: cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)"
  exit 77
}

cat > "$T/job.yaml" <<YAML
train_micro_batch_size_per_gpu: 2
gradient_accumulation_steps: 1
steps_per_print: 1
model: {family: gpt2, vocab_size: 256, block_size: 32, n_layer: 2, n_head: 2, n_embd: 32, seed: 3}
data: {path: $BUILD/data/corpus.tok, format: llmc}
train: {steps: 8}
optimizer: {type: AdamW, params: {lr: 0.001}}
zero_optimization: {stage: 2}
checkpoint: {every_steps: 2, keep_last: 1}
comm: {heartbeat_timeout_s: 5, heartbeat_interval_s: 0.3}
YAML

RC=0
timeout -k 10 120 "$ZTCTL" launch --config "$T/job.yaml" --np 2 --run-dir "$DISK/run" \
  -- --oversubscribe > "$T/full.txt" 2>&1 || RC=$?
[[ $RC != 0 ]] || fail "the job succeeded on a disk too small for two checkpoints"
[[ $RC != 124 && $RC != 137 ]] || fail "the job hung on a full disk (timeout)"
grep -qE "rank_0000[01]\.safetensors.*No space left on device; free disk space" \
  "$DISK/run/events.log" "$T/full.txt" ||
  fail "no error naming the shard file and the full disk: $(grep -i fail "$DISK/run/events.log")"
[[ $(cat "$DISK/run/checkpoints/latest") == step_00000002 ]] ||
  fail "latest is '$(cat "$DISK/run/checkpoints/latest")', expected step_00000002"
"$ZTCTL" verify --run-dir "$DISK/run" > "$T/verify.txt" 2>&1 ||
  fail "the checkpoint written before the disk filled does not verify: $(cat "$T/verify.txt")"
echo "1. full disk: exit $RC, '$(grep -ohE "writing checkpoint step [0-9]+: writing '[^']*'" \
  "$DISK/run/events.log" | head -1): No space left on device'; latest = step 2, verified"

# 2. With room again, the job resumes from the intact checkpoint and finishes.
mount -o remount,size=4m "$DISK"
timeout -k 10 120 "$ZTCTL" launch --config "$T/job.yaml" --np 2 --run-dir "$DISK/run" --resume \
  -- --oversubscribe > "$T/resume.txt" 2>&1 || fail "--resume after freeing space: exit $?"
grep -q "removed an incomplete checkpoint left by a crash: step_00000004.tmp" "$DISK/run/events.log" ||
  fail "the half-written step 4 was not cleaned up: $(cat "$DISK/run/events.log")"
[[ $(cat "$DISK/run/checkpoints/latest") == step_00000008 ]] || fail "latest after the resume"
echo "2. resumed from step 2 after the disk had room: finished 8 steps, the partial step 4 removed"
echo "checkpoint_disk_full: all checks passed"
