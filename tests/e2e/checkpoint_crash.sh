#!/usr/bin/env bash
# Crash consistency of checkpoints (Note [checkpoint commit] in runtime/checkpoint/commit.h), end to
# end with the real binaries: zt-coordinator + `mpirun -np 2 zt-worker --coordinator`.
# A job checkpoints every step (async writes of ~5 MB per rank, about as long as a step; the
# coordinator commits with four fsyncs and retention keep_last 2) and is killed with SIGKILL at a
# random moment (0-1.5 s after its first commit), ZT_CRASH_ROUNDS (10) times on the same run
# directory, alternating a random worker rank and the coordinator; every round but the first
# resumes with --resume. After each round:
#  - every process of the round has ended by itself within 30 s (the coordinator fails a dead rank
#    after the 3 s heartbeat timeout, the workers abort without their coordinator): no hang, no
#    process left;
#  - `latest` exists, has moved forward, and names a complete checkpoint: `ztctl verify --run-dir`
#    passes (sizes and xxh3) and an independent Python check finds manifest.json of that step, one
#    file per rank of the manifest's size, each a well-formed safetensors file;
#  - checkpoints/ holds nothing but latest, latest.tmp, complete step_N and step_N.replaced-MS,
#    staging step_N.tmp, and step_N without a manifest only older than latest (a retention victim
#    whose manifest was removed, killed before remove_all finished): never a manifest-less
#    directory `latest` could name;
#  - the job of a resumed round started from the checkpoint `latest` named before it.
# One line per round says what was killed when, what was in flight (staging directories, shard
# files being written), what a kill inside a commit left, and which checkpoint `latest` names.
# A job that fails by itself on a heartbeat timeout (an overloaded machine: ctest -j, builds) is a
# crash all the same: checked likewise, the round repeated if nothing was committed, at most 3.
# Finally the job runs to its end with --resume: exit 0 everywhere, metrics.jsonl has every step
# and ends at the last, every loss is finite, the loss fell from step 1, steps run twice (after
# the resumed checkpoint, before the crash) have the same loss, the final checkpoint verifies;
# and some job removed the stale staging a crash left ("removed an incomplete checkpoint").
set -euo pipefail
BUILD=${ZT_BUILD_DIR:?}
COORD=$BUILD/bin/zt-coordinator
WORKER=$BUILD/bin/zt-worker
ZTCTL=$BUILD/bin/ztctl
for b in "$COORD" "$WORKER" "$ZTCTL"; do [[ -x $b ]] || { echo "SKIP: $b not built"; exit 77; }; done
[[ -f $BUILD/data/corpus.tok ]] || { echo "SKIP: $BUILD/data/corpus.tok not built"; exit 77; }
command -v mpirun > /dev/null || { echo "SKIP: mpirun not installed"; exit 77; }
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3 || true)
[[ -n $PY ]] || { echo "SKIP: python3 not installed"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMP_NUM_THREADS=1
unset ZT_COORDINATOR ZT_COORDINATOR_KEY
ROUNDS=${ZT_CRASH_ROUNDS:-10}
FINAL_EXTRA_STEPS=40
T=$(mktemp -d /tmp/zt_e2e_ckpt_crash_XXXXXX)
RUN=$T/run
CK=$RUN/checkpoints
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2> /dev/null || true; done
  # Workers outlive a killed mpirun only briefly; anything still naming this run dir is ours.
  for p in $(pgrep -f -- "--run-dir $RUN" 2> /dev/null || true); do kill -KILL "$p" 2> /dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$T"/*.txt; do [[ -f $f ]] && { echo "--- $f"; tail -8 "$f"; }; done >&2
  [[ -f $RUN/events.log ]] && { echo "--- events.log"; tail -15 "$RUN/events.log"; } >&2
  [[ -d $CK ]] && { echo "--- checkpoints/"; ls -la "$CK"; } >&2
  exit 1
}
now_ms() { date +%s%3N; }
T0=$(now_ms)

cat > "$T/job.yaml" << YAML
train_micro_batch_size_per_gpu: 2
gradient_accumulation_steps: 1
steps_per_print: 1000
model: {family: gpt2, vocab_size: 256, block_size: 64, n_layer: 4, n_head: 4, n_embd: 128, seed: 3}
data: {path: $BUILD/data/corpus.tok, format: llmc, shuffle: false}
train: {steps: 1000000}
optimizer: {type: AdamW, params: {lr: 0.001}}
zero_optimization: {stage: 2, overlap_comm: true}
checkpoint: {every_steps: 1, keep_last: 2, async: true}
comm: {heartbeat_timeout_s: 3, heartbeat_interval_s: 0.3}
YAML

cat > "$T/check.py" << 'PY'
"""check.py ckpt ROOT MIN_STEP KEEP_LAST -> checks checkpoints/, prints
     "STEP REPLACED STAGING CUT..." (CUT: what a kill inside a commit left, or -)
   check.py metrics FILE FINAL   -> checks metrics.jsonl after the final run, prints a summary"""
import json, math, os, re, struct, sys

def die(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)

def check_complete(d):
    """A committed checkpoint: manifest.json, one file per rank of the right size, valid headers."""
    mpath = os.path.join(d, "manifest.json")
    if not os.path.isfile(mpath):
        die(f"{d}: no manifest.json")
    m = json.load(open(mpath))
    if m.get("format") != "zerotrain-checkpoint":
        die(f"{mpath}: format {m.get('format')!r}")
    shards = m["shards"]
    if len(shards) != m["world_size"] or sorted(s["rank"] for s in shards) != list(range(m["world_size"])):
        die(f"{mpath}: {len(shards)} shards for world size {m['world_size']}")
    for s in shards:
        p = os.path.join(d, s["file"])
        if not os.path.isfile(p):
            die(f"{p} (rank {s['rank']}) is missing")
        size = os.path.getsize(p)
        if size != s["size"]:
            die(f"{p}: {size} bytes, the manifest says {s['size']}")
        with open(p, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or 8 + n > size:
                die(f"{p}: safetensors header length {n} does not fit {size} bytes")
            header = json.loads(f.read(n))
        end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
        if 8 + n + end != size:
            die(f"{p}: tensors end at {8 + n + end}, the file has {size} bytes")
    return m

def ckpt(root, min_step, keep_last):
    latest = os.path.join(root, "latest")
    if not os.path.isfile(latest):
        if min_step == 0 and not any(re.fullmatch(r"step_\d{8}(\.replaced-\d+)?", e) for e in os.listdir(root)):
            print(0, 0, 0, len(os.listdir(root)), "-")  # nothing committed yet
            return
        die(f"{latest} does not exist")
    name = open(latest).read()
    if not re.fullmatch(r"step_\d{8}\n", name):
        die(f"{latest} holds {name!r}")
    name = name.strip()
    step = int(name[5:])
    m = check_complete(os.path.join(root, name))
    if m["step"] != step or m["trainer"]["step"] != step:
        die(f"{name}/manifest.json is step {m['step']}")
    if step < min_step:
        die(f"latest names step {step}, expected step {min_step} or later: it must move forward")
    # What a kill inside commit_checkpoint leaves behind, by name (crash-safe, but visible).
    replaced, staging, complete, cuts = 0, 0, [], []
    for e in sorted(os.listdir(root)):
        p = os.path.join(root, e)
        if e in ("latest", "latest.tmp"):
            continue
        if re.fullmatch(r"step_\d{8}\.tmp", e):
            staging += 1  # staging of a crashed job (removed by the next one) or of a write in flight
            if os.path.isfile(os.path.join(p, "manifest.json")):
                cuts.append(f"manifest-in-staging:{e}")  # killed between commit steps 2 and 3
        elif re.fullmatch(r"step_\d{8}\.replaced-\d+", e):
            check_complete(p)
            replaced += 1
        elif re.fullmatch(r"step_\d{8}", e):
            if os.path.isfile(os.path.join(p, "manifest.json")):
                check_complete(p)
                if int(e[5:]) > step:
                    cuts.append(f"ahead-of-latest:{e}")  # killed between steps 3 and 4
                else:
                    complete.append(e)
            elif int(e[5:]) < step:
                # Retention removes the manifest first: killed before remove_all finished.
                cuts.append(f"half-removed:{e}{sorted(os.listdir(p))}")
            else:
                die(f"{p}: a checkpoint directory without a manifest, not older than latest ({name})")
        else:
            die(f"unexpected entry in {root}: {e}")
    # Killed between `latest` and retention (steps 4 and 5).
    cuts += [f"over-keep_last:{e}" for e in complete[:max(0, len(complete) - keep_last)]]
    print(step, replaced, staging, " ".join(cuts) or "-")

def metrics(path, final):
    rows = []
    for i, line in enumerate(open(path), 1):
        try:
            rows.append(json.loads(line))
        except ValueError:
            die(f"{path}:{i}: not JSON: {line[:120]!r}")
    for r in rows:
        if not math.isfinite(r["loss"]):
            die(f"{path}: step {r['step']}: loss {r['loss']}")
    if rows[-1]["step"] != final:
        die(f"{path}: the last line is step {rows[-1]['step']}, not {final}")
    first = next(r for r in rows if r["step"] == 1)
    if not rows[-1]["loss"] < first["loss"] - 0.5:
        die(f"{path}: the loss went from {first['loss']} (step 1) to {rows[-1]['loss']} (step {final})")
    # Steps between a resumed checkpoint and the crash ran twice: from the same state and data,
    # so with the same loss.
    seen, reruns, worst = {}, 0, 0.0
    for r in rows:
        s = r["step"]
        if s in seen:
            reruns += 1
            worst = max(worst, abs(r["loss"] - seen[s]) / abs(seen[s]))
        else:
            seen[s] = r["loss"]
    if sorted(seen) != list(range(1, final + 1)):
        die(f"{path}: steps missing: {sorted(set(range(1, final + 1)) - set(seen))[:10]}")
    if worst > 1e-4:
        die(f"{path}: a re-run step's loss differs by {worst:.3g} (relative) from its first run")
    print(f"steps 1..{final} ({len(rows)} lines, {reruns} re-run after a resume, max relative "
          f"loss difference {worst:.2g}); loss {first['loss']:.3f} at step 1 -> {rows[-1]['loss']:.3f}")

if sys.argv[1] == "ckpt":
    ckpt(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
else:
    metrics(sys.argv[2], int(sys.argv[3]))
PY

alive() { local p; for p in "$@"; do kill -0 "$p" 2> /dev/null && return 0; done; return 1; }

# start_job TAG [coordinator args...]: sets CPID, MPID.
start_job() {
  local tag=$1
  shift
  rm -f "$RUN/coordinator.endpoint"
  "$COORD" --config "${CONFIG:-$T/job.yaml}" --run-dir "$RUN" --world 2 "$@" > "$T/$tag.coord.txt" 2>&1 &
  CPID=$!
  PIDS+=("$CPID")
  for _ in $(seq 1 200); do
    [[ -s $RUN/coordinator.endpoint ]] && break
    alive "$CPID" || fail "$tag: the coordinator exited before listening"
    sleep 0.05
  done
  [[ -s $RUN/coordinator.endpoint ]] || fail "$tag: no endpoint file"
  mpirun -np 2 --oversubscribe "$WORKER" --coordinator "$(cat "$RUN/coordinator.endpoint")" \
    --run-dir "$RUN" > "$T/$tag.workers.txt" 2>&1 &
  MPID=$!
  PIDS+=("$MPID")
}

# wait_all SECONDS PID...: waits until none of the PIDs is alive (bash reaps its own children as
# they exit; the workers are mpirun's).
wait_all() {
  local limit=$1 deadline
  shift
  deadline=$(($(now_ms) + limit * 1000))
  while alive "$@"; do
    if (($(now_ms) > deadline)); then
      ps -o pid,ppid,stat,etime,args -p "$(echo "$@" | tr ' ' ',')" >&2 || true
      fail "processes still running ${limit} s after the kill (a hang)"
    fi
    sleep 0.1
  done
}

shopt -s nullglob
prev_step=0
stale_removed_rounds=0
kills=0
worker_kills=0
staging_at_kill=0
writing_at_kill=0
victim_writing=0
spontaneous=0
commit_cuts=()
seen_cuts=()
attempt=0
round=0
while ((round < ROUNDS)); do
  round=$((round + 1))
  attempt=$((attempt + 1))
  tag=a$attempt
  ev0=0
  [[ -f $RUN/events.log ]] && ev0=$(wc -l < "$RUN/events.log")
  if ((prev_step == 0)); then start_job "$tag"; else start_job "$tag" --resume; fi
  t_start=$(now_ms)
  # Until this job has committed a checkpoint of its own.
  committed=0
  for _ in $(seq 1 1200); do
    if tail -n +$((ev0 + 1)) "$RUN/events.log" 2> /dev/null | grep -q "checkpoint step [0-9]* committed"; then
      committed=1
      break
    fi
    if ! alive "$CPID" || ! alive "$MPID"; then break; fi
    sleep 0.05
  done
  ((committed)) || ! alive "$CPID" || ! alive "$MPID" || fail "$tag: no checkpoint committed within 60 s"
  mapfile -t workers < <(pgrep -P "$MPID" -x zt-worker || true)
  PIDS+=("${workers[@]}")
  killed=0
  if ((committed)) && alive "$CPID" && alive "$MPID"; then
    ((${#workers[@]} == 2)) || fail "$tag: ${#workers[@]} zt-worker processes under mpirun $MPID"
    delay_ms=$((RANDOM % 1500))
    sleep "$((delay_ms / 1000)).$(printf %03d $((delay_ms % 1000)))"
    if ((round % 2 == 1)); then
      victim=${workers[RANDOM % 2]}
      vrank=$(sed -n "s/.*registered rank \([0-9]*\) of 2: host [^,]*, pid $victim,.*/\1/p" "$RUN/events.log" | tail -1)
      what="rank ${vrank:-?} (pid $victim)"
    else
      victim=$CPID
      what="coordinator (pid $victim)"
    fi
    # What is in flight at the kill: staging directories, shard files being written.
    staging=("$CK"/step_*.tmp)
    writing=("$CK"/step_*.tmp/*.safetensors.tmp)
    # The job may have ended by itself in the meantime (see below): then there is nothing to kill.
    if alive "$CPID" && alive "$MPID" && kill -KILL "$victim" 2> /dev/null; then
      killed=1
      t_kill=$(($(now_ms) - t_start))
      kills=$((kills + 1))
      ((round % 2 == 1)) && worker_kills=$((worker_kills + 1))
      ((${#staging[@]} > 0)) && staging_at_kill=$((staging_at_kill + 1))
      ((${#writing[@]} > 0)) && writing_at_kill=$((writing_at_kill + 1))
      in_flight="${#staging[@]} staging dir(s)"
      if ((${#writing[@]} > 0)); then
        in_flight+=", writing:"
        for w in "${writing[@]}"; do in_flight+=" $(basename "$(dirname "$w")")/$(basename "$w" .safetensors.tmp)"; done
      fi
      if ((round % 2 == 1)) && [[ -n $vrank ]] && printf '%s\n' "${writing[@]}" | grep -q "rank_$(printf %05d "$vrank")"; then
        victim_writing=$((victim_writing + 1))
        in_flight+=" (the victim's)"
      fi
    fi
  fi

  # Every process of the round ends by itself: heartbeat timeout 3 s, linger 2 s; 30 s is a hang.
  wait_all 30 "$CPID" "$MPID" "${workers[@]}"
  crc=0; wait "$CPID" || crc=$?
  mrc=0; wait "$MPID" || mrc=$?
  left=$(pgrep -af -- "--run-dir $RUN" || true)
  [[ -z $left ]] || fail "$tag: processes left behind: $left"
  ev=$(tail -n +$((ev0 + 1)) "$RUN/events.log")
  if ((killed)); then
    [[ $mrc != 0 ]] || fail "$tag: mpirun exited 0 after the kill of the $what"
    if ((round % 2 == 1)); then
      [[ $crc != 0 ]] || fail "$tag: the coordinator exited 0 after the kill of $what"
      grep -q "failed: rank" <<< "$ev" || fail "$tag: the coordinator did not name a dead rank"
    fi
  else
    # Nobody was killed: the job failed by itself. Tolerated (a few times) only as a heartbeat
    # timeout, which a 3 s timeout gives on an overloaded machine (ctest -j, parallel builds); a
    # crash all the same, so every check below still holds.
    why=$( (grep -o "failed: .*" <<< "$ev"; grep -h "has been silent" "$T/$tag.workers.txt") | head -2 | tr '\n' ' ' || true)
    grep -q "has been silent" <<< "$why" || fail "$tag: the job failed by itself (coordinator exit $crc, mpirun exit $mrc): ${why:-no reason given}"
    spontaneous=$((spontaneous + 1))
    ((spontaneous <= 3)) || fail "the job failed by itself $spontaneous times on heartbeat timeouts: is the machine overloaded? ($why)"
  fi
  if ((prev_step > 0)) && grep -q "plan sent" <<< "$ev"; then
    grep -q "resuming from .*/checkpoints/$(printf 'step_%08d' "$prev_step") at step $prev_step " <<< "$ev" \
      || fail "$tag: did not resume from step $prev_step: $(grep resuming <<< "$ev" || echo 'no resume event')"
  fi
  stale=$(grep -c "removed an incomplete checkpoint left by a crash" <<< "$ev" || true)
  ((stale > 0)) && stale_removed_rounds=$((stale_removed_rounds + 1))
  # `latest` moves forward with every commit and never back.
  min_step=$prev_step
  grep -q "checkpoint step [0-9]* committed" <<< "$ev" && min_step=$((prev_step + 1))
  out=$("$PY" "$T/check.py" ckpt "$CK" "$min_step" 2) || fail "$tag: checkpoint directory check failed (above)"
  read -r step replaced nstaging cuts <<< "$out"
  # Only what this round's kill left (a half-removed retention victim stays for good).
  new_cuts=""
  for c in $cuts; do
    [[ $c == - || " ${seen_cuts[*]} " == *" $c "* ]] && continue
    seen_cuts+=("$c")
    new_cuts+="${new_cuts:+ }$c"
  done
  [[ -n $new_cuts ]] && commit_cuts+=("round $round: $new_cuts")
  verified="no checkpoint yet"
  if ((step > 0)); then
    vout=$("$ZTCTL" verify --run-dir "$RUN" 2>&1) || fail "$tag: ztctl verify: $vout"
    grep -q "step $step," <<< "$vout" || fail "$tag: ztctl verify checked another step: $vout"
    verified="ztctl verify ok, files ok"
  fi
  if ((killed)); then
    printf 'round %2d: kill -9 %-26s %4d ms after its first commit (%5d ms after start; %s); removed %d stale; latest -> step_%08d, %s (%d replaced, %d staging left; commit cut: %s)\n' \
      "$round" "$what" "$delay_ms" "$t_kill" "$in_flight" "$stale" "$step" "$verified" "$replaced" "$nstaging" "${new_cuts:--}"
  else
    printf 'round %2d: the job failed by itself %s its first commit (%s); removed %d stale; latest -> step_%08d, %s\n' \
      "$round" "$( ((committed)) && echo after || echo before)" "$why" "$stale" "$step" "$verified"
    ((committed)) || round=$((round - 1))  # no progress: run this round again
  fi
  prev_step=$step
done

# To the end, from the last round's latest.
final=$((prev_step + FINAL_EXTRA_STEPS))
ev0=$(wc -l < "$RUN/events.log")
# Nothing is killed now: a lenient heartbeat, so that an overloaded machine cannot fail the job.
sed 's/^comm: .*/comm: {heartbeat_timeout_s: 60, heartbeat_interval_s: 0.5}/' "$T/job.yaml" > "$T/final.yaml"
CONFIG=$T/final.yaml start_job final --resume --steps "$final"
RC=0
timeout 120 tail --pid="$MPID" -f /dev/null || fail "final: workers still running after 120 s"
wait "$MPID" || RC=$?
[[ $RC == 0 ]] || fail "final: mpirun exited $RC"
timeout 30 tail --pid="$CPID" -f /dev/null || fail "final: coordinator still running 30 s after the workers"
wait "$CPID" || RC=$?
[[ $RC == 0 ]] || fail "final: the coordinator exited $RC"
ev=$(tail -n +$((ev0 + 1)) "$RUN/events.log")
grep -q "resuming from .*/checkpoints/$(printf 'step_%08d' "$prev_step") at step $prev_step " <<< "$ev" \
  || fail "final: did not resume from step $prev_step"
grep -q "finished $final steps" <<< "$ev" || fail "final: no 'finished $final steps' event"
grep -q "removed an incomplete checkpoint left by a crash" <<< "$ev" && stale_removed_rounds=$((stale_removed_rounds + 1))
summary=$("$PY" "$T/check.py" metrics "$RUN/metrics.jsonl" "$final") || fail "final: metrics check failed (above)"
out=$("$PY" "$T/check.py" ckpt "$CK" "$final" 2) || fail "final: checkpoint check failed (above)"
read -r step _ <<< "$out"
[[ $step == "$final" ]] || fail "final: latest names step $step, not $final"
"$ZTCTL" verify --run-dir "$RUN" > /dev/null 2>&1 || fail "final: ztctl verify failed"
echo "final: resumed from step $prev_step, ran to step $final: exit 0 everywhere; $summary; latest -> step $final verifies"
((stale_removed_rounds > 0)) || fail "no job ever removed a crash's staging directory"
echo "kills with a staging dir present: $staging_at_kill/$kills; with a shard write in progress: $writing_at_kill/$kills" \
  "(the killed rank's own: $victim_writing/$worker_kills worker kills); jobs that removed a crash's staging: $stale_removed_rounds;" \
  "jobs that failed by themselves (heartbeat timeouts under load): $spontaneous"
echo "rounds whose kill cut a commit (and what it left): ${#commit_cuts[@]}"
for c in "${commit_cuts[@]}"; do echo "  $c"; done
echo "checkpoint_crash: all checks passed in $((($(now_ms) - T0) / 1000)) s"
