#!/usr/bin/env python3
"""PyTorch baseline for zerotrain's CUDA training benchmark (bench_cuda train).

Trains the same GPT-2 (tools/torch_gpt2.py) on one GPU the way PyTorch users do in eager mode:
bf16 autocast over fp32 weights, F.scaled_dot_product_attention (its fused flash kernel), fused
AdamW (decay on >= 2-dim parameters, betas 0.9/0.95), gradient clipping to 1.0. The largest
micro-batch that fits is found the same way bench_cuda finds its own (64, 48, 32, ... 1), then
`--steps` steps are timed after `--warmup`. Prints one JSON line with the keys bench_cuda uses.

  torch_gpt2_cuda.py --config configs/gpt2-124m.yaml [--micro-batch N] [--steps 10] [--warmup 3]
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import torch_gpt2 as tg  # noqa: E402


def measure(mcfg, micro, steps, warmup):
    torch.manual_seed(0)
    model = tg.GPT2(mcfg, attention="sdpa")
    model.init_weights(0)
    model = model.cuda().train()
    decay, no_decay = tg.decay_groups(model)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    T = mcfg.block_size
    x = torch.randint(0, mcfg.vocab_size, (micro, T + 1), device="cuda")
    inp, tgt = x[:, :-1].contiguous(), x[:, 1:].contiguous()
    times, loss = [], None
    for s in range(warmup + steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(inp)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), tgt.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if s >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    n_params = sum(p.numel() for p in model.parameters())
    return times[len(times) // 2], n_params, float(loss)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/gpt2-124m.yaml")
    ap.add_argument("--micro-batch", type=int, default=0, help="0: the largest that fits")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    args = ap.parse_args()
    cfg = tg.load_config(args.config)
    dims = {k: int(cfg["model"][k]) for k in ("vocab_size", "block_size", "n_layer", "n_head",
                                               "n_embd")}
    mcfg = tg.GPT2Config(**dims)
    candidates = [args.micro_batch] if args.micro_batch > 0 else [64, 48, 32, 24, 16, 12, 8, 4, 2, 1]
    for micro in candidates:
        try:
            ms, n_params, loss = measure(mcfg, micro, args.steps, args.warmup)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            print(f"torch_gpt2_cuda: micro-batch {micro} does not fit", file=sys.stderr)
            continue
        T, L, C = mcfg.block_size, mcfg.n_layer, mcfg.n_embd
        tokens_per_s = micro * T / (ms / 1e3)
        flops_per_token = 6.0 * n_params + 12.0 * L * T * C
        print(json.dumps({
            "bench": "train", "impl": "pytorch-eager", "config": args.config,
            "params": n_params, "micro_batch": micro, "seq_len": T, "step_ms": ms,
            "tokens_per_s": tokens_per_s,
            "mfu": flops_per_token * tokens_per_s / (args.peak_tflops * 1e12), "loss": loss,
            "peak_reserved_bytes": torch.cuda.max_memory_reserved(),
            "torch_version": torch.__version__,
        }))
        return 0
    print("torch_gpt2_cuda: no micro-batch fits", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
