#!/usr/bin/env bash
# PyTorch reference check of the optimizers themselves: bin/optimizer_driver runs the real
# Optimizer + StateStore (as the ZeRO engine drives them at stage 0; two cases with the state on
# "nvme" in 4096-element chunks) for 10 steps on random parameters and gradients, and
# adafactor_torch_check.py compares every step's parameters with torch.optim.AdamW (foreach=False)
# and with Hugging Face's Adafactor rule written out in PyTorch, weight decay on >= 2-D parameters
# only: AdamW to a relative 1e-5, Adafactor to 3e-5 (Note [tolerances] in the .py). Cases: AdamW
# with a schedule and grad_scale; Adafactor with the defaults (relative step, parameter scale, no
# first moment), with beta1 + fixed lr + decay, unscaled with clipping that triggers, and
# warmup_init.
#
# Needs ZT_BUILD_DIR/bin/optimizer_driver and a python with torch and numpy (/usr/bin/python3, or
# $ZT_TORCH_PYTHON); exits 77 (skipped) without them. ZT_KEEP_TMP=1 keeps the work folder.
set -euo pipefail

SRC=${ZT_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${ZT_BUILD_DIR:-$SRC/build}
PY=${ZT_TORCH_PYTHON:-/usr/bin/python3}
export PYTHONDONTWRITEBYTECODE=1  # leave no __pycache__ in the source tree
DRIVER=$BUILD/bin/optimizer_driver

if ! "$PY" -c 'import torch, numpy' >/dev/null 2>&1; then
  echo "SKIP: $PY cannot import torch and numpy (install python3-torch, or set ZT_TORCH_PYTHON)"
  exit 77
fi
if [[ ! -x $DRIVER ]]; then
  echo "SKIP: $DRIVER not built (ninja -C $BUILD optimizer_driver)"
  exit 77
fi

WORK=$(mktemp -d -t zt_adafactor_torch.XXXXXX)
if [[ ${ZT_KEEP_TMP:-0} == 1 ]]; then
  echo "work folder (kept): $WORK"
else
  trap 'rm -rf "$WORK"' EXIT
fi

OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$PY" "$SRC/tests/e2e/adafactor_torch_check.py" \
  --driver "$DRIVER" --work "$WORK"
