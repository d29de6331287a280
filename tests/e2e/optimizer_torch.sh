#!/usr/bin/env bash
# The CPU optimizer kernels against torch.optim: AdamW (foreach=False, fp32, weight decay, bias
# corrections over 6 steps) and SGD (Nesterov momentum, dampening, plain; weight decay), every
# step's weights and state to a relative 1e-6 (tests/e2e/optimizer_torch_check.py), through the
# driver ZT_BUILD_DIR/bin/optimizer_kernel_dump.
#
# Needs a python with torch and numpy (/usr/bin/python3, or $ZT_TORCH_PYTHON) and the driver; exits
# 77 (skipped) without them.
set -euo pipefail

SRC=${ZT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${ZT_BUILD_DIR:-$SRC/build}
PY=${ZT_TORCH_PYTHON:-/usr/bin/python3}
export PYTHONDONTWRITEBYTECODE=1  # leave no __pycache__ in the source tree
DRIVER=$BUILD/bin/optimizer_kernel_dump

if ! "$PY" -c 'import torch, numpy' >/dev/null 2>&1; then
  echo "SKIP: $PY cannot import torch and numpy (install python3-torch, or set ZT_TORCH_PYTHON)"
  exit 77
fi
if [[ ! -x $DRIVER ]]; then
  echo "SKIP: $DRIVER not built (ninja -C $BUILD optimizer_kernel_dump)"
  exit 77
fi

"$PY" "$SRC/tests/e2e/optimizer_torch_check.py" --driver "$DRIVER"
