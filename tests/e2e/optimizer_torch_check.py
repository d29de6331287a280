#!/usr/bin/python3
"""Checks zerotrain's CPU optimizer kernels against torch.optim, step by step.

  optimizer_torch_check.py --driver BUILD/bin/optimizer_kernel_dump [--n 10007] [--steps 6]

Cases (fp32 gradients; weight decay on; the gradient scale is applied to the gradient torch sees,
rounded to fp32 exactly as the kernel rounds it):
  adamw             torch.optim.AdamW(foreach=False), bias corrections over the steps
  sgd_nesterov      torch.optim.SGD(momentum=0.9, nesterov=True, weight_decay=0.01)
  sgd_dampening     torch.optim.SGD(momentum=0.9, dampening=0.1, weight_decay=0.01)
  sgd_plain         torch.optim.SGD(momentum=0, weight_decay=0.01)
Every step's weights and state (exp_avg / exp_avg_sq, momentum_buffer) must satisfy
|zt - torch| <= rtol |torch| + atol (rtol 1e-6; atol 1e-7 times the tensor's max |torch|, for
elements that cancel to near zero). Both sides are fp32 with a different order of rounding (torch's
foreach=False kernels use FMA in some ops, bias corrections are fp64 in torch), so ~1e-7 relative
differences are expected; a wrong formula is off by 1e-4 or more. Prints the max errors per case;
exits 1 naming the first failure.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch


def run_driver(driver, tmp, opt, master0, grads, args):
    n, steps = master0.size, len(grads)
    inp, out = os.path.join(tmp, "in.bin"), os.path.join(tmp, "out.bin")
    np.concatenate([master0] + grads).astype("<f4").tofile(inp)
    cmd = [driver, opt, inp, out, str(n), str(steps)] + [repr(a) for a in args]
    subprocess.run(cmd, check=True)
    return np.fromfile(out, dtype="<f4")


def compare(what, got, want, rtol, atol_rel):
    want = want.astype(np.float64)
    got = got.astype(np.float64)
    atol = atol_rel * max(float(np.abs(want).max()), 1e-30)
    err = np.abs(got - want)
    allowed = rtol * np.abs(want) + atol
    bad = err > allowed
    used = float((err / allowed).max())  # share of the tolerance the worst element uses
    if bad.any():
        i = int(np.argmax(bad))
        return (f"{what}: {int(bad.sum())} of {want.size} elements differ; first [{i}]: "
                f"zt {got[i]!r} torch {want[i]!r}; worst error {used:.3g}x the tolerance"), used
    return None, used


def check_case(name, driver, tmp, n, steps, rng, rtol, atol_rel):
    master0 = rng.uniform(-1, 1, n).astype(np.float32)
    grads = []
    for s in range(steps):
        g = rng.uniform(-2.0 / (s + 1), 2.0 / (s + 1), n).astype(np.float32)
        g[::11] = 0.0  # exact zeros: m stays at its decay, Adam divides ~0 by eps
        grads.append(g)
    gs = np.float32(0.75)
    p = torch.nn.Parameter(torch.from_numpy(master0.copy()))
    if name == "adamw":
        lr, b1, b2, eps, wd = 2e-3, 0.9, 0.95, 1e-8, 0.1
        out = run_driver(driver, tmp, "adamw", master0, grads, [lr, b1, b2, eps, wd, float(gs)])
        opt = torch.optim.AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd,
                                foreach=False)
        names = ["master", "exp_avg", "exp_avg_sq"]
    else:
        cfg = {"sgd_nesterov": (0.9, 0.0, 0.01, True), "sgd_dampening": (0.9, 0.1, 0.01, False),
               "sgd_plain": (0.0, 0.0, 0.01, False)}[name]
        momentum, dampening, wd, nesterov = cfg
        lr = 0.05
        out = run_driver(driver, tmp, "sgd", master0, grads,
                         [lr, momentum, dampening, wd, int(nesterov), float(gs)])
        opt = torch.optim.SGD([p], lr=lr, momentum=momentum, dampening=dampening,
                              weight_decay=wd, nesterov=nesterov, foreach=False)
        names = ["master"] + (["momentum_buffer"] if momentum != 0 else [])
    per_step = len(names) * n
    if out.size != per_step * steps:
        return f"{name}: driver wrote {out.size} values, want {per_step * steps}", 0.0
    worst = 0.0
    for s in range(steps):
        p.grad = torch.from_numpy(grads[s] * gs)  # fp32 product, as the kernel forms it
        opt.step()
        state = opt.state[p]
        torch_vals = {"master": p.detach(), "exp_avg": state.get("exp_avg"),
                      "exp_avg_sq": state.get("exp_avg_sq"),
                      "momentum_buffer": state.get("momentum_buffer")}
        for k, what in enumerate(names):
            got = out[s * per_step + k * n: s * per_step + (k + 1) * n]
            msg, rel = compare(f"{name} step {s + 1} {what}", got, torch_vals[what].numpy(), rtol,
                               atol_rel)
            worst = max(worst, rel)
            if msg:
                return msg, worst
    return None, worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--driver", required=True, help="path of optimizer_kernel_dump")
    ap.add_argument("--n", type=int, default=10007)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--atol-rel", type=float, default=1e-7)
    a = ap.parse_args()
    torch.set_num_threads(2)
    rng = np.random.RandomState(1234)
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["adamw", "sgd_nesterov", "sgd_dampening", "sgd_plain"]:
            msg, worst = check_case(name, a.driver, tmp, a.n, a.steps, rng, a.rtol, a.atol_rel)
            print(f"{name:14s} {a.steps} steps x {a.n}: worst error {worst:.3g}x the tolerance "
                  f"({'FAIL' if msg else 'ok'})")
            if msg:
                failed.append(msg)
    if failed:
        for m in failed:
            print("FAIL: " + m)
        sys.exit(1)
    print("PASS: the optimizer kernels match torch.optim")


if __name__ == "__main__":
    main()
