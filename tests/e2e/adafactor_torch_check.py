#!/usr/bin/python3
"""Checks zerotrain's AdamW and Adafactor against PyTorch, step by step.

  adafactor_torch_check.py --driver BUILD/bin/optimizer_driver --work DIR

For each case it writes a shape list, initial parameters and per-step gradients (and learning
rates) as raw files, runs optimizer_driver (the real Optimizer + StateStore, the way the ZeRO
engine drives them at stage 0) and, on the same inputs:
  * AdamW:     torch.optim.AdamW(foreach=False), weight decay on the >= 2-D parameters only (two
               param groups, the GPT-2 grouping zerotrain uses);
  * Adafactor: adafactor_step below, Hugging Face transformers' Adafactor.step written out in
               PyTorch (fp32, like HF on fp32 parameters) with the same grouping.
The gradient the optimizer sees is grad * grad_scale (zerotrain multiplies inside the optimizer;
torch gets the product, computed in fp32 the same way). Every step's parameters must agree:
    |zt - torch| <= rtol * (|torch| + moved),  moved = max over the tensor of |p_t - p_0|,
i.e. to a relative rtol of the weight or of how far the tensor has moved (the update's own
relative precision, which matters for weights near zero).

Note [tolerances]: AdamW: rtol 1e-5. Both sides compute the same fp32 operations per element
(zerotrain fuses two of them into fma), so weights differ by a few ulp (measured: <= 2e-7 of
|torch| + moved, below the 5e-7 by which PyTorch fp32 itself differs from PyTorch fp64); 1e-5
leaves room and still catches decay on the biases (7e-4), a missing bias correction or eps in the
wrong place (> 1e-3). Adafactor: rtol 3e-5, a little looser: every element's update also goes
through whole-tensor fp32 statistics — row/column means of g^2, the mean of the row moments,
RMS(param) and RMS(update) — which zerotrain sums in fp64 and torch in fp32 in its own
(vectorised, pairwise) order, so the factors differ by up to a few 1e-6 relative, growing with
the tensor's size, and the difference lands on every element (measured here: <= 2.6e-7). A real
mistake is far above either: no clipping, no row normalisation or no eps2 floor gives 7e-3 to
1e+8. The PyTorch fp64 run of the same reference is printed beside each case for scale.
"""

import argparse
import math
import os
import subprocess
import sys

import numpy as np
import torch

# (7, 33) odd; (33,) starts at zero (Adafactor's eps2 floor on RMS(param)); (64, 80) and (40, 130)
# cross the driver's 4096-element store chunks; (1,) a single element.
SHAPES = [(7, 33), (33,), (64, 80), (80,), (3, 5), (1,), (129,), (40, 130)]
STEPS = 10


def make_inputs(seed):
    rng = np.random.RandomState(seed)
    init = []
    for i, s in enumerate(SHAPES):
        if i == 1:
            init.append(np.zeros(s, dtype=np.float32))
        else:
            sd = 0.5 if len(s) >= 2 else 0.1
            init.append((sd * rng.randn(*s) + 0.02).astype(np.float32))
    grads = []
    for _ in range(STEPS):
        step = []
        for s in SHAPES:
            g = rng.randn(*s) * 10.0 ** rng.uniform(-2.0, 0.5, size=s)
            step.append(g.astype(np.float32))
        grads.append(step)
    return init, grads


def write_inputs(d, init, grads, lrs):
    with open(os.path.join(d, "shapes.txt"), "w") as f:
        for s in SHAPES:
            f.write(" ".join(str(x) for x in s) + "\n")
    np.concatenate([p.ravel() for p in init]).astype("<f4").tofile(os.path.join(d, "init.bin"))
    np.concatenate([g.ravel() for step in grads for g in step]).astype("<f4").tofile(
        os.path.join(d, "grads.bin"))
    np.array(lrs, dtype="<f4").tofile(os.path.join(d, "lrs.bin"))


def run_driver(driver, d, args, grad_scale):
    out = os.path.join(d, "out.bin")
    cmd = [driver, "--shapes", os.path.join(d, "shapes.txt"), "--init", os.path.join(d, "init.bin"),
           "--grads", os.path.join(d, "grads.bin"), "--lrs", os.path.join(d, "lrs.bin"),
           "--steps", str(STEPS), "--grad-scale", repr(grad_scale), "--out", out] + args
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"FAIL: {' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
    flat = np.fromfile(out, dtype="<f4")
    total = sum(int(np.prod(s)) for s in SHAPES)
    if flat.size != STEPS * total:
        sys.exit(f"FAIL: {out} holds {flat.size} values, expected {STEPS * total}")
    steps, at = [], 0
    for _ in range(STEPS):
        step = []
        for s in SHAPES:
            n = int(np.prod(s))
            step.append(flat[at:at + n].reshape(s))
            at += n
        steps.append(step)
    return steps


def scaled_grads(grads, t, grad_scale, dtype):
    # fp32 product, as zerotrain forms it; then widened for the fp64 run.
    return [(torch.from_numpy(g) * torch.tensor(grad_scale, dtype=torch.float32)).to(dtype)
            for g in grads[t]]


def torch_adamw(init, grads, lrs, grad_scale, hp, dtype=torch.float32):
    params = [torch.tensor(p, dtype=dtype) for p in init]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lrs[0], betas=hp["betas"], eps=hp["eps"], foreach=False)
    out = []
    for t in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = lrs[t]
        for p, g in zip(params, scaled_grads(grads, t, grad_scale, dtype)):
            p.grad = g
        opt.step()
        out.append([p.detach().clone().numpy() for p in params])
    return out


def _rms(x):
    return x.norm(2) / (x.numel() ** 0.5)


def adafactor_step(p, grad, state, hp, weight_decay):
    """Hugging Face transformers' Adafactor.step for one parameter (in place)."""
    factored = p.dim() >= 2
    if "step" not in state:
        state["step"] = 0
        if hp["beta1"] is not None:
            state["exp_avg"] = torch.zeros_like(p)
        if factored:
            state["exp_avg_sq_row"] = torch.zeros(p.shape[:-1], dtype=p.dtype)
            state["exp_avg_sq_col"] = torch.zeros(p.shape[:-2] + p.shape[-1:], dtype=p.dtype)
        else:
            state["exp_avg_sq"] = torch.zeros_like(p)
    state["step"] += 1
    t = state["step"]
    rms_p = float(_rms(p))
    rel = hp["lr"]
    if hp["relative_step"]:
        rel = min(1e-6 * t if hp["warmup_init"] else 1e-2, 1.0 / math.sqrt(t))
    lr = rel * (max(hp["eps"][1], rms_p) if hp["scale_parameter"] else 1.0)
    beta2t = 1.0 - math.pow(t, hp["decay_rate"])
    update = grad ** 2 + hp["eps"][0]
    if factored:
        row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
        row.mul_(beta2t).add_(update.mean(dim=-1), alpha=1.0 - beta2t)
        col.mul_(beta2t).add_(update.mean(dim=-2), alpha=1.0 - beta2t)
        r_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
        c_factor = col.unsqueeze(-2).rsqrt()
        update = torch.mul(r_factor, c_factor).mul_(grad)
    else:
        v = state["exp_avg_sq"]
        v.mul_(beta2t).add_(update, alpha=1.0 - beta2t)
        update = v.rsqrt().mul_(grad)
    update.div_((_rms(update) / hp["clip_threshold"]).clamp_(min=1.0))
    update.mul_(lr)
    if hp["beta1"] is not None:
        m = state["exp_avg"]
        m.mul_(hp["beta1"]).add_(update, alpha=1.0 - hp["beta1"])
        update = m
    if weight_decay != 0.0:
        p.add_(p, alpha=-weight_decay * lr)
    p.add_(-update)


def torch_adafactor(init, grads, lrs, grad_scale, hp, dtype=torch.float32):
    params = [torch.tensor(p, dtype=dtype) for p in init]
    states = [{} for _ in params]
    out = []
    for t in range(STEPS):
        h = dict(hp, lr=lrs[t])
        for p, g, st in zip(params, scaled_grads(grads, t, grad_scale, dtype), states):
            adafactor_step(p, g, st, h, hp["weight_decay"] if p.dim() >= 2 else 0.0)
        out.append([p.clone().numpy() for p in params])
    return out


def compare(zt, ref, init, rtol):
    """Largest |zt - ref| / (rtol (|ref| + moved)) over every step and tensor, and where."""
    worst, where = 0.0, ""
    for t in range(STEPS):
        for i, s in enumerate(SHAPES):
            r = ref[t][i].astype(np.float64)
            moved = float(np.max(np.abs(r - init[i].astype(np.float64))))
            err = np.abs(zt[t][i].astype(np.float64) - r) / (rtol * (np.abs(r) + moved) + 1e-38)
            k = int(np.argmax(err))
            if err.flat[k] > worst:
                worst = float(err.flat[k])
                where = (f"step {t + 1}, tensor {i} {s}[{k}]: zt {zt[t][i].flat[k]:.9g}, "
                         f"torch {r.flat[k]:.9g}")
    return worst, where


def case_list():
    adamw = {"betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}
    af = {"lr": None, "eps": (1e-30, 1e-3), "clip_threshold": 1.0, "decay_rate": -0.8,
          "beta1": None, "weight_decay": 0.0, "scale_parameter": True, "relative_step": True,
          "warmup_init": False}
    warm = [1e-3 * min(1.0, (t + 1) / 4.0) * (1.0 - 0.03 * t) for t in range(STEPS)]
    cases = [
        ("adamw", "AdamW", adamw, warm, 0.75,
         ["--type", "AdamW", "--betas", "0.9,0.95", "--eps", "1e-8", "--weight-decay", "0.1"]),
        ("adamw_nvme", "AdamW", dict(adamw, weight_decay=0.05), [3e-3] * STEPS, 1.0 / 64,
         ["--type", "AdamW", "--betas", "0.9,0.95", "--eps", "1e-8", "--weight-decay", "0.05",
          "--nvme", "{work}", "--chunk", "4096"]),
        ("adafactor_defaults", "Adafactor", af, [0.0] * STEPS, 0.75, ["--type", "Adafactor"]),
        ("adafactor_beta1_lr_wd", "Adafactor",
         dict(af, beta1=0.9, relative_step=False, weight_decay=0.01), [1e-2] * STEPS, 0.5,
         ["--type", "Adafactor", "--beta1", "0.9", "--relative-step", "0", "--lr", "1e-2",
          "--weight-decay", "0.01"]),
        ("adafactor_unscaled_clip", "Adafactor",
         dict(af, relative_step=False, scale_parameter=False, clip_threshold=0.5, decay_rate=-0.5,
              weight_decay=0.1),
         [3e-3 * (1.0 - 0.05 * t) for t in range(STEPS)], 1.0 / 64,
         ["--type", "Adafactor", "--relative-step", "0", "--scale-parameter", "0",
          "--clip-threshold", "0.5", "--decay-rate", "-0.5", "--weight-decay", "0.1"]),
        ("adafactor_warmup_beta1_nvme", "Adafactor", dict(af, warmup_init=True, beta1=0.8),
         [0.0] * STEPS, 2.0,
         ["--type", "Adafactor", "--warmup-init", "1", "--beta1", "0.8", "--nvme", "{work}",
          "--chunk", "4096"]),
    ]
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--driver", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--adamw-rtol", type=float, default=1e-5)
    ap.add_argument("--adafactor-rtol", type=float, default=3e-5)
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)

    failed = []
    print(f"{'case':<30} {'rtol':>8} {'zt/torch32':>12} {'torch64/torch32':>16}")
    for n, (name, kind, hp, lrs, grad_scale, args) in enumerate(case_list()):
        d = os.path.join(a.work, name)
        os.makedirs(d, exist_ok=True)
        init, grads = make_inputs(1000 + n)
        write_inputs(d, init, grads, lrs)
        # The driver reads the learning rates back as fp32: give torch the same values.
        lrs32 = [float(x) for x in np.array(lrs, dtype=np.float32)]
        zt = run_driver(a.driver, d, [x.replace("{work}", d) for x in args], grad_scale)
        run = torch_adamw if kind == "AdamW" else torch_adafactor
        ref = run(init, grads, lrs32, grad_scale, hp)
        ref64 = run(init, grads, lrs32, grad_scale, hp, dtype=torch.float64)
        rtol = a.adamw_rtol if kind == "AdamW" else a.adafactor_rtol
        worst, where = compare(zt, ref, init, rtol)
        scale, _ = compare(ref64, ref, init, rtol)
        print(f"{name:<30} {rtol:>8.0e} {worst * rtol:>12.2e} {scale * rtol:>16.2e}")
        if not worst <= 1.0:
            failed.append(f"{name}: {worst:.3g} x the tolerance at {where}")
    if failed:
        print("FAIL: zerotrain's optimizer disagrees with PyTorch:")
        for f in failed:
            print("  " + f)
        return 1
    print(f"PASS: AdamW and Adafactor match PyTorch over {STEPS} steps in every case")
    return 0


if __name__ == "__main__":
    sys.exit(main())
