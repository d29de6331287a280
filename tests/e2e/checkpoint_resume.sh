#!/usr/bin/env bash
# End to end, sharded checkpoints through the real binaries (ztctl launch / checkpoint / stop /
# verify / export, zt-coordinator, zt-worker under mpirun). The token file holds exactly K*G whole
# sequences (G = 4 sequences per step, T = 32), so step K+1 reads the sequences of step 1.
#  1. Bit-identical resume on the same world and stage (2 ranks, ZeRO 2; fp32 and bf16): a run of
#     S steps vs one stopped by `launch --steps K` (its at_end checkpoint) and continued with
#     `launch --resume`: every line of the appended metrics.jsonl (steps 1..S) has string-equal
#     loss and grad_norm. The same after `ztctl stop` mid-run (the on_stop checkpoint): `verify
#     --run-dir` passes, `latest` names the stop step, `--resume` continues bit-identically.
#  2. `ztctl checkpoint` during a running job: exit 0, "committed step N: DIR", DIR has a manifest
#     of step N, `status --json` shows last_checkpoint; with checkpoint.on_stop: false its stop
#     adds none; resuming from that (background-written) checkpoint continues bit-identically.
#  3. Resharding: a checkpoint of 2 ranks at ZeRO 3 resumed by 4 ranks at ZeRO 1 and by 1 rank at
#     ZeRO 0 (same train_batch_size, accumulation derived): losses within 1e-5 relative of the
#     uninterrupted run; events.log names the world size and stage changes.
#  4. Refusals (non-zero exit, a message naming the problem, nothing under checkpoints/ nor
#     metrics.jsonl changed): a flipped byte, a truncated shard, a deleted shard, another n_embd,
#     format_version 99, train.steps not beyond the checkpoint.
#  5. Export: `ztctl export` (fp32) loaded by a fresh job with model.init_from gives step 1 the
#     loss the resumed job reports for step K+1, exactly; PyTorch reads the file (parsed by hand)
#     and finds every tensor equal to the checkpoint's master shards (Conv1D weights transposed),
#     and the same loss from it; the bf16 / fp16 exports equal the fp32 values rounded (RNE).
#  6. A fresh launch (no --resume) into a run directory that holds checkpoints is refused.
# Needs /usr/bin/python3 with torch and numpy (exit 77 without). ZT_KEEP_TMP=1 keeps the work dir.
set -euo pipefail
SRC=${ZT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${ZT_BUILD_DIR:?}
ZTCTL=$BUILD/bin/ztctl
PY=/usr/bin/python3
for b in ztctl zt-coordinator zt-worker; do
  [[ -x $BUILD/bin/$b ]] || { echo "SKIP: $BUILD/bin/$b not built"; exit 77; }
done
[[ -f $BUILD/data/corpus.tok ]] || { echo "SKIP: $BUILD/data/corpus.tok not built"; exit 77; }
command -v mpirun > /dev/null || { echo "SKIP: mpirun not installed"; exit 77; }
if ! "$PY" -c 'import torch, numpy' > /dev/null 2>&1; then
  echo "SKIP: $PY cannot import torch and numpy"
  exit 77
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1
unset ZT_COORDINATOR ZT_COORDINATOR_KEY
T=$(mktemp -d /tmp/zt_e2e_ckpt_XXXXXX)
PIDS=()
cleanup() {
  # A killed `ztctl launch` takes its coordinator and mpirun with it (PR_SET_PDEATHSIG).
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
  if [[ ${ZT_KEEP_TMP:-0} == 1 ]]; then echo "work dir kept: $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$T"/*.txt; do [[ -f $f ]] && { echo "--- $f"; tail -8 "$f"; }; done >&2
  exit 1
}
# shellcheck source=tests/e2e/lib/jobs.sh
source "$(dirname "$0")/lib/jobs.sh"
START=$SECONDS

K=3 S=6 G=4 SEQ=32  # checkpoint step, steps, sequences per step, sequence length
# A loaded machine (a build, ctest -j) can keep the coordinator from answering within ztctl's
# default 5 s; nothing here measures its latency.
SLOW=(--reply-timeout 30)
R=$T/runs
mkdir -p "$R" "$T/bad" "$T/exp"

# ---- helpers -------------------------------------------------------------------------------------

cat > "$T/ck.py" <<'PY'
"""Checks for checkpoint_resume.sh: metrics comparisons, manifest fields, export vs shards."""
import json, os, struct, sys


def rows(path):
    # Numbers kept as the JSON text, so "equal" means the same printed double.
    with open(path) as f:
        return [json.loads(l, parse_float=str, parse_int=str) for l in f if l.strip()]


def by_step(path):
    out = {}
    for r in rows(path):
        s = int(r["step"])
        assert s not in out, f"{path}: step {s} appears twice"
        out[s] = r
    return out


def compare(ref_path, run_path, first, last, rtol):
    """Every step first..last of run (exactly those, in order) against ref."""
    ref = by_step(ref_path)
    run = rows(run_path)
    steps = [int(r["step"]) for r in run]
    assert steps == list(range(first, last + 1)), \
        f"{run_path}: steps {steps[:3]}..{steps[-3:]} ({len(steps)}) are not {first}..{last}"
    worst = {"loss": 0.0, "grad_norm": 0.0}
    for r in run:
        q = ref[int(r["step"])]
        for key in ("loss", "grad_norm"):
            if rtol == 0:
                assert r[key] == q[key], \
                    f"step {r['step']}: {key} {r[key]} in {run_path} but {q[key]} in {ref_path}"
            else:
                a, b = float(r[key]), float(q[key])
                rel = abs(a - b) / abs(b)
                worst[key] = max(worst[key], rel)
                tol = rtol if key == "loss" else 10 * rtol
                assert rel <= tol, (f"step {r['step']}: {key} {a} in {run_path} vs {b} in "
                                    f"{ref_path}: relative {rel:.3g} > {tol}")
    # The comparison can tell a resumed job from a fresh one: training moved the loss.
    if first > 1:
        assert ref[first]["loss"] != ref[1]["loss"], "the reference loss did not change"
    return worst


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "same":  # REF RUN FIRST LAST: string-equal loss and grad_norm
        compare(args[0], args[1], int(args[2]), int(args[3]), 0)
        print(f"steps {args[2]}..{args[3]} bit-identical")
    elif cmd == "close":  # REF RUN FIRST LAST RTOL
        w = compare(args[0], args[1], int(args[2]), int(args[3]), float(args[4]))
        print(f"max relative difference: loss {w['loss']:.2g}, grad_norm {w['grad_norm']:.2g}")
    elif cmd == "loss":  # METRICS STEP: the loss text of one step
        print(by_step(args[0])[int(args[1])]["loss"])
    elif cmd == "manifest":  # DIR KEY...: values of manifest fields (dotted paths)
        with open(os.path.join(args[0], "manifest.json")) as f:
            m = json.load(f)
        out = []
        for key in args[1:]:
            v = m
            for part in key.split("."):
                v = v[part]
            out.append(str(v))
        print(" ".join(out))
    elif cmd == "status":  # STATUS_JSON STEP DIR: last_checkpoint of a running job
        with open(args[0]) as f:
            s = json.load(f)
        assert s["state"] == "running", s["state"]
        lc = s.get("last_checkpoint")
        assert lc == {"step": int(args[1]), "dir": args[2]}, f"last_checkpoint {lc}"
    elif cmd == "list":  # RUN_DIR: the committed checkpoint directories, space-separated
        root = os.path.join(args[0], "checkpoints")
        print(" ".join(sorted(d for d in os.listdir(root) if d.startswith("step_"))))
    elif cmd == "bump_version":  # DIR: format_version 99
        p = os.path.join(args[0], "manifest.json")
        with open(p) as f:
            m = json.load(f)
        m["format_version"] = 99
        with open(p, "w") as f:
            json.dump(m, f, indent=1)
    elif cmd == "flip":  # FILE: flips one byte in the tensor data (not the header)
        with open(args[0], "r+b") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            size = os.fstat(f.fileno()).st_size
            pos = 8 + n + (size - 8 - n) // 2
            f.seek(pos)
            b = f.read(1)
            f.seek(pos)
            f.write(bytes([b[0] ^ 0x01]))
    elif cmd == "tokens":  # IN OUT COUNT: the first COUNT tokens of an llm.c file
        import numpy as np
        blob = open(args[0], "rb").read()
        hdr = np.frombuffer(blob[:1024], dtype="<i4")
        assert hdr[0] == 20240520 and hdr[1] == 1, hdr[:3]
        n = int(args[2])
        toks = np.frombuffer(blob[1024:], dtype="<u2")[: int(hdr[2])]
        assert toks.size >= n
        out = np.zeros(256, dtype="<i4")
        out[0], out[1], out[2] = 20240520, 1, n
        with open(args[1], "wb") as f:
            f.write(out.tobytes())
            f.write(toks[:n].astype("<u2").tobytes())
    elif cmd == "export":
        check_export(*args)
    else:
        raise SystemExit(f"unknown command {cmd}")


def read_safetensors(path):
    """name -> (dtype, shape, raw bytes), and the metadata: the format by hand."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        assert 0 <= b <= e <= len(blob) - base, f"{path}: {name}: offsets {b}, {e}"
        out[name] = (info["dtype"], tuple(info["shape"]), blob[base + b: base + e])
    return out, meta


def check_export(ckpt, f32_path, bf16_path, f16_path, tools, tokens, loss_text, G):
    import torch
    torch.set_num_threads(1)
    tdt = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}

    def tensor(entry):
        dt, shape, raw = entry
        if not raw:
            return torch.empty(shape, dtype=tdt[dt])
        t = torch.frombuffer(bytearray(raw), dtype=tdt[dt])
        return t.reshape(shape)

    with open(os.path.join(ckpt, "manifest.json")) as f:
        m = json.load(f)
    # The master weights from the shards, by the manifest's pieces.
    pieces = {}
    for sh in m["shards"]:
        st, _ = read_safetensors(os.path.join(ckpt, sh["file"]))
        for name, begin, count in sh["pieces"]:
            t = tensor(st["master/" + name])
            assert t.dtype == torch.float32 and t.shape == (count,), (name, t.dtype, t.shape)
            pieces.setdefault(name, []).append((begin, t))
    exp32, _ = read_safetensors(f32_path)
    assert set(exp32) == set(pieces), \
        f"export names {sorted(set(exp32) ^ set(pieces))} differ from the checkpoint's"
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    total = 0
    f32 = {}
    for name, (dt, shape, raw) in exp32.items():
        assert dt == "F32", (name, dt)
        numel = 1
        for d in shape:
            numel *= d
        flat = torch.full((numel,), float("nan"))
        covered = torch.zeros(numel, dtype=torch.int32)
        for begin, t in pieces[name]:
            flat[begin:begin + t.numel()] = t
            covered[begin:begin + t.numel()] += 1
        assert bool((covered == 1).all()), f"{name}: the pieces do not cover it exactly once"
        if name.endswith(conv1d):
            assert len(shape) == 2
            internal = flat.reshape(shape[1], shape[0]).t()  # (out, in) stored, HF is (in, out)
        else:
            internal = flat.reshape(shape)
        e = tensor(exp32[name])
        assert torch.equal(e, internal), \
            f"{name}: export differs from the shards (max |d| {(e - internal).abs().max():.3g})"
        assert internal.abs().sum() > 0, f"{name}: all zeros"
        f32[name] = e
        total += numel
    assert total == m["num_parameters"], (total, m["num_parameters"])
    rounded_up = 0
    for path, dt, tdtype in ((bf16_path, "BF16", torch.bfloat16), (f16_path, "F16", torch.float16)):
        ex, _ = read_safetensors(path)
        assert set(ex) == set(f32), f"{path}: other tensor names"
        for name, ref in f32.items():
            assert ex[name][0] == dt, (path, name, ex[name][0])
            got, want = tensor(ex[name]), ref.to(tdtype)  # torch rounds to nearest even
            assert got.shape == want.shape, (name, got.shape, want.shape)
            assert torch.equal(got.view(torch.int16), want.view(torch.int16)), \
                f"{path}: {name} is not the fp32 value rounded to {dt}"
            if dt == "BF16":  # the check tells rounding from truncation (the top 16 bits)
                cut = (ref.contiguous().view(torch.int32) >> 16).to(torch.int16)
                rounded_up += int((cut != want.view(torch.int16)).sum())
    assert rounded_up > 0, "no bf16 value where rounding to nearest differs from truncation"
    # PyTorch's GPT-2 (tools/torch_gpt2.py, written from DESIGN.md) with the exported weights:
    # the loss on sequences 0..G-1, which step K+1 of the resumed job trains on.
    sys.path.insert(0, tools)
    import torch_gpt2 as tg
    mc = m["model"]
    model = tg.GPT2(tg.GPT2Config(mc["vocab_size"], mc["block_size"], mc["n_layer"], mc["n_head"],
                                  mc["n_embd"]))
    model.load_hf_state(f32, source=f32_path)
    data = tg.SequenceData(tg.read_token_file(tokens), mc["block_size"])
    x, y = data.batch(0, int(G))
    with torch.no_grad():
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 y.reshape(-1)).item()
    want = float(loss_text)
    rel = abs(loss - want) / want
    assert rel < 1e-5, f"PyTorch loss {loss} from the export vs {want}: relative {rel:.3g}"
    print(f"{len(f32)} tensors, {total} parameters equal to the shards; bf16/fp16 exports are "
          f"them rounded to nearest even ({rounded_up} bf16 values rounded up); "
          f"PyTorch loss {loss:.6f} vs {want} (relative {rel:.1g})")


try:
    main()
except AssertionError as e:
    print(f"check failed: {e}", file=sys.stderr)
    sys.exit(1)
PY
ck() { "$PY" "$T/ck.py" "$@"; }

# write_config FILE [key=value ...]: steps, stage, embd, prec (fp32|bf16), batch (split: micro 2 x
# accumulation 1 on 2 ranks; global: train_batch_size 4, micro 1, accumulation derived), init,
# extra (a YAML line).
write_config() {
  local f=$1
  shift
  local steps=$S stage=2 embd=32 prec=fp32 batch=split init="" extra=""
  local kv
  for kv in "$@"; do local "$kv"; done
  {
    if [[ $batch == split ]]; then
      printf 'train_micro_batch_size_per_gpu: 2\ngradient_accumulation_steps: 1\n'
    else
      printf 'train_batch_size: %d\ntrain_micro_batch_size_per_gpu: 1\n' $G
    fi
    echo "steps_per_print: 1000"
    echo "gradient_clipping: 1.0"
    echo "model: {family: gpt2, vocab_size: 256, block_size: $SEQ, n_layer: 2, n_head: 2," \
      "n_embd: $embd, seed: 3${init:+, init_from: $init}}"
    echo "data: {path: $T/tokens.bin, format: llmc}"
    echo "train: {steps: $steps}"
    echo "optimizer: {type: AdamW, params: {lr: 0.002, weight_decay: 0.1}}"
    echo "scheduler: {type: WarmupLR, params: {warmup_min_lr: 0, warmup_max_lr: 0.002," \
      "warmup_num_steps: 10, warmup_type: linear}}"
    echo "zero_optimization: {stage: $stage}"
    if [[ $prec == bf16 ]]; then echo "bf16: {enabled: true}"; fi
    if [[ -n $extra ]]; then echo "$extra"; fi
  } > "$f"
}

# launch LOG ARGS...: `ztctl launch ARGS -- --oversubscribe` in the foreground; sets RC.
launch() {
  local log=$1
  shift
  RC=0
  timeout -k 10 180 "$ZTCTL" launch "$@" -- --oversubscribe > "$T/$log.txt" 2>&1 || RC=$?
}
launch_ok() {
  launch "$@"
  [[ $RC == 0 ]] || fail "$1: ztctl launch exited $RC: $(tail -5 "$T/$1.txt")"
}
step_dir() { printf '%s/checkpoints/step_%08d' "$1" "$2"; }
latest_is() {  # RUN_DIR STEP
  local want got
  want=$(printf 'step_%08d' "$2")
  got=$(cat "$1/checkpoints/latest" 2> /dev/null || true)
  [[ $got == "$want" ]] || fail "$1: checkpoints/latest is '$got', not $want"
  [[ -f $1/checkpoints/$want/manifest.json ]] || fail "$1: $want has no manifest.json"
}

# The data: exactly K*G whole sequences of SEQ tokens (+1 for the last target), so sequence K*G
# wraps to 0 and step K+1 trains on step 1's sequences.
ck tokens "$BUILD/data/corpus.tok" "$T/tokens.bin" $((K * G * SEQ + 1)) || fail "token file"

# ---- 1. bit-identical resume, same world and stage -----------------------------------------------

for variant in "a fp32" "b bf16"; do
  read -r label prec <<< "$variant"
  write_config "$T/$prec.yaml" prec="$prec"
  launch_ok "$prec.full" --config "$T/$prec.yaml" --np 2 --run-dir "$R/$prec.full"
  launch_ok "$prec.part" --config "$T/$prec.yaml" --np 2 --run-dir "$R/$prec.part" --steps $K
  latest_is "$R/$prec.part" $K
  got=$(ck manifest "$(step_dir "$R/$prec.part" $K)" step world_size zero_stage dtype)
  [[ $got == "$K 2 2 $prec" ]] || fail "$prec: manifest step, world, stage, dtype: $got"
  launch_ok "$prec.resume" --config "$T/$prec.yaml" --np 2 --run-dir "$R/$prec.part" --resume
  grep -qF "resuming from $(step_dir "$R/$prec.part" $K) at step $K" "$R/$prec.part/events.log" \
    || fail "$prec: events.log: $(cat "$R/$prec.part/events.log")"
  latest_is "$R/$prec.part" $S
  out=$(ck same "$R/$prec.full/metrics.jsonl" "$R/$prec.part/metrics.jsonl" 1 $S) \
    || fail "$prec: the resumed run differs from the uninterrupted one"
  echo "1$label. $prec, 2 ranks, ZeRO 2: stopped at step $K (launch --steps), --resume to $S: $out"
done

# ---- 2. `ztctl checkpoint` while a job runs (this job has checkpoint.on_stop: false) ----------

write_config "$T/long.yaml" steps=10000000
write_config "$T/long_nostop.yaml" steps=10000000 extra="checkpoint: {on_stop: false}"
"$ZTCTL" launch --config "$T/long_nostop.yaml" --np 2 --run-dir "$R/ctl" -- --oversubscribe \
  > "$T/ctl.txt" 2>&1 &
LPID=$!
PIDS+=("$LPID")
wait_metrics "$R/ctl"
rc=0
"$ZTCTL" checkpoint --run-dir "$R/ctl" "${SLOW[@]}" --timeout 120 > "$T/ckpt.txt" 2>&1 || rc=$?
[[ $rc == 0 ]] || fail "ztctl checkpoint exited $rc"
N=$(sed -n 's/^ztctl checkpoint: committed step \([0-9]*\): .*/\1/p' "$T/ckpt.txt")
NDIR=$(sed -n 's/^ztctl checkpoint: committed step [0-9]*: \(.*\)$/\1/p' "$T/ckpt.txt")
[[ -n $N && -n $NDIR ]] || fail "ztctl checkpoint: no 'committed step N: DIR': $(cat "$T/ckpt.txt")"
[[ $NDIR == "$(step_dir "$R/ctl" "$N")" ]] || fail "ztctl checkpoint: committed $NDIR"
[[ -f $NDIR/manifest.json ]] || fail "ztctl checkpoint: $NDIR has no manifest.json"
got=$(ck manifest "$NDIR" step)
[[ $got == "$N" ]] || fail "$NDIR: manifest step $got, not $N"
"$ZTCTL" status --run-dir "$R/ctl" --json "${SLOW[@]}" > "$T/status.json" \
  || fail "status --json: exit $?"
ck status "$T/status.json" "$N" "$NDIR" || fail "status --json: $(cat "$T/status.json")"
"$ZTCTL" stop --run-dir "$R/ctl" "${SLOW[@]}" > "$T/ctl_stop.txt" 2>&1 || fail "ztctl stop: exit $?"
wait_exit "$LPID" 60
[[ $RC == 0 ]] || fail "ctl: launch exited $RC after ztctl stop"
J2=$(sed -n 's/.*stopped after step \([0-9]*\).*/\1/p' "$T/ctl_stop.txt" | head -1)
[[ -n $J2 && $J2 -gt $N ]] || fail "ctl: stopped after step '$J2', not after $N"
latest_is "$R/ctl" "$N"  # checkpoint.on_stop: false
[[ $(ck list "$R/ctl") == "$(basename "$NDIR")" ]] || fail "ctl: checkpoints $(ck list "$R/ctl")"
echo "2. ztctl checkpoint while running: exit 0, 'committed step $N', its manifest there," \
  "status --json shows it; stopped after step $J2 without a checkpoint (on_stop: false)"

# ---- 1s. a job stopped by `ztctl stop` (the on_stop checkpoint) ----------------------------------

"$ZTCTL" launch --config "$T/long.yaml" --np 2 --run-dir "$R/long" -- --oversubscribe \
  > "$T/long.txt" 2>&1 &
LPID=$!
PIDS+=("$LPID")
wait_metrics "$R/long"
"$ZTCTL" stop --run-dir "$R/long" "${SLOW[@]}" > "$T/stop.txt" 2>&1 || fail "ztctl stop: exit $?"
J=$(sed -n 's/.*stopped after step \([0-9]*\).*/\1/p' "$T/stop.txt" | head -1)
[[ -n $J ]] || fail "ztctl stop: $(cat "$T/stop.txt")"
wait_exit "$LPID" 60
[[ $RC == 0 ]] || fail "long: launch exited $RC after ztctl stop"
"$ZTCTL" verify --run-dir "$R/long" > "$T/verify.txt" 2>&1 || fail "verify --run-dir: exit $?"
grep -qF "is complete: step $J," "$T/verify.txt" || fail "verify: $(cat "$T/verify.txt")"
latest_is "$R/long" "$J"
[[ $(wc -l < "$R/long/metrics.jsonl") == "$J" ]] || fail "long: not $J metrics lines"
launch_ok long.resume --config "$T/long.yaml" --np 2 --run-dir "$R/long" --resume --steps $((J + 3))
latest_is "$R/long" $((J + 3))
REF_STEPS=$((J + 3 > N + 2 ? J + 3 : N + 2))
launch_ok long.ref --config "$T/long.yaml" --np 2 --run-dir "$R/long.ref" --steps $REF_STEPS
ck same "$R/long.ref/metrics.jsonl" "$R/long/metrics.jsonl" 1 $((J + 3)) > /dev/null \
  || fail "the run resumed after ztctl stop differs from the uninterrupted one"
echo "1s. ztctl stop after step $J: verify --run-dir passes, latest names step $J; --resume to" \
  "$((J + 3)): steps 1..$((J + 3)) bit-identical"
# The checkpoint `ztctl checkpoint` took (written in the background while training went on).
launch_ok ctl.resume --config "$T/long.yaml" --np 2 --run-dir "$R/ctl.resume" \
  --resume-from "$NDIR" --steps $((N + 2))
out=$(ck same "$R/long.ref/metrics.jsonl" "$R/ctl.resume/metrics.jsonl" $((N + 1)) $((N + 2))) \
  || fail "the run resumed from the ztctl checkpoint differs from the uninterrupted one"
echo "2r. resumed from the ztctl checkpoint of step $N: $out"

# ---- 3. resharding: 2 ranks at ZeRO 3 -> 4 ranks at ZeRO 1, 1 rank at ZeRO 0 -------------------

write_config "$T/z3.yaml" batch=global stage=3
write_config "$T/z1.yaml" batch=global stage=1
write_config "$T/z0.yaml" batch=global stage=0
launch_ok z3.full --config "$T/z3.yaml" --np 2 --run-dir "$R/z3.full"
launch_ok z3.part --config "$T/z3.yaml" --np 2 --run-dir "$R/z3.part" --steps $K
CK3=$(step_dir "$R/z3.part" $K)
[[ $(ck manifest "$CK3" world_size zero_stage) == "2 3" ]] || fail "$CK3: not 2 ranks at ZeRO 3"
summary=""
for to in "4 1" "1 0"; do
  read -r np stage <<< "$to"
  launch_ok "z3to$np" --config "$T/z$stage.yaml" --np "$np" --run-dir "$R/z3to$np" \
    --resume-from "$CK3"
  for what in "resume: world size: 2 -> $np" "resume: zero_optimization.stage: 3 -> $stage"; do
    grep -qF "$what" "$R/z3to$np/events.log" || fail "z3to$np: events.log lacks '$what'"
  done
  out=$(ck close "$R/z3.full/metrics.jsonl" "$R/z3to$np/metrics.jsonl" $((K + 1)) $S 1e-5) \
    || fail "resumed on $np ranks at ZeRO $stage: the losses differ"
  summary+="; $np rank(s), ZeRO $stage: $out"
done
echo "3. checkpoint of 2 ranks at ZeRO 3 (step $K) resumed to step $S$summary"

# ---- 4. refusals: a clear error, nothing written ------------------------------------------------

GOOD=$(step_dir "$R/fp32.part" $K)
VICTIM=$R/fp32.part  # its latest is step S; an accepted resume from step K would rewrite things
for c in crc trunc missing version shape; do cp -r "$GOOD" "$T/bad/$c"; done
ck flip "$T/bad/crc/rank_00001.safetensors"
truncate -s -64 "$T/bad/trunc/rank_00000.safetensors"
rm "$T/bad/missing/rank_00001.safetensors"
ck bump_version "$T/bad/version"
write_config "$T/more.yaml" steps=$((S + 4))
write_config "$T/wide.yaml" steps=$((S + 4)) embd=64
snapshot() {
  {
    find "$VICTIM/checkpoints" "$T/bad" | LC_ALL=C sort
    find "$VICTIM/checkpoints" "$T/bad" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    sha256sum "$VICTIM/metrics.jsonl" "$VICTIM/config.resolved.yaml"
  } > "$1"
}
refuse() {  # NAME CONFIG RESUME_ARGS... -- WORDS...: refused, messages with every word, no change
  local name=$1 cfg=$2 args=() words=()
  shift 2
  while [[ $1 != -- ]]; do args+=("$1"); shift; done
  shift
  words=("$@")
  snapshot "$T/before.sum"
  launch "refuse_$name" --config "$cfg" --np 2 --run-dir "$VICTIM" "${args[@]}"
  [[ $RC != 0 ]] || fail "$name: launch exited 0"
  for w in "${words[@]}"; do
    grep -qF -- "$w" "$T/refuse_$name.txt" || fail "$name: the message lacks '$w'"
  done
  snapshot "$T/after.sum"
  diff "$T/before.sum" "$T/after.sum" > /dev/null \
    || fail "$name: files changed: $(diff "$T/before.sum" "$T/after.sum" | head -5)"
}
[[ $(wc -l < "$VICTIM/metrics.jsonl") == "$S" ]] || fail "$VICTIM: not $S metrics lines"
refuse crc "$T/more.yaml" --resume-from "$T/bad/crc" -- "$T/bad/crc/rank_00001.safetensors" checksum
refuse trunc "$T/more.yaml" --resume-from "$T/bad/trunc" -- "$T/bad/trunc/rank_00000.safetensors" \
  truncated
refuse missing "$T/more.yaml" --resume-from "$T/bad/missing" -- \
  "$T/bad/missing/rank_00001.safetensors" missing
refuse shape "$T/wide.yaml" --resume-from "$T/bad/shape" -- model.n_embd 32 64
refuse version "$T/more.yaml" --resume-from "$T/bad/version" -- "format version 99" newer
refuse steps "$T/fp32.yaml" --resume -- train.steps "step $S"
# `ztctl verify` says the same about each damaged copy, and passes the intact one.
for c in crc:checksum trunc:truncated missing:missing version:newer; do
  rc=0
  "$ZTCTL" verify --checkpoint "$T/bad/${c%%:*}" > "$T/verify_bad.txt" 2>&1 || rc=$?
  if [[ $rc != 1 ]] || ! grep -qF "${c#*:}" "$T/verify_bad.txt"; then
    fail "verify ${c%%:*}: exit $rc: $(cat "$T/verify_bad.txt")"
  fi
done
"$ZTCTL" verify --checkpoint "$T/bad/shape" > "$T/verify_bad.txt" 2>&1 \
  || fail "verify of an intact copy: exit $?"
# The one copy left intact is accepted, so the refusals above were about the damage.
launch_ok accepted --config "$T/more.yaml" --np 2 --run-dir "$R/accepted" \
  --resume-from "$T/bad/shape"
echo "4. launch --resume refused (non-zero exit; ztctl verify agrees), a message naming the" \
  "problem, nothing changed:" \
  "flipped byte (checksum), truncated shard, deleted shard, n_embd 64, format_version 99," \
  "train.steps $S at step $S"

# ---- 5. export round trip -----------------------------------------------------------------------

for dt in fp32 bf16 fp16; do
  "$ZTCTL" export --checkpoint "$GOOD" --out "$T/exp/$dt.safetensors" --dtype $dt \
    > "$T/export_$dt.txt" 2>&1 || fail "ztctl export --dtype $dt exited non-zero"
done
write_config "$T/init.yaml" steps=1 init="$T/exp/fp32.safetensors"
launch_ok init --config "$T/init.yaml" --np 2 --run-dir "$R/init"
want=$(ck loss "$R/fp32.part/metrics.jsonl" $((K + 1)))
got=$(ck loss "$R/init/metrics.jsonl" 1)
fresh=$(ck loss "$R/fp32.full/metrics.jsonl" 1)
[[ $got == "$want" ]] \
  || fail "init_from the export: step 1 loss $got, the resumed step $((K + 1)) has $want"
[[ $got != "$fresh" ]] || fail "init_from the export: step 1 loss $got is the fresh model's"
out=$(ck export "$GOOD" "$T/exp/fp32.safetensors" "$T/exp/bf16.safetensors" \
  "$T/exp/fp16.safetensors" "$SRC/tools" "$T/tokens.bin" "$want" $G) \
  || fail "the export does not match the checkpoint"
echo "5. export of step $K: init_from job's step-1 loss $got == resumed step $((K + 1)); $out"
# ---- 6. a fresh job does not start over a run directory with checkpoints ---------------------------

before=$(cd "$R/fp32.part" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
launch fresh --config "$T/init.yaml" --np 2 --run-dir "$R/fp32.part"
[[ $RC != 0 ]] || fail "a fresh launch into a run dir with checkpoints exited 0"
grep -q "already holds a job's checkpoints (latest: .*step_.*): continue that job with --resume" \
  "$T/fresh.txt" || fail "fresh launch over checkpoints: $(tail -3 "$T/fresh.txt")"
after=$(cd "$R/fp32.part" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
[[ $before == "$after" ]] || fail "a refused fresh launch changed the run dir"
echo "6. a fresh launch into a run dir with checkpoints is refused (use --resume); nothing changed"
echo "checkpoint_resume: all checks passed in $((SECONDS - START)) s"
