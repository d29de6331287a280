#!/usr/bin/env bash
# End to end through the real zt-worker binary on real files: a short training run writes the run
# directory as DESIGN.md defines it; bad input fails with a message naming the problem and a
# non-zero exit; SIGTERM stops after the step in flight with everything written intact.
set -euo pipefail
BUILD=${ZT_BUILD_DIR:?}
SRC=${ZT_SOURCE_DIR:?}
WORKER=$BUILD/bin/zt-worker
PY=/usr/bin/python3
[[ -x $WORKER ]] || { echo "SKIP: $WORKER not built"; exit 77; }
[[ -f $BUILD/data/corpus.tok ]] || { echo "SKIP: $BUILD/data/corpus.tok not built"; exit 77; }
T=$(mktemp -d /tmp/zt_e2e_XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cat > "$T/job.yaml" <<YAML
train_micro_batch_size_per_gpu: 2
gradient_accumulation_steps: 2
gradient_clipping: 1.0
steps_per_print: 1
model: {family: gpt2, vocab_size: 256, block_size: 32, n_layer: 2, n_head: 2, n_embd: 32, seed: 1}
data: {path: $BUILD/data/corpus.tok, format: llmc}
train: {steps: 6}
optimizer: {type: AdamW, params: {lr: 0.001}}
scheduler: {type: WarmupLR, params: {warmup_min_lr: 0.0, warmup_max_lr: 0.001, warmup_num_steps: 3, warmup_type: linear}}
activation_checkpointing: {policy: layer}
YAML

# 1. A run writes metrics.jsonl (one line per step, every key), events.log, config.resolved.yaml.
"$WORKER" --config "$T/job.yaml" --run-dir "$T/run" --export "$T/run/model.safetensors" > "$T/out.txt"
grep -q "step 6/6" "$T/out.txt" || fail "no progress line for step 6: $(cat "$T/out.txt")"
[[ -f $T/run/config.resolved.yaml ]] || fail "config.resolved.yaml missing"
[[ -f $T/run/model.safetensors ]] || fail "export missing"
grep -q "finished 6 steps" "$T/run/events.log" || fail "events.log: $(cat "$T/run/events.log")"
"$PY" - "$T/run/metrics.jsonl" <<'PY'
import json, math, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert [l["step"] for l in lines] == [1, 2, 3, 4, 5, 6], lines
keys = ["step", "loss", "lr", "grad_norm", "loss_scale", "skipped", "tokens", "step_ms",
        "tokens_per_s", "peak_memory_bytes"]
for l in lines:
    for k in keys:
        assert k in l, (k, l)
    assert l["tokens"] == 4 * 32, l
    assert l["skipped"] is False and l["loss_scale"] == 1.0
    mem = l["peak_memory_bytes"][0]
    for cat in ["parameters", "gradients", "optimizer_states", "activations", "workspace"]:
        assert mem[cat] > 0, (cat, mem)
    assert math.isfinite(l["loss"]) and 4.0 < l["loss"] < 7.0, l["loss"]
# WarmupLR linear, warmup 3, DeepSpeed step alignment: 0, 0, 1/3, 2/3, 1, 1 (x 1e-3)
want = [0.0, 0.0, 1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3]
for l, w in zip(lines, want):
    assert abs(l["lr"] - w) < 1e-12, (l["lr"], w)
print("metrics ok:", [round(l["loss"], 4) for l in lines])
PY

# 2. Bad input: each fails non-zero with a message naming the problem.
expect_error() {  # name, pattern, config file
  local name=$1 pattern=$2 cfg=$3
  if "$WORKER" --config "$cfg" --run-dir "$T/bad_$name" > "$T/err_$name.txt" 2>&1; then
    fail "$name: exit code 0"
  fi
  grep -qE "$pattern" "$T/err_$name.txt" || fail "$name: expected /$pattern/ in: $(cat "$T/err_$name.txt")"
  echo "bad input '$name' rejected: $(grep -m1 error "$T/err_$name.txt")"
}
sed 's/n_head: 2/n_haed: 2/' "$T/job.yaml" > "$T/typo.yaml"
expect_error typo "typo.yaml:5: model.n_haed: unknown key" "$T/typo.yaml"
sed "s#$BUILD/data/corpus.tok#$T/missing.tok#" "$T/job.yaml" > "$T/nodata.yaml"
expect_error nodata "missing.tok" "$T/nodata.yaml"
printf 'garbage that is not a token file, definitely not one' > "$T/garbage.tok"
sed "s#$BUILD/data/corpus.tok#$T/garbage.tok#" "$T/job.yaml" > "$T/garbage.yaml"
expect_error garbage "garbage.tok" "$T/garbage.yaml"
sed 's/vocab_size: 256/vocab_size: 50/' "$T/job.yaml" > "$T/vocab.yaml"
expect_error vocab "vocab" "$T/vocab.yaml"
sed 's/n_embd: 32/n_embd: 33/' "$T/job.yaml" > "$T/heads.yaml"
expect_error heads "n_embd" "$T/heads.yaml"
printf '[1, 2' > "$T/syntax.yaml"
expect_error syntax "syntax.yaml" "$T/syntax.yaml"
sed "s#model: {#model: {init_from: $T/garbage.tok, #" "$T/job.yaml" > "$T/initfrom.yaml"
expect_error initfrom "garbage.tok" "$T/initfrom.yaml"

# 3. SIGTERM: stops after the step in flight, exit 0, every metrics line complete.
sed 's/steps: 6/steps: 100000/' "$T/job.yaml" > "$T/long.yaml"
"$WORKER" --config "$T/long.yaml" --run-dir "$T/long" > "$T/long.txt" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  [[ -s $T/long/metrics.jsonl ]] && break
  sleep 0.1
done
kill -TERM $pid
wait $pid || fail "worker exited non-zero after SIGTERM: $(cat "$T/long.txt")"
grep -q "stopped by signal" "$T/long/events.log" || fail "no stop event"
"$PY" -c "
import json, sys
lines = [json.loads(l) for l in open('$T/long/metrics.jsonl')]
assert lines and [l['step'] for l in lines] == list(range(1, len(lines) + 1))
print('SIGTERM: stopped cleanly after step', len(lines))
"
echo "worker_cli: all checks passed"
