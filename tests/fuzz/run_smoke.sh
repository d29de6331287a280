#!/usr/bin/env bash
# fuzz.protocol_smoke: ~100k generated inputs through the protocol decoder with the replay driver
# (any compiler), then, where the libFuzzer binary was built, 20 s of coverage-guided fuzzing
# seeded with valid frames of every message kind.
#   run_smoke.sh REPLAY_BIN WORK_DIR [LIBFUZZER_BIN]
# ZT_FUZZ_SECONDS and ZT_FUZZ_SEED change the budget and the seed.
set -euo pipefail
replay=$1
work=$2
fuzzer=${3:-}
seed=${ZT_FUZZ_SEED:-1}

"$replay" --iterations 100000 --seed "$seed"

if [[ -z "$fuzzer" ]]; then
  echo "fuzz.protocol_smoke: no libFuzzer build (needs clang + libclang-rt-14-dev); replay only"
  exit 0
fi
if [[ ! -x "$fuzzer" ]]; then
  echo "fuzz.protocol_smoke: $fuzzer is missing: build the protocol_fuzz_build target" >&2
  exit 1
fi
rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts"
"$replay" --write-seeds "$work/seeds"
if ! "$fuzzer" -max_total_time="${ZT_FUZZ_SECONDS:-20}" -seed="$seed" -max_len=8192 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
    "$work/corpus" "$work/seeds"; then
  echo "fuzz.protocol_smoke: libFuzzer found a failing input in $work/artifacts/;" \
    "replay it with: $replay FILE (or $fuzzer FILE)" >&2
  exit 1
fi
