#!/usr/bin/env bash
# ZeRO benchmark on this machine's CPU: the small config on N = 1, 2, 4 ranks (mpirun) for each
# stage 0-3, bf16 mixed precision, printing aggregate tokens/s, per-rank model-state memory against
# the ZeRO formulas, activations, bytes communicated per step against the formulas, and the share
# of communication hidden behind compute; then a control with overlap and prefetch off. Builds
# nothing: expects $ZT_BUILD_DIR/bin/bench_zero (default build/). Prints markdown tables.
#   tools/bench/run_zero_bench.sh [--steps N] [--micro-batch B] [--seq-len T] [--prefetch E]
#                                 [--repeats R] [--json-out FILE]
set -euo pipefail
cd "$(dirname "$0")/../.."
# 5 timed steps (median): the cores are shared, and a step now and then takes 2-3x as long.
STEPS=5
WARMUP=2
MICRO=4
SEQ=128
# stage3_prefetch_bucket_size: ~one transformer block of the small config (1.77M elements), so
# stage 3 holds the current unit and the next. The config's default (5e7) would prefetch the whole
# model and stage 3's parameter memory would no longer shrink with N.
PREFETCH=2000000
# Each configuration runs this many times and the run with the lowest median step time is kept:
# the cores are shared with other work, which can slow a whole run down 2-3x.
REPEATS=2
JSON_OUT=
while [[ $# -gt 0 ]]; do
  case $1 in
    --steps) STEPS=$2; shift 2 ;;
    --micro-batch) MICRO=$2; shift 2 ;;
    --seq-len) SEQ=$2; shift 2 ;;
    --prefetch) PREFETCH=$2; shift 2 ;;
    --repeats) REPEATS=$2; shift 2 ;;
    --json-out) JSON_OUT=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
BUILD=${ZT_BUILD_DIR:-build}
BENCH=$BUILD/bin/bench_zero
CONFIG=configs/small.yaml
PY=/usr/bin/python3
CORES=$(nproc)
[[ -x $BENCH ]] || { echo "no $BENCH: build first (tools/setup.sh, or set ZT_BUILD_DIR)" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "mpirun not found: install openmpi-bin" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
# Each rank has a compute thread and a communication thread, so the cores are oversubscribed even
# at N=2; without yielding, a communication thread spin-waiting for a late peer inside MPI takes
# the core from a compute thread and step times grow ~1.5x (measured at N=4, stage 3).
export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

run() {  # run N STAGE OUT [extra bench_zero flags...]: the best (lowest median step) of $REPEATS
  local n=$1 stage=$2 out=$3
  shift 3
  # Ranks share the cores: give each an equal slice so OpenMP threads don't fight. --bind-to none:
  # Open MPI binds each rank to one core when N <= 2, which would leave N=1 on a single core
  # whatever OMP_NUM_THREADS says (and its communication thread on its compute thread's core).
  local threads=$(( CORES / n ))
  (( threads < 1 )) && threads=1
  local i
  for (( i = 0; i < REPEATS; ++i )); do
    if ! OMP_NUM_THREADS=$threads mpirun --oversubscribe --bind-to none -np "$n" "$BENCH" \
        --config "$CONFIG" --stage "$stage" --steps "$STEPS" --warmup "$WARMUP" \
        --micro-batch "$MICRO" --seq-len "$SEQ" --bf16 true "$@" > "$out.$i" 2> "$out.err"; then
      echo "bench_zero failed (N=$n, stage $stage):" >&2
      cat "$out.err" >&2
      exit 1
    fi
  done
  "$PY" - "$out" "$REPEATS" <<'PY'
import json, sys
out, reps = sys.argv[1], int(sys.argv[2])
runs = [json.load(open(f"{out}.{i}")) for i in range(reps)]
json.dump(min(runs, key=lambda j: j["step_ms"]), open(out, "w"))
PY
}

for n in 1 2 4; do
  for stage in 0 1 2 3; do
    run "$n" "$stage" "$TMP/main_${n}_${stage}.json" --overlap on --prefetch "$PREFETCH"
  done
done
for n in 2 4; do
  for stage in 2 3; do
    run "$n" "$stage" "$TMP/ctl_${n}_${stage}.json" --overlap off --prefetch 0
  done
done
if [[ -n $JSON_OUT ]]; then
  for f in "$TMP"/main_*.json "$TMP"/ctl_*.json; do cat "$f"; echo; done > "$JSON_OUT"
fi

"$PY" - "$TMP" "$CORES" "$MICRO" "$SEQ" "$STEPS" "$PREFETCH" "$REPEATS" <<'PY'
import json, os, sys
d, cores, micro, seq, steps, prefetch, reps = sys.argv[1:8]
MiB = 2.0 ** 20
def load(name):
    return json.load(open(os.path.join(d, name)))
main = [load(f"main_{n}_{s}.json") for n in (1, 2, 4) for s in range(4)]
psi = main[0]["params"]

print(f"## ZeRO stages on {cores} CPU cores: small config ({psi/1e6:.2f}M params = Psi), bf16, "
      f"micro-batch {micro} x {seq} tokens per rank, {steps} timed steps (median, best of {reps} runs), "
      f"overlap_comm on, stage3_prefetch_bucket_size {prefetch}")
print()
print("tokens/s is aggregate over ranks (micro-batch fixed per rank, so the global batch grows "
      "with N). Model state = parameters + gradients + optimizer-state peaks, max over ranks; "
      "formula 16Psi | 4Psi+12Psi/N | 2Psi+14Psi/N | 16Psi/N bytes. Comm = bytes one rank sends "
      "per step (ring accounting); formula 2Psi (stages 0-2) or 3Psi (stage 3) elements x 2 bytes "
      "x (N-1)/N. Hidden = 1 - blocked/busy over the ranks' communication threads.")
print()
print("| N | stage | tokens/s | step ms | model state MiB/rank (measured / formula, ratio) | "
      "activations MiB | comm MiB/step (measured / formula) | hidden % |")
print("|---|---|---|---|---|---|---|---|")
def comm_cell(j):
    m, f = j["comm_bytes_per_step_total"] / MiB, j["comm_formula_bytes"] / MiB
    if j["world"] == 1:
        return f"{m:.1f} / {f:.1f}"
    return f"{m:.1f} / {f:.1f} ({j['comm_ratio']:.2f}x)"
def hidden_cell(j):
    h = j["hidden_fraction"]
    return "-" if h is None else f"{100*h:.0f}%"
for j in main:
    print(f"| {j['world']} | {j['stage']} | {j['tokens_per_s']:.0f} | {j['step_ms']:.0f} | "
          f"{j['model_state_bytes']/MiB:.1f} / {j['model_state_formula_bytes']/MiB:.1f} "
          f"({j['model_state_ratio']:.2f}x) | {j['activation_bytes']/MiB:.1f} | {comm_cell(j)} | "
          f"{hidden_cell(j)} |")

print()
print("### Peak MiB per rank by category (max over ranks)")
print()
cats = ["parameters", "gradients", "optimizer_states", "activations", "communication",
        "workspace", "total"]
print("| N | stage | " + " | ".join(cats) + " |")
print("|---|---|" + "---|" * len(cats))
for j in main:
    m = j["peak_bytes_per_rank"]
    print(f"| {j['world']} | {j['stage']} | " +
          " | ".join(f"{max(m[c])/MiB:.1f}" for c in cats) + " |")

print()
print("### Communication per rank per step by collective (MiB) and exposed (blocked) ms per "
      "step by collective, mean over ranks")
print()
print("| N | stage | all_reduce MiB | reduce_scatter MiB | all_gather MiB | busy ms | blocked ms "
      "(all_reduce / reduce_scatter / all_gather) | hidden % |")
print("|---|---|---|---|---|---|---|---|")
def mean(xs):
    return sum(xs) / len(xs)
for j in main:
    if j["world"] == 1:
        continue
    c, b = j["comm_bytes_per_step"], j["blocked_ms_per_step_by_kind"]
    print(f"| {j['world']} | {j['stage']} | {c['all_reduce']/MiB:.2f} | "
          f"{c['reduce_scatter']/MiB:.2f} | {c['all_gather']/MiB:.2f} | "
          f"{mean(j['busy_ms_per_step']):.1f} | {mean(j['blocked_ms_per_step']):.1f} "
          f"({b['all_reduce']:.1f} / {b['reduce_scatter']:.1f} / {b['all_gather']:.1f}) | "
          f"{hidden_cell(j)} |")

print()
print("### Control: stages 2-3 with overlap_comm off and stage3_prefetch_bucket_size 0")
print()
print("Every reduction and gather is then waited for as soon as it is issued, so blocked time is "
      "the exposed communication without overlap; 'removed' = 1 - blocked(on) / blocked(off) is "
      "the share of it that overlap and prefetch hid.")
print()
print("| N | stage | tokens/s (off / on) | step ms (off / on) | busy ms (off / on) | "
      "blocked ms (off / on) | removed | hidden % (off / on) |")
print("|---|---|---|---|---|---|---|---|")
for n in (2, 4):
    for s in (2, 3):
        off, on = load(f"ctl_{n}_{s}.json"), load(f"main_{n}_{s}.json")
        b_off, b_on = mean(off["blocked_ms_per_step"]), mean(on["blocked_ms_per_step"])
        removed = f"{100*(1-b_on/b_off):.0f}%" if b_off > 0 else "-"
        print(f"| {n} | {s} | {off['tokens_per_s']:.0f} / {on['tokens_per_s']:.0f} | "
              f"{off['step_ms']:.0f} / {on['step_ms']:.0f} | "
              f"{mean(off['busy_ms_per_step']):.1f} / {mean(on['busy_ms_per_step']):.1f} | "
              f"{b_off:.1f} / {b_on:.1f} | {removed} | "
              f"{hidden_cell(off)} / {hidden_cell(on)} |")
PY
