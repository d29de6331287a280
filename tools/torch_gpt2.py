#!/usr/bin/python3
"""PyTorch reference for zerotrain: the GPT-2 of DESIGN.md, trained the way zt-worker trains it.

It is the oracle of the end-to-end golden test (tests/e2e/torch_reference.sh) and the model behind
the PyTorch baseline benchmark (tools/bench/torch_step.py). Everything here is written against
DESIGN.md, not against zerotrain's C++ code, so that the two can disagree:

  * GPT2: parameters carry the Hugging Face GPT-2 names and layouts (`wte.weight`,
    `h.N.attn.c_attn.weight` as a Conv1D [in, out] matrix, ...), so `model.state_dict()` is a
    Hugging Face checkpoint.
  * safetensors reading and writing (F32 / BF16 / F16 / F64 / integer types) with only the standard
    library, numpy and torch.
  * DeepSpeed's WarmupLR / WarmupDecayLR / WarmupCosineLR, with optimizer step s (0-based) using
    DeepSpeed's last_batch_iteration = s - 1.
  * llm.c / raw uint16 token files and DESIGN.md's batch addressing (data.shuffle: false).
  * train(): AdamW (decay on parameters of >= 2 dims), global-norm clipping as
    torch.nn.utils.clip_grad_norm_, gradient accumulation, one record (loss, grad_norm, lr) a step.

Command line (run with /usr/bin/python3, the interpreter that has torch):
  torch_gpt2.py init  --config cfg.yaml --out init.safetensors [--seed S]
  torch_gpt2.py train --config cfg.yaml [--init init.safetensors] [--steps N] --out losses.json
                      [--save final.safetensors] [--threads 2] [--dtype fp32|fp64]
  torch_gpt2.py selftest
The config is zerotrain's YAML (or JSON, which is YAML); only the keys the reference needs are read,
and a key it cannot honour (shuffle, fp16, bf16, a non-AdamW optimizer) is an error, not ignored.
"""

import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

LN_EPS = 1e-5
LLMC_MAGIC = 20240520
LLMC_VERSION = 1
LLMC_HEADER_INTS = 256


def fail(msg):
    """Exit with a message that says what went wrong (the CLI's error path)."""
    print(f"torch_gpt2: error: {msg}", file=sys.stderr)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class GPT2Config:
    def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd):
        self.vocab_size = int(vocab_size)
        self.block_size = int(block_size)
        self.n_layer = int(n_layer)
        self.n_head = int(n_head)
        self.n_embd = int(n_embd)
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")

    @staticmethod
    def from_job(cfg):
        m = cfg["model"]
        return GPT2Config(m["vocab_size"], m["block_size"], m["n_layer"], m["n_head"], m["n_embd"])

    def __repr__(self):
        return (f"GPT2Config(V={self.vocab_size}, block={self.block_size}, L={self.n_layer}, "
                f"NH={self.n_head}, C={self.n_embd})")


class Conv1D(nn.Module):
    """Hugging Face's Conv1D: y = x @ W + b with W stored [in, out]."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        shape = x.shape[:-1] + (self.weight.shape[1],)
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(shape)


_HAS_SDPA = hasattr(F, "scaled_dot_product_attention")

# Attention kernels, all computing softmax(q k^T / sqrt(hs) + causal mask) v:
#   "sdpa"     F.scaled_dot_product_attention (torch >= 2.0; fused where the build has it)
#   "baddbmm"  one batched GEMM that scales and adds the -inf mask in place, softmax, one GEMM
#   "matmul"   the textbook form: matmul, scale, masked_fill, softmax, matmul
ATTENTION_IMPLS = ("sdpa", "baddbmm", "matmul")
DEFAULT_ATTENTION = "sdpa" if _HAS_SDPA else "baddbmm"


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg, impl=None):
        super().__init__()
        self.n_head = cfg.n_head
        self.n_embd = cfg.n_embd
        self.c_attn = Conv1D(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = Conv1D(cfg.n_embd, cfg.n_embd)
        self.impl = impl or DEFAULT_ATTENTION
        if self.impl not in ATTENTION_IMPLS or (self.impl == "sdpa" and not _HAS_SDPA):
            raise ValueError(f"attention {self.impl!r} is not available in torch "
                             f"{torch.__version__}")
        self._masks = {}  # (T, dtype, device) -> mask; built once per shape

    def _mask(self, T, like, additive):
        key = (T, like.dtype, str(like.device), additive)
        m = self._masks.get(key)
        if m is None:
            upper = torch.ones(T, T, dtype=torch.bool, device=like.device).triu_(1)
            if additive:
                m = torch.zeros(T, T, dtype=like.dtype, device=like.device)
                m.masked_fill_(upper, float("-inf"))
            else:
                m = upper
            self._masks[key] = m
        return m

    def forward(self, x):
        B, T, C = x.shape
        nh = self.n_head
        hs = C // nh
        qkv = self.c_attn(x)
        # Columns [0,C) are q, [C,2C) k, [2C,3C) v; head h owns columns h*hs..(h+1)*hs of each.
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, nh, hs).transpose(1, 2)
        k = k.view(B, T, nh, hs).transpose(1, 2)
        v = v.view(B, T, nh, hs).transpose(1, 2)
        scale = 1.0 / math.sqrt(hs)
        if self.impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif self.impl == "baddbmm":
            q = q.reshape(B * nh, T, hs)
            k = k.reshape(B * nh, T, hs)
            v = v.reshape(B * nh, T, hs)
            att = torch.baddbmm(self._mask(T, x, True), q, k.transpose(1, 2), alpha=scale)
            y = torch.bmm(torch.softmax(att, dim=-1), v).view(B, nh, T, hs)
        else:
            att = torch.matmul(q, k.transpose(-2, -1)) * scale
            att = att.masked_fill(self._mask(T, x, False), float("-inf"))
            y = torch.matmul(torch.softmax(att, dim=-1), v)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = Conv1D(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = Conv1D(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg, attention=None):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=LN_EPS)
        self.attn = CausalSelfAttention(cfg, attention)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=LN_EPS)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    """GPT-2 whose state_dict() names and shapes are Hugging Face's (without "transformer.")."""

    def __init__(self, cfg, attention=None, checkpoint_blocks=False):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.h = nn.ModuleList([Block(cfg, attention) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=LN_EPS)
        # Activation checkpointing per block (recompute in backward), for memory comparisons.
        self.checkpoint_blocks = checkpoint_blocks

    def forward(self, idx):
        """idx (B, T) int64 -> logits (B, T, V); the LM head is wte (tied)."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} > block_size {self.config.block_size}")
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            if self.checkpoint_blocks and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = self.ln_f(x)
        return F.linear(x, self.wte.weight)

    def init_weights(self, seed):
        """GPT-2 initialisation: N(0, 0.02), residual projections N(0, 0.02/sqrt(2 n_layer)),
        biases zero, LayerNorm weight one and bias zero. Deterministic in `seed`."""
        g = torch.Generator().manual_seed(int(seed))
        std_resid = 0.02 / math.sqrt(2 * self.config.n_layer)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * std_resid)
                elif name.endswith(("wte.weight", "wpe.weight", "c_attn.weight", "c_fc.weight")):
                    p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32) * 0.02)
                elif ".ln_" in name or name.startswith("ln_"):
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    raise AssertionError(f"no initialiser for {name}")

    def hf_state(self):
        """name -> fp32 CPU tensor in Hugging Face layout (a copy)."""
        return {k: v.detach().to(torch.float32).cpu().contiguous().clone()
                for k, v in self.state_dict().items()}

    def load_hf_state(self, tensors, source="checkpoint"):
        """Loads Hugging Face GPT-2 tensors (optional "transformer." prefix; attention-mask buffers
        and a tied lm_head ignored). Every parameter must be present with the right shape."""
        ignored_suffixes = (".attn.bias", ".attn.masked_bias")
        clean = {}
        for k, v in tensors.items():
            name = k[len("transformer."):] if k.startswith("transformer.") else k
            if name.endswith(ignored_suffixes) or name == "lm_head.weight":
                continue
            clean[name] = v
        own = self.state_dict()
        missing = [k for k in own if k not in clean]
        unexpected = [k for k in clean if k not in own]
        if missing or unexpected:
            raise ValueError(f"{source}: missing tensors {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        with torch.no_grad():
            for k, p in own.items():
                t = clean[k]
                if tuple(t.shape) != tuple(p.shape):
                    raise ValueError(f"{source}: tensor '{k}' has shape {list(t.shape)}, the "
                                     f"model needs {list(p.shape)}")
                p.copy_(t.to(p.dtype))


def decay_groups(model):
    """AdamW parameter groups: weight decay on parameters of two or more dimensions only."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.dim() >= 2 else no_decay).append(p)
    return decay, no_decay


# ---------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------

_ST_NUMPY = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
             "I8": "i1", "U8": "u1", "BOOL": "?"}
_ST_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
            "U8": 1, "BOOL": 1}


def load_safetensors(path, as_float32=True):
    """Returns ({name: tensor}, metadata). BF16/F16 are widened to F32 when as_float32."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: {len(blob)} bytes, too short for a safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ValueError(f"{path}: header length {n} runs past the end of the file ({len(blob)})")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = memoryview(blob)[8 + n:]
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, info in header.items():
        dt, shape, (b, e) = info["dtype"], list(info["shape"]), info["data_offsets"]
        if dt not in _ST_SIZE:
            raise ValueError(f"{path}: tensor '{name}' has unsupported dtype {dt}")
        numel = int(np.prod(shape)) if shape else 1
        if e - b != numel * _ST_SIZE[dt] or e > len(data) or b < 0:
            raise ValueError(f"{path}: tensor '{name}' byte range [{b}, {e}) does not hold "
                             f"{numel} x {dt}")
        raw = data[b:e]
        if dt == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
            t = torch.from_numpy(arr.copy()).reshape(shape)
            if not as_float32:
                t = t.to(torch.bfloat16)
        else:
            arr = np.frombuffer(raw, dtype=_ST_NUMPY[dt]).copy()
            t = torch.from_numpy(arr).reshape(shape)
            if as_float32 and dt == "F16":
                t = t.to(torch.float32)
        out[name] = t
    return out, meta


def save_safetensors(path, tensors, dtype="F32", metadata=None):
    """Writes {name: tensor} with every floating tensor stored as `dtype` (F32, BF16 or F16);
    the file is written to path + ".tmp" and renamed, so `path` never holds half a file."""
    if dtype not in ("F32", "BF16", "F16"):
        raise ValueError(f"unsupported safetensors dtype {dtype}")
    header, chunks, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if dtype == "F32":
            raw = t.to(torch.float32).numpy().astype("<f4").tobytes()
        elif dtype == "F16":
            raw = t.to(torch.float16).numpy().astype("<f2").tobytes()
        else:  # torch rounds fp32 -> bf16 to nearest even
            raw = t.to(torch.float32).to(torch.bfloat16).view(torch.int16).numpy().astype(
                "<i2").tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)  # the format allows space padding
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules (DeepSpeed semantics)
# ---------------------------------------------------------------------------------------------


def _warmup_fraction(it, warmup, warmup_type):
    if warmup_type == "log":
        return math.log(it + 1) / math.log(warmup)
    if warmup_type == "linear":
        return it / warmup
    raise ValueError(f"warmup_type must be log or linear, got {warmup_type!r}")


def lr_at_step(sched, base_lr, step):
    """Learning rate of optimizer step `step` (0-based). DeepSpeed creates the scheduler with
    last_batch_iteration = -1 and calls scheduler.step() after each optimizer step, so step s
    runs at iteration s - 1. `sched` is the config's scheduler section ({type, params}) or None;
    `base_lr` is optimizer.params.lr (the constant rate, and WarmupCosineLR's peak)."""
    if not sched or not sched.get("type"):
        return float(base_lr)
    kind = sched["type"]
    p = sched.get("params", {}) or {}
    it = step - 1
    warmup = max(2, int(p.get("warmup_num_steps", 1000)))
    wtype = p.get("warmup_type", "log")
    if kind == "WarmupCosineLR":
        if it < 0:
            return 0.0
        if "total_num_steps" not in p:
            raise ValueError("WarmupCosineLR needs scheduler.params.total_num_steps")
        total = int(p["total_num_steps"])
        if total <= warmup:
            raise ValueError(f"WarmupCosineLR: total_num_steps {total} must exceed warmup {warmup}")
        min_ratio = float(p.get("warmup_min_ratio", 0.0))
        cos_min = float(p.get("cos_min_ratio", 0.0001))
        if it < warmup:
            ratio = min_ratio + _warmup_fraction(it, warmup, wtype) * (1.0 - min_ratio)
        else:
            real = it - warmup + 1
            span = total - warmup
            cosine = (1.0 + math.cos(math.pi * real / span)) / 2
            ratio = max(0.0, cos_min + (1.0 - cos_min) * cosine)
        return float(base_lr) * ratio
    if kind in ("WarmupLR", "WarmupDecayLR"):
        lo = float(p.get("warmup_min_lr", 0.0))
        hi = float(p.get("warmup_max_lr", 0.001))
        if it < 0:
            return lo  # DeepSpeed initialises the optimizer's lr to warmup_min_lr
        if it < warmup:
            gamma = _warmup_fraction(it, warmup, wtype)
        elif kind == "WarmupDecayLR":
            total = int(p["total_num_steps"])
            gamma = max(0.0, (total - it) / max(1.0, float(total - warmup)))
        else:
            gamma = 1.0
        return lo + (hi - lo) * gamma
    raise ValueError(f"unknown scheduler type {kind!r}")


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def read_token_file(path, fmt="llmc"):
    """uint16 tokens of an llm.c file (256 int32 header: magic, version, count) or raw uint16."""
    with open(path, "rb") as f:
        blob = f.read()
    if fmt == "raw_u16":
        if len(blob) % 2:
            raise ValueError(f"{path}: odd size {len(blob)} for a raw uint16 token file")
        return np.frombuffer(blob, dtype="<u2")
    if fmt != "llmc":
        raise ValueError(f"unknown token file format {fmt!r}")
    if len(blob) < LLMC_HEADER_INTS * 4:
        raise ValueError(f"{path}: too short for an llm.c header")
    header = np.frombuffer(blob[:LLMC_HEADER_INTS * 4], dtype="<i4")
    if header[0] != LLMC_MAGIC or header[1] != LLMC_VERSION:
        raise ValueError(f"{path}: bad llm.c header (magic {header[0]}, version {header[1]})")
    n = int(header[2])
    if len(blob) != LLMC_HEADER_INTS * 4 + 2 * n:
        raise ValueError(f"{path}: header says {n} tokens, file holds {(len(blob) - 1024) / 2}")
    return np.frombuffer(blob, dtype="<u2", offset=LLMC_HEADER_INTS * 4, count=n)


def write_token_file(path, tokens, fmt="llmc"):
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() > 65535):
        raise ValueError("tokens must fit in uint16")
    with open(path, "wb") as f:
        if fmt == "llmc":
            header = np.zeros(LLMC_HEADER_INTS, dtype="<i4")
            header[0], header[1], header[2] = LLMC_MAGIC, LLMC_VERSION, tokens.size
            f.write(header.tobytes())
        f.write(tokens.astype("<u2").tobytes())


class SequenceData:
    """DESIGN.md addressing with data.shuffle: false: sequence k is tokens [k'T, k'T + T] with
    k' = k mod n, n = (ntokens - 1) // T whole sequences; inputs the first T, targets the last T."""

    def __init__(self, tokens, T):
        self.tokens = np.asarray(tokens)
        self.T = int(T)
        self.n = (len(self.tokens) - 1) // self.T
        if self.n < 1:
            raise ValueError(f"{len(self.tokens)} tokens: fewer than block_size + 1 = {T + 1}")

    def batch(self, first, count):
        """(inputs, targets), both (count, T) int64, for sequences first .. first+count-1."""
        rows = []
        for k in range(first, first + count):
            s = (k % self.n) * self.T
            rows.append(self.tokens[s:s + self.T + 1].astype(np.int64))
        arr = torch.from_numpy(np.stack(rows))
        return arr[:, :-1].contiguous(), arr[:, 1:].contiguous()


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def load_config(path):
    """Reads zerotrain's config (YAML, or JSON where PyYAML is missing) and resolves data.path and
    model.init_from against the config's folder, as zerotrain does."""
    with open(path) as f:
        text = f.read()
    try:
        import yaml  # noqa: WPS433 (optional dependency)
        cfg = yaml.safe_load(text)
    except ImportError:
        try:
            cfg = json.loads(text)
        except json.JSONDecodeError as e:
            fail(f"{path}: PyYAML is not installed, so the config must be JSON (which is YAML): "
                 f"{e}")
    if not isinstance(cfg, dict):
        fail(f"{path}: not a mapping")
    base = os.path.dirname(os.path.abspath(path))
    for sect, key in (("data", "path"), ("model", "init_from")):
        v = (cfg.get(sect) or {}).get(key)
        if v and not os.path.isabs(v):
            cfg[sect][key] = os.path.normpath(os.path.join(base, v))
    return cfg


def batch_sizes(cfg):
    """(G sequences per step, B micro-batch, A accumulation steps) for one process."""
    B = cfg.get("train_micro_batch_size_per_gpu")
    A = cfg.get("gradient_accumulation_steps")
    G = cfg.get("train_batch_size")
    if B is None and G is not None and A is not None:
        B = G // A
    if A is None:
        A = (G // B) if (G is not None and B is not None) else 1
    if B is None:
        raise ValueError("config needs train_micro_batch_size_per_gpu (or train_batch_size and "
                         "gradient_accumulation_steps)")
    if G is None:
        G = B * A
    if G != B * A:
        raise ValueError(f"train_batch_size {G} != micro-batch {B} x accumulation {A} (1 process)")
    return int(G), int(B), int(A)


def check_supported(cfg):
    """The reference trains what DESIGN.md defines in fp32; anything else must not pass silently."""
    if (cfg.get("data") or {}).get("shuffle", False):
        raise ValueError("data.shuffle: true is not implemented by the reference")
    for k in ("fp16", "bf16"):
        if (cfg.get(k) or {}).get("enabled", False):
            raise ValueError(f"{k}.enabled: the reference trains in fp32 only")
    opt = (cfg.get("optimizer") or {}).get("type", "AdamW")
    if opt not in ("AdamW", "Adam"):
        raise ValueError(f"optimizer.type {opt!r} is not implemented by the reference")
    fam = (cfg.get("model") or {}).get("family", "gpt2")
    if fam != "gpt2":
        raise ValueError(f"model.family {fam!r} is not gpt2")


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def train(model, cfg, tokens, steps, log=None):
    """Trains `model` in place for `steps` optimizer steps from step 0 and returns one record per
    step: {step (1-based), loss (mean CE over the G*T targets, before the update), grad_norm
    (before clipping), lr, clip_coef}. Gradients are summed over micro-batches of the loss scaled
    by 1/(G*T), so accumulation computes exactly the full-batch gradient."""
    check_supported(cfg)
    G, B, A = batch_sizes(cfg)
    T = int(cfg["model"]["block_size"])
    data = SequenceData(tokens, T)
    o = (cfg.get("optimizer") or {}).get("params", {}) or {}
    base_lr = float(o.get("lr", 1e-3))
    betas = tuple(float(b) for b in o.get("betas", (0.9, 0.999)))
    eps = float(o.get("eps", 1e-8))
    wd = float(o.get("weight_decay", 0.01))
    clip = float(cfg.get("gradient_clipping", 0.0) or 0.0)
    sched = cfg.get("scheduler")
    decay, no_decay = decay_groups(model)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=base_lr, betas=betas, eps=eps, foreach=False)
    params = list(model.parameters())
    records = []
    for s in range(steps):
        t0 = time.perf_counter()
        lr = lr_at_step(sched, base_lr, s)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for a in range(A):
            x, y = data.batch(s * G + a * B, B)
            logits = model(x)
            losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                     reduction="none")
            loss_sum += float(losses.double().sum())
            (losses.sum() / (G * T)).backward()
        if clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            coef = min(1.0, clip / (norm + 1e-6))
        else:
            norm = float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params)))
            coef = 1.0
        opt.step()
        rec = {"step": s + 1, "loss": loss_sum / (G * T), "grad_norm": norm, "lr": lr,
               "clip_coef": coef, "step_ms": (time.perf_counter() - t0) * 1e3}
        records.append(rec)
        if log:
            log(rec)
    return records


# ---------------------------------------------------------------------------------------------
# Self-test: checks the reference against itself before it is trusted as an oracle
# ---------------------------------------------------------------------------------------------


def _naive_forward(model, idx):
    """GPT-2 written out from DESIGN.md with per-head loops, in fp64, from the HF tensors: checks
    the module's wiring (qkv column split, head layout, Conv1D orientation, tied head)."""
    sd = {k: v.double() for k, v in model.state_dict().items()}
    c = model.config
    C, NH = c.n_embd, c.n_head
    hs = C // NH

    def ln(x, w, b):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + LN_EPS) * w + b

    def gelu(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    B, T = idx.shape
    x = sd["wte.weight"][idx] + sd["wpe.weight"][:T]
    for l in range(c.n_layer):
        p = lambda n: sd[f"h.{l}.{n}"]  # noqa: E731
        h = ln(x, p("ln_1.weight"), p("ln_1.bias"))
        qkv = h @ p("attn.c_attn.weight") + p("attn.c_attn.bias")
        y = torch.zeros(B, T, C, dtype=torch.float64)
        for hd in range(NH):
            q = qkv[:, :, hd * hs:(hd + 1) * hs]
            k = qkv[:, :, C + hd * hs:C + (hd + 1) * hs]
            v = qkv[:, :, 2 * C + hd * hs:2 * C + (hd + 1) * hs]
            for t in range(T):
                s = (q[:, t:t + 1, :] @ k[:, :t + 1, :].transpose(1, 2)) / math.sqrt(hs)
                y[:, t, hd * hs:(hd + 1) * hs] = (torch.softmax(s, -1) @ v[:, :t + 1, :])[:, 0]
        x = x + y @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        h = ln(x, p("ln_2.weight"), p("ln_2.bias"))
        h = gelu(h @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"))
        x = x + h @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
    x = ln(x, sd["ln_f.weight"], sd["ln_f.bias"])
    return x @ sd["wte.weight"].t()


def selftest(tmpdir):
    torch.manual_seed(0)
    ok = True

    def check(name, cond, detail=""):
        nonlocal ok
        print(f"  {'ok  ' if cond else 'FAIL'} {name} {detail}")
        ok &= bool(cond)

    cfg = GPT2Config(vocab_size=37, block_size=9, n_layer=2, n_head=3, n_embd=12)
    model = GPT2(cfg)
    model.init_weights(1)
    with torch.no_grad():  # non-trivial LN and biases, so every parameter's gradient matters
        for n, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape) * 0.1)
    model = model.double()
    idx = torch.randint(0, cfg.vocab_size, (2, 7))
    tgt = torch.randint(0, cfg.vocab_size, (2, 7))
    ref = _naive_forward(model, idx)
    for impl in ATTENTION_IMPLS:
        if impl == "sdpa" and not _HAS_SDPA:
            continue
        for blk in model.h:
            blk.attn.impl = impl
        err = (model(idx) - ref).abs().max().item()
        check(f"forward == naive per-head GPT-2 (fp64, attention {impl})", err < 1e-10,
              f"max abs err {err:.2e}")
    for blk in model.h:
        blk.attn.impl = DEFAULT_ATTENTION

    # Gradient vs central finite differences (fp64), a few elements of every parameter.
    def loss_fn():
        lg = model(idx)
        return F.cross_entropy(lg.reshape(-1, cfg.vocab_size), tgt.reshape(-1))

    model.zero_grad()
    loss_fn().backward()
    worst = 0.0
    g = torch.Generator().manual_seed(3)
    for n, p in model.named_parameters():
        flat, gflat = p.data.view(-1), p.grad.view(-1)
        for i in torch.randint(0, flat.numel(), (4,), generator=g).tolist():
            old = flat[i].item()
            h = 1e-5
            with torch.no_grad():
                flat[i] = old + h
                lp = loss_fn().item()
                flat[i] = old - h
                lm = loss_fn().item()
                flat[i] = old
            fd = (lp - lm) / (2 * h)
            # relative, with a floor for tiny gradients where the difference quotient's rounding
            # (~1e-16 * loss / h) dominates
            worst = max(worst, abs(fd - gflat[i].item()) / (abs(fd) + 1e-4))
    check("gradient == central finite differences (fp64)", worst < 1e-5, f"worst rel {worst:.2e}")

    # Accumulation: 2 micro-batches of 2 == 1 batch of 4, same sequences.
    job = {"model": {"vocab_size": 37, "block_size": 8, "n_layer": 2, "n_head": 3, "n_embd": 12},
           "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2,
           "gradient_clipping": 1.0,
           "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "weight_decay": 0.1}},
           "scheduler": {"type": "WarmupCosineLR", "params": {
               "total_num_steps": 6, "warmup_num_steps": 2, "warmup_type": "linear",
               "warmup_min_ratio": 0.1, "cos_min_ratio": 0.1}}}
    toks = np.random.RandomState(0).randint(0, 37, size=200).astype(np.uint16)
    m1 = GPT2(GPT2Config.from_job(job)).double()
    m1.init_weights(5)
    m2 = GPT2(GPT2Config.from_job(job)).double()
    m2.load_state_dict(m1.state_dict())
    r1 = train(m1, job, toks, 4)
    job2 = dict(job, train_micro_batch_size_per_gpu=4, gradient_accumulation_steps=1)
    r2 = train(m2, job2, toks, 4)
    d = max(abs(a["loss"] - b["loss"]) + abs(a["grad_norm"] - b["grad_norm"])
            for a, b in zip(r1, r2))
    check("accumulation 2x2 == 1x4 (fp64, 4 steps)", d < 1e-12, f"max diff {d:.2e}")
    check("first step runs at lr 0 (WarmupCosineLR)", r1[0]["lr"] == 0.0)

    # Schedules: hand-computed values.
    sc = job["scheduler"]
    # it = s - 1; linear warm-up over it < 2 from ratio 0.1; cosine from it = 2 (real step 1 of 4).
    want = [0.0, 1e-3, 5.5e-3, 1e-3 + 9e-3 * (1 + math.cos(math.pi / 4)) / 2, 5.5e-3]
    got_lr = [lr_at_step(sc, 1e-2, s) for s in range(5)]
    check("WarmupCosineLR linear", all(abs(a - b) < 1e-15 for a, b in zip(got_lr, want)), got_lr)
    wl = {"type": "WarmupLR", "params": {"warmup_min_lr": 0.0, "warmup_max_lr": 1.0,
                                         "warmup_num_steps": 4, "warmup_type": "log"}}
    got_lr = [lr_at_step(wl, 0, s) for s in range(6)]
    want = [0.0, 0.0, math.log(2) / math.log(4), math.log(3) / math.log(4), 1.0, 1.0]
    check("WarmupLR log", all(abs(a - b) < 1e-15 for a, b in zip(got_lr, want)), got_lr)
    wd = {"type": "WarmupDecayLR", "params": {"warmup_min_lr": 0.0, "warmup_max_lr": 1.0,
                                              "warmup_num_steps": 2, "warmup_type": "linear",
                                              "total_num_steps": 6}}
    got_lr = [lr_at_step(wd, 0, s) for s in range(8)]
    want = [0.0, 0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0]
    check("WarmupDecayLR linear", all(abs(a - b) < 1e-15 for a, b in zip(got_lr, want)), got_lr)

    # safetensors round trips.
    m = GPT2(cfg)
    m.init_weights(7)
    st = m.hf_state()
    for dt, tol in (("F32", 0.0), ("BF16", 2 ** -8), ("F16", 2 ** -11)):
        path = os.path.join(tmpdir, f"rt_{dt}.safetensors")
        save_safetensors(path, st, dtype=dt, metadata={"format": "pt"})
        back, meta = load_safetensors(path)
        m2 = GPT2(cfg)
        m2.load_hf_state({"transformer." + k: v for k, v in back.items()}, source=path)
        # relative error, except below the smallest normal of the narrow type (F16 subnormals)
        floor = {"F32": 1e-38, "BF16": 1e-38, "F16": 6.2e-5}[dt]
        e = max(((back[k] - st[k]).abs() / st[k].abs().clamp_min(floor)).max().item()
                for k in st if st[k].abs().max() > 0)
        check(f"safetensors {dt} round trip", e <= tol and meta.get("format") == "pt"
              and list(back) == list(st), f"max rel err {e:.2e}")
    check("HF shapes", tuple(st["h.0.attn.c_attn.weight"].shape) == (12, 36)
          and tuple(st["h.1.mlp.c_proj.weight"].shape) == (48, 12)
          and tuple(st["wpe.weight"].shape) == (9, 12))
    ntoks = os.path.join(tmpdir, "t.tok")
    write_token_file(ntoks, toks)
    check("llm.c token file round trip", np.array_equal(read_token_file(ntoks), toks))
    x, y = SequenceData(toks, 8).batch(24, 2)  # n = 24: sequence 24 wraps to 0
    check("batch addressing wraps modulo n", np.array_equal(x[0].numpy(), toks[0:8])
          and np.array_equal(y[1].numpy(), toks[9:17]))
    return ok


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _cmd_selftest(args):
    import tempfile
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        ok = selftest(d)
    print("torch_gpt2: selftest " + ("passed" if ok else "FAILED"))
    sys.exit(0 if ok else 1)



def _cmd_init(args):
    cfg = load_config(args.config)
    mcfg = GPT2Config.from_job(cfg)
    seed = args.seed if args.seed is not None else int(cfg["model"].get("seed", 0))
    torch.manual_seed(seed)
    model = GPT2(mcfg)
    model.init_weights(seed)
    save_safetensors(args.out, model.hf_state(), dtype=args.dtype,
                     metadata={"format": "pt", "source": "tools/torch_gpt2.py init", "seed": seed})
    n = sum(p.numel() for p in model.parameters())
    print(f"torch_gpt2: wrote {args.out} ({mcfg}, {n} parameters, seed {seed})")


def _cmd_train(args):
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    cfg = load_config(args.config)
    try:
        check_supported(cfg)
        mcfg = GPT2Config.from_job(cfg)
    except (ValueError, KeyError) as e:
        fail(f"{args.config}: {e}")
    model = GPT2(mcfg)
    init = args.init or (cfg.get("model") or {}).get("init_from")
    if init:
        tensors, _ = load_safetensors(init)
        model.load_hf_state(tensors, source=init)
    else:
        model.init_weights(int(cfg["model"].get("seed", 0)))
    if args.dtype == "fp64":
        model = model.double()
    steps = args.steps if args.steps is not None else int((cfg.get("train") or {}).get("steps", 0))
    dpath = (cfg.get("data") or {}).get("path")
    if not dpath:
        fail(f"{args.config}: data.path is missing")
    tokens = read_token_file(dpath, (cfg.get("data") or {}).get("format", "llmc"))
    if tokens.size and int(tokens.max()) >= mcfg.vocab_size:
        fail(f"{dpath}: token {int(tokens.max())} >= model.vocab_size {mcfg.vocab_size}")

    def log(r):
        if not args.quiet:
            print(f"step {r['step']:4d} | loss {r['loss']:.6f} | lr {r['lr']:.4e} | "
                  f"grad norm {r['grad_norm']:.6f} | {r['step_ms']:.1f} ms", flush=True)

    records = train(model, cfg, tokens, steps, log)
    with open(args.out, "w") as f:
        json.dump({"config": os.path.abspath(args.config), "init": init, "dtype": args.dtype,
                   "steps": records}, f, indent=1)
    if args.save:
        save_safetensors(args.save, model.hf_state(), metadata={"format": "pt"})
    print(f"torch_gpt2: {steps} steps, final loss {records[-1]['loss']:.6f}; wrote {args.out}"
          if records else f"torch_gpt2: 0 steps; wrote {args.out}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("init", help="write a randomly initialised GPT-2 as HF safetensors")
    pi.add_argument("--config", required=True)
    pi.add_argument("--out", required=True)
    pi.add_argument("--seed", type=int, default=None, help="default: model.seed")
    pi.add_argument("--dtype", default="F32", choices=["F32", "BF16", "F16"])
    pt = sub.add_parser("train", help="train N steps and write per-step loss/grad_norm/lr as JSON")
    pt.add_argument("--config", required=True)
    pt.add_argument("--init", default=None, help="HF safetensors to start from (default: "
                    "model.init_from, else a fresh init from model.seed)")
    pt.add_argument("--steps", type=int, default=None, help="default: train.steps")
    pt.add_argument("--out", required=True, help="JSON file of per-step records")
    pt.add_argument("--save", default=None, help="write the final weights (HF safetensors, F32)")
    pt.add_argument("--threads", type=int, default=2)
    pt.add_argument("--dtype", default="fp32", choices=["fp32", "fp64"])
    pt.add_argument("--quiet", action="store_true")
    ps = sub.add_parser("selftest", help="check the reference against finite differences, a naive "
                        "GPT-2, hand-computed schedules and file round trips")
    ps.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    {"init": _cmd_init, "train": _cmd_train, "selftest": _cmd_selftest}[args.cmd](args)


if __name__ == "__main__":
    main()
