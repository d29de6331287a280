#!/usr/bin/python3
"""PyTorch baseline for zerotrain's optimizer-kernel benchmark (tools/bench/bench_optimizer.cpp).

Times optimizer steps of torch.optim.AdamW (foreach=True and the for-loop, foreach=False) and
torch.optim.SGD(momentum=0.9, foreach=True) over --n fp32 parameters split into tensors of
--tensor-numel elements (a model's parameter list; the last tensor is shorter), on --threads
intra-op threads. Gradients are fp32, or bf16: torch's optimizers need gradients of the
parameter's dtype, so a bf16 step first copies the bf16 gradients into the fp32 .grad tensors
(what a mixed-precision loop with fp32 master weights does), and that copy is timed with the step.

Memory is written before timing (parameters, gradients; the optimizer state is created by the
warm-up steps), so first-touch page faults are not timed. The optimizers also allocate temporaries
every step: run_optimizer_bench.sh sets MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ so glibc
reuses them instead of faulting fresh pages in each step. Prints one JSON object:

  torch_optimizer.py --n 50000000 [--threads 2] [--steps 7 --warmup 2] [--tensor-numel 1048576]

Run with /usr/bin/python3 (the interpreter that has torch).
"""

import argparse
import json
import statistics
import time

import torch


def make_params(n, tensor_numel):
    sizes = [tensor_numel] * (n // tensor_numel)
    if n % tensor_numel:
        sizes.append(n % tensor_numel)
    params = []
    for k, s in enumerate(sizes):
        p = torch.empty(s, dtype=torch.float32)
        p.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(k))
        params.append(torch.nn.Parameter(p))
    return params


def time_steps(params, grads, grad_dtype, opt, steps, warmup):
    for p, g in zip(params, grads):
        if grad_dtype == "f32":
            p.grad = g
        else:
            p.grad = torch.empty_like(p)
    secs = []
    for t in range(warmup + steps):
        t0 = time.perf_counter()
        if grad_dtype == "bf16":
            for p, g in zip(params, grads):
                p.grad.copy_(g)
        opt.step()
        s = time.perf_counter() - t0
        if t >= warmup:
            secs.append(s)
    return statistics.median(secs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tensor-numel", type=int, default=1 << 20)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    results = []
    for grad_dtype in ("f32", "bf16"):
        dt = torch.float32 if grad_dtype == "f32" else torch.bfloat16
        cases = [("adamw", "foreach"), ("adamw", "for_loop"), ("sgd_momentum", "foreach")]
        for opt_name, impl in cases:
            params = make_params(a.n, a.tensor_numel)
            grads = [torch.empty(p.numel(), dtype=dt).uniform_(-1, 1) for p in params]
            foreach = impl == "foreach"
            if opt_name == "adamw":
                opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
                                        weight_decay=0.1, foreach=foreach)
            else:
                opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=0.1,
                                      foreach=foreach)
            sec = time_steps(params, grads, grad_dtype, opt, a.steps, a.warmup)
            results.append({"optimizer": opt_name, "impl": impl, "grad_dtype": grad_dtype,
                            "step_ms": 1e3 * sec, "params_per_s": a.n / sec})
            del opt, params, grads
    print(json.dumps({"n": a.n, "threads": a.threads, "torch": torch.__version__,
                      "tensor_numel": a.tensor_numel, "results": results}, indent=2))


if __name__ == "__main__":
    main()
