#!/usr/bin/python3
"""PyTorch baseline for zerotrain's training-step benchmark (tools/bench/bench_train_step.cpp).

Times full training steps of the same GPT-2 (tools/torch_gpt2.py: fused qkv projection,
F.layer_norm, tanh GELU, tied head, causal attention by the fastest kernel this torch has) on the
CPU: forward, cross-entropy, backward, torch.optim.AdamW step and zero_grad(set_to_none=True), after
warm-up steps, on `--threads` intra-op threads (2 by default, the cores zerotrain gets). Prints one
JSON object with the same keys as bench_train_step where they mean the same thing:

  torch_step.py --config configs/small.yaml [--micro-batch 16] [--steps 5 --warmup 2]
  torch_step.py --n-layer 6 --n-head 6 --n-embd 384 --vocab-size 256 --seq-len 256 --micro-batch 16

Options: --attention auto|sdpa|baddbmm|matmul, --foreach auto|on|off (AdamW multi-tensor path; auto
times both during warm-up and keeps the faster), --policy none|layer (torch.utils.checkpoint per
block), --threads N. Run with /usr/bin/python3 (the interpreter that has torch).
"""

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import torch_gpt2 as tg  # noqa: E402


def make_optimizer(model, lr, foreach):
    decay, no_decay = tg.decay_groups(model)
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8, foreach=foreach)


def train_step(model, opt, x, y):
    logits = model(x)
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()  # .item() also makes the step's work finish inside the timed region


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=None, help="zerotrain config: model dims and micro-batch")
    ap.add_argument("--vocab-size", type=int, default=None)
    ap.add_argument("--block-size", type=int, default=None)
    ap.add_argument("--n-layer", type=int, default=None)
    ap.add_argument("--n-head", type=int, default=None)
    ap.add_argument("--n-embd", type=int, default=None)
    ap.add_argument("--seq-len", type=int, default=None, help="default: block_size")
    ap.add_argument("--micro-batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attention", default="auto", choices=("auto",) + tg.ATTENTION_IMPLS)
    ap.add_argument("--foreach", default="auto", choices=("auto", "on", "off"))
    ap.add_argument("--policy", default="none", choices=("none", "layer"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    dims = {"vocab_size": 256, "block_size": 256, "n_layer": 6, "n_head": 6, "n_embd": 384}
    micro = 16
    if args.config:
        cfg = tg.load_config(args.config)
        dims.update({k: int(v) for k, v in cfg["model"].items() if k in dims})
        micro = int(cfg.get("train_micro_batch_size_per_gpu") or micro)
    for k in dims:
        v = getattr(args, k)
        if v is not None:
            dims[k] = v
    if args.micro_batch is not None:
        micro = args.micro_batch
    T = args.seq_len or dims["block_size"]
    if args.steps < 1 or args.warmup < 0:
        sys.exit("torch_step: --steps must be >= 1 and --warmup >= 0")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    mcfg = tg.GPT2Config(**dims)
    attention = tg.DEFAULT_ATTENTION if args.attention == "auto" else args.attention
    model = tg.GPT2(mcfg, attention=attention, checkpoint_blocks=args.policy == "layer")
    model.init_weights(args.seed)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(args.seed)
    batches = [torch.randint(0, mcfg.vocab_size, (micro, T + 1), generator=g) for _ in range(4)]
    batches = [(b[:, :-1].contiguous(), b[:, 1:].contiguous()) for b in batches]

    # foreach=auto: race the two AdamW paths over the warm-up steps (at least one step each).
    candidates = {"auto": [True, False], "on": [True], "off": [False]}[args.foreach]
    best, best_ms = None, float("inf")
    opt = None
    step = 0
    if len(candidates) > 1:  # a cold first step (allocations, lazy init) must not decide the race
        train_step(model, make_optimizer(model, 1e-4, False), *batches[0])
        step += 1
    for fe in candidates:
        opt = make_optimizer(model, 1e-4, fe)
        runs = max(1, args.warmup // len(candidates)) if len(candidates) > 1 else args.warmup
        for _ in range(runs):
            x, y = batches[step % len(batches)]
            t0 = time.perf_counter()
            train_step(model, opt, x, y)
            ms = (time.perf_counter() - t0) * 1e3
            step += 1
            if ms < best_ms:
                best, best_ms = fe, ms
        if len(candidates) == 1:
            best = fe
    if len(candidates) > 1:
        opt = make_optimizer(model, 1e-4, best)
        x, y = batches[step % len(batches)]
        train_step(model, opt, x, y)  # one untimed step so the kept optimizer has its state
        step += 1

    times, loss = [], None
    for _ in range(args.steps):
        x, y = batches[step % len(batches)]
        t0 = time.perf_counter()
        loss = train_step(model, opt, x, y)
        times.append((time.perf_counter() - t0) * 1e3)
        step += 1
    times.sort()
    median = times[len(times) // 2]
    tokens = micro * T
    out = {
        "impl": "pytorch",
        "config": args.config,
        "policy": args.policy,
        "params": n_params,
        "micro_batch": micro,
        "seq_len": T,
        "n_layer": mcfg.n_layer,
        "n_head": mcfg.n_head,
        "n_embd": mcfg.n_embd,
        "vocab_size": mcfg.vocab_size,
        "step_ms": median,
        "step_ms_median": median,
        "step_ms_min": times[0],
        "step_ms_mean": sum(times) / len(times),
        "tokens_per_s": tokens / (median / 1000.0),
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "attention": attention,
        "adamw_foreach": best,
        # Linux reports ru_maxrss in KiB: the whole process, torch's own footprint included.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "last_loss": loss,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
