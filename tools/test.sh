#!/usr/bin/env bash
# Runs zerotrain's whole test suite: installs what is missing, builds (tools/setup.sh), then ctest.
# Extra arguments go to ctest (e.g. `tools/test.sh -L cpu` or `-R Gpt2`).
set -euo pipefail
cd "$(dirname "$0")/.."
ZT_TEST_TOOLS=1 tools/setup.sh
BUILD_DIR=${ZT_BUILD_DIR:-build}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
exec ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 900 -j "${ZT_TEST_JOBS:-2}" "$@"
