#!/usr/bin/env bash
# Installs the Debian packages zerotrain needs (only those missing; with ZT_TEST_TOOLS=1 also the
# test-only tools), then configures and builds
# into build/ (CMake + Ninja, Release). Idempotent and non-interactive: a second run only rebuilds
# what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libopenmpi-dev openmpi-bin
  libzmq3-dev cppzmq-dev
  capnproto libcapnp-dev
  libyaml-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenblas-openmp-dev
  libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  liburing-dev libxxhash-dev libcpp-httplib-dev
  python3-torch python3-numpy
  clang libclang-rt-14-dev
)
# Only the tests need these (tools/test.sh sets ZT_TEST_TOOLS=1): headless Chromium renders the
# run report (ztctl report) for its screenshot test, promtool checks the metrics endpoint.
if [[ "${ZT_TEST_TOOLS:-0}" == "1" ]]; then
  PACKAGES+=(chromium prometheus)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "[setup] installing missing packages: ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "[setup] all Debian packages present"
fi

if [[ "${ZT_SKIP_BUILD:-0}" == "1" ]]; then exit 0; fi

BUILD_DIR=${ZT_BUILD_DIR:-build}
EXTRA=()
if [[ "${CI:-}" == "true" ]]; then EXTRA+=(-DZT_WERROR=ON); fi
if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "${EXTRA[@]}" ${ZT_CMAKE_ARGS:-}
fi
cmake --build "$BUILD_DIR" -j "$(nproc)"
