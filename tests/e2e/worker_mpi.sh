#!/usr/bin/env bash
# End to end under mpirun: 2 zt-worker ranks at each ZeRO stage train the same steps as 1 rank with
# the same global batch (losses agree to 1e-5 relative, fp32); metrics.jsonl carries every rank's
# memory; SIGTERM through mpirun stops every rank after the same step with exit 0; a rank killed
# with SIGKILL ends the whole job with a non-zero exit and no process left behind.
set -euo pipefail
BUILD=${ZT_BUILD_DIR:?}
WORKER=$BUILD/bin/zt-worker
PY=/usr/bin/python3
[[ -x $WORKER ]] || { echo "SKIP: $WORKER not built"; exit 77; }
[[ -f $BUILD/data/corpus.tok ]] || { echo "SKIP: $BUILD/data/corpus.tok not built"; exit 77; }
command -v mpirun > /dev/null || { echo "SKIP: mpirun not installed"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMP_NUM_THREADS=1
T=$(mktemp -d /tmp/zt_e2e_mpi_XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

write_config() {  # file, stage, micro-batch, steps
  cat > "$1" <<YAML
train_micro_batch_size_per_gpu: $3
gradient_accumulation_steps: 2
gradient_clipping: 1.0
steps_per_print: 1
model: {family: gpt2, vocab_size: 256, block_size: 32, n_layer: 2, n_head: 2, n_embd: 32, seed: 5}
data: {path: $BUILD/data/corpus.tok, format: llmc}
train: {steps: $4}
optimizer: {type: AdamW, params: {lr: 0.002, weight_decay: 0.1}}
zero_optimization: {stage: $2, overlap_comm: true, stage3_prefetch_bucket_size: 20000, stage3_param_persistence_threshold: 1000}
YAML
}

# The reference: one process, micro-batch 4 (global batch 8 = 4 x 2 accumulation).
write_config "$T/one.yaml" 0 4 5
"$WORKER" --config "$T/one.yaml" --run-dir "$T/one" > /dev/null
for stage in 0 1 2 3; do
  write_config "$T/s$stage.yaml" $stage 2 5  # 2 ranks x micro 2 x 2 accumulation = 8
  mpirun -np 2 --oversubscribe "$WORKER" --config "$T/s$stage.yaml" --run-dir "$T/s$stage" > "$T/s$stage.txt" 2>&1 \
    || fail "stage $stage: mpirun failed: $(cat "$T/s$stage.txt")"
  "$PY" - "$T/one/metrics.jsonl" "$T/s$stage/metrics.jsonl" "$stage" <<'PY'
import json, sys
one = [json.loads(l) for l in open(sys.argv[1])]
two = [json.loads(l) for l in open(sys.argv[2])]
assert len(one) == len(two) == 5, (len(one), len(two))
for a, b in zip(one, two):
    rel = abs(a["loss"] - b["loss"]) / a["loss"]
    assert rel < 1e-5, f"stage {sys.argv[3]} step {a['step']}: loss {a['loss']} vs {b['loss']}"
    assert len(b["peak_memory_bytes"]) == 2 and [m["rank"] for m in b["peak_memory_bytes"]] == [0, 1]
print(f"stage {sys.argv[3]}: 2 ranks match 1 rank over 5 steps; last loss {two[-1]['loss']:.6f}")
PY
done

# SIGTERM to one rank (a scheduler or a user signalling a worker): the ranks agree through a
# collective to stop after the same step, all exit 0, so mpirun does too, with everything written.
# (Signalling mpirun itself makes Open MPI's mpirun exit 1 whatever its ranks do; the coordinator's
# `ztctl stop` is the clean way to stop a job there.)
write_config "$T/long.yaml" 2 2 100000
mpirun -np 2 --oversubscribe "$WORKER" --config "$T/long.yaml" --run-dir "$T/long" > "$T/long.txt" 2>&1 &
pid=$!
for _ in $(seq 1 300); do [[ -s $T/long/metrics.jsonl ]] && break; sleep 0.1; done
one_rank=$(pgrep -f "zt-worker --config $T/long.yaml --run-dir $T/long" | tail -1)
[[ -n $one_rank ]] || fail "no worker process found"
kill -TERM "$one_rank"
wait $pid || fail "mpirun exited non-zero after SIGTERM to one rank: $(tail -5 "$T/long.txt")"
grep -q "stopped by signal" "$T/long/events.log" || fail "no stop event: $(cat "$T/long/events.log")"
echo "SIGTERM: job stopped cleanly after $(wc -l < "$T/long/metrics.jsonl") steps"

# SIGKILL of one rank: the job ends non-zero, promptly, and no worker is left.
mpirun -np 2 --oversubscribe "$WORKER" --config "$T/long.yaml" --run-dir "$T/killed" > "$T/killed.txt" 2>&1 &
pid=$!
for _ in $(seq 1 300); do [[ -s $T/killed/metrics.jsonl ]] && break; sleep 0.1; done
victim=$(pgrep -f "zt-worker --config $T/long.yaml --run-dir $T/killed" | tail -1)
[[ -n $victim ]] || fail "no worker process found"
kill -KILL "$victim"
status=0
timeout 60 tail --pid=$pid -f /dev/null || fail "mpirun still running 60 s after a rank was killed"
wait $pid || status=$?
[[ $status -ne 0 ]] || fail "mpirun exited 0 after a rank was killed"
sleep 1
if pgrep -f "run-dir $T/killed" > /dev/null; then fail "workers left behind: $(pgrep -af "run-dir $T/killed")"; fi
echo "SIGKILL of one rank: job ended with exit $status, no process left"
echo "worker_mpi: all checks passed"
