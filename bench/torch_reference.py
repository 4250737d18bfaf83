#!/usr/bin/env python3
"""PyTorch reference benchmark for `thau bench`.

This script is the speed baseline that THAU's Rust/candle model is compared
against. It builds the same small Llama-style decoder, in float32 on the CPU,
and measures:

* training throughput: forward + backward + AdamW step, in tokens per second,
  with the mean time each step spends in forward, backward and the optimizer;
* greedy decoding throughput with a KV cache, in new tokens per second.

The model here MUST stay architecturally identical to `src/model` in the Rust
crate. If one changes (dimensions, norm placement, RoPE layout, MLP shape,
init, optimizer settings), change the other as well, or the numbers stop being
comparable. The architecture:

* untied token embedding (V x d) and LM head (d -> V); no biases anywhere;
* n_layers pre-norm blocks: x = x + attn(rmsnorm(x)); x = x + mlp(rmsnorm(x));
  then a final rmsnorm and the LM head;
* RMSNorm: y = x * rsqrt(mean(x^2, -1) + 1e-5) * weight;
* attention: separate wq, wk, wv (d -> H*head_dim) and wo (H*head_dim -> d);
  RoPE (theta 10000) on q and k with CONSECUTIVE-PAIR (interleaved) rotation:
  for pair i (dims 2i, 2i+1) freq_i = theta^(-2i/head_dim), angle = pos*freq_i,
      y[2i]   = x[2i]*cos - x[2i+1]*sin
      y[2i+1] = x[2i]*sin + x[2i+1]*cos
  causal softmax attention scaled by 1/sqrt(head_dim), computed with
  torch.nn.functional.scaled_dot_product_attention (what a PyTorch user would
  write);
* SwiGLU MLP: down(silu(gate(x)) * up(x)), gate/up d -> d_ff, down d_ff -> d;
* init: normal(0, 0.02) for every linear and embedding weight, norm weights 1.

Training: random token ids (torch.manual_seed), a batch of B sequences of S+1
ids; the model reads the first S ids of each and is scored with cross-entropy
against the next id at every one of the S positions. AdamW(lr 3e-4, betas
(0.9, 0.95), weight_decay 0.1, applied to all parameters), fused on the CPU
where this torch supports it, else foreach; gradients clipped to norm 1.0 with
torch.nn.utils.clip_grad_norm_. One untimed warm-up step, then --steps timed
steps; tokens/s = B * S * steps / elapsed. optimizer_s covers clipping, the
AdamW step and zero_grad.

Decoding: batch 1, a random 16-token prompt is prefilled (not timed); the
argmax of its last logits is the first input of the timed loop. The loop then
runs --decode-tokens single-token forward passes against a preallocated KV
cache, each producing one greedy (argmax) token, all under
torch.inference_mode(); tokens/s = decode-tokens / loop time.

Usage:
  python3 bench/torch_reference.py [--mode train|decode|both] [--steps N]
      [--decode-tokens N] [--threads T] [--vocab V] [--d-model D] [--layers L]
      [--heads H] [--d-ff F] [--batch B] [--seq S]

Exactly one line of JSON goes to stdout at the end; everything else goes to
stderr. If torch cannot be imported it prints {"error":"torch not installed"}
and exits with code 3.
"""

import argparse
import json
import math
import sys
import time
import warnings

# torch warns on import when numpy is absent; numpy is not needed here.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except Exception:  # ImportError, or a broken install
    print(json.dumps({"error": "torch not installed"}))
    sys.exit(3)


ROPE_THETA = 10000.0
NORM_EPS = 1e-5
INIT_STD = 0.02
PROMPT_TOKENS = 16


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim, max_pos, theta=ROPE_THETA):
    """cos/sin of shape (max_pos, head_dim // 2); column i is pair i."""
    i = torch.arange(0, head_dim // 2, dtype=torch.float32)
    freqs = theta ** (-2.0 * i / head_dim)
    pos = torch.arange(max_pos, dtype=torch.float32)
    angles = torch.outer(pos, freqs)
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x, cos, sin):
    """x: (B, H, T, head_dim); cos/sin: (T, head_dim // 2). Interleaved pairs."""
    b, h, t, hd = x.shape
    xp = x.reshape(b, h, t, hd // 2, 2)
    x0, x1 = xp[..., 0], xp[..., 1]
    y0 = x0 * cos - x1 * sin
    y1 = x0 * sin + x1 * cos
    return torch.stack((y0, y1), dim=-1).reshape(b, h, t, hd)


class KVCache:
    """Preallocated per-layer key/value buffers, (B, H, max_len, head_dim)."""

    def __init__(self, n_layers, batch, n_heads, max_len, head_dim):
        shape = (batch, n_heads, max_len, head_dim)
        self.k = [torch.zeros(shape) for _ in range(n_layers)]
        self.v = [torch.zeros(shape) for _ in range(n_layers)]
        self.len = 0  # positions filled so far (same for every layer)


class Attention(nn.Module):
    def __init__(self, d_model, n_heads, head_dim):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = head_dim
        inner = n_heads * head_dim
        self.wq = nn.Linear(d_model, inner, bias=False)
        self.wk = nn.Linear(d_model, inner, bias=False)
        self.wv = nn.Linear(d_model, inner, bias=False)
        self.wo = nn.Linear(inner, d_model, bias=False)

    def forward(self, x, cos, sin, cache=None, layer=0):
        b, t, _ = x.shape
        shape = (b, t, self.n_heads, self.head_dim)
        q = self.wq(x).view(shape).transpose(1, 2)
        k = self.wk(x).view(shape).transpose(1, 2)
        v = self.wv(x).view(shape).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)

        if cache is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            start = cache.len
            end = start + t
            cache.k[layer][:, :, start:end] = k
            cache.v[layer][:, :, start:end] = v
            k_all = cache.k[layer][:, :, :end]
            v_all = cache.v[layer][:, :, :end]
            if start == 0:
                # Prefill: plain causal attention over the prompt.
                out = F.scaled_dot_product_attention(q, k_all, v_all, is_causal=True)
            elif t == 1:
                # One new token sees every cached position (SDPA's is_causal is
                # top-left aligned, so it must be off here).
                out = F.scaled_dot_product_attention(q, k_all, v_all)
            else:
                # Several new tokens after a filled cache: bottom-right causal mask.
                mask = torch.ones(t, end, dtype=torch.bool).tril(diagonal=start)
                out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)

        out = out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)
        return self.wo(out)


class MLP(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, d_model, n_heads, head_dim, d_ff):
        super().__init__()
        self.attn_norm = RMSNorm(d_model)
        self.attn = Attention(d_model, n_heads, head_dim)
        self.mlp_norm = RMSNorm(d_model)
        self.mlp = MLP(d_model, d_ff)

    def forward(self, x, cos, sin, cache=None, layer=0):
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, layer)
        x = x + self.mlp(self.mlp_norm(x))
        return x


class Decoder(nn.Module):
    def __init__(self, vocab, d_model, n_layers, n_heads, head_dim, d_ff, max_pos):
        super().__init__()
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.embed = nn.Embedding(vocab, d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, head_dim, d_ff) for _ in range(n_layers)
        )
        self.norm = RMSNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)  # untied
        cos, sin = rope_tables(head_dim, max_pos)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=INIT_STD)
        elif isinstance(m, RMSNorm):
            nn.init.ones_(m.weight)

    def forward(self, ids, cache=None):
        t = ids.shape[1]
        start = 0 if cache is None else cache.len
        cos = self.rope_cos[start:start + t]
        sin = self.rope_sin[start:start + t]
        x = self.embed(ids)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, i)
        if cache is not None:
            cache.len += t
        return self.lm_head(self.norm(x))


# --------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------


def make_optimizer(model):
    kwargs = dict(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    try:
        return torch.optim.AdamW(model.parameters(), fused=True, **kwargs), "fused"
    except Exception as e:  # older torch: fused is CUDA-only
        log(f"fused AdamW unavailable on CPU ({e}); using foreach")
        return torch.optim.AdamW(model.parameters(), foreach=True, **kwargs), "foreach"


def bench_train(cfg, steps):
    b, s, vocab = cfg["batch"], cfg["seq"], cfg["vocab"]
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg, max_pos=s)
    model.train()
    opt, opt_impl = make_optimizer(model)
    data = torch.randint(0, vocab, (steps + 1, b, s + 1))

    def step(batch):
        inputs, targets = batch[:, :-1], batch[:, 1:]
        t0 = time.perf_counter()
        logits = model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        return loss.item(), t1 - t0, t2 - t1, t3 - t2

    loss, *_ = step(data[0])
    log(f"train warm-up step: loss {loss:.4f} (optimizer: {opt_impl})")

    fwd = bwd = optm = 0.0
    t_start = time.perf_counter()
    for i in range(steps):
        loss, f, bw, o = step(data[i + 1])
        fwd, bwd, optm = fwd + f, bwd + bw, optm + o
        log(f"train step {i + 1}/{steps}: loss {loss:.4f} fwd {f:.3f}s bwd {bw:.3f}s opt {o:.3f}s")
    elapsed = time.perf_counter() - t_start

    return {
        "tokens_per_s": b * s * steps / elapsed,
        "forward_s": fwd / steps,
        "backward_s": bwd / steps,
        "optimizer_s": optm / steps,
        "steps": steps,
        "elapsed_s": elapsed,
        "final_loss": loss,
        "optimizer_impl": opt_impl,
    }


def bench_decode(cfg, n_new):
    vocab = cfg["vocab"]
    max_len = PROMPT_TOKENS + n_new
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg, max_pos=max_len)
    model.eval()
    prompt = torch.randint(0, vocab, (1, PROMPT_TOKENS))

    with torch.inference_mode():
        cache = KVCache(cfg["layers"], 1, cfg["heads"], max_len, cfg["head_dim"])
        t0 = time.perf_counter()
        logits = model(prompt, cache)
        prefill = time.perf_counter() - t0
        nxt = logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)

        generated = []
        t_start = time.perf_counter()
        for _ in range(n_new):
            logits = model(nxt, cache)
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            generated.append(nxt)
        out = torch.cat(generated, dim=1)  # forces nothing lazy; CPU is eager
        elapsed = time.perf_counter() - t_start

    log(f"decode: prefill {prefill:.4f}s, {n_new} tokens in {elapsed:.3f}s; "
        f"first ids {out[0, :8].tolist()}")
    return {
        "tokens_per_s": n_new / elapsed,
        "tokens": n_new,
        "elapsed_s": elapsed,
        "prompt_tokens": PROMPT_TOKENS,
        "prefill_s": prefill,
    }


def build_model(cfg, max_pos):
    return Decoder(
        vocab=cfg["vocab"],
        d_model=cfg["d_model"],
        n_layers=cfg["layers"],
        n_heads=cfg["heads"],
        head_dim=cfg["head_dim"],
        d_ff=cfg["d_ff"],
        max_pos=max_pos,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["train", "decode", "both"], default="both")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--decode-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--d-model", type=int, default=384)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--d-ff", type=int, default=1536)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    if a.d_model % a.heads != 0:
        p.error("--d-model must be divisible by --heads")
    head_dim = a.d_model // a.heads
    if head_dim % 2 != 0:
        p.error("head_dim (d_model / heads) must be even for RoPE")
    if a.steps < 1 or a.decode_tokens < 1:
        p.error("--steps and --decode-tokens must be at least 1")

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    cfg = {
        "vocab": a.vocab,
        "d_model": a.d_model,
        "layers": a.layers,
        "heads": a.heads,
        "head_dim": head_dim,
        "d_ff": a.d_ff,
        "batch": a.batch,
        "seq": a.seq,
        "dtype": "float32",
        "seed": a.seed,
    }
    result = {
        "framework": "pytorch",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "config": cfg,
    }
    n_params = sum(x.numel() for x in build_model(cfg, max_pos=1).parameters())
    result["config"]["params"] = n_params
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {n_params:,} parameters")

    if a.mode in ("train", "both"):
        result["train"] = bench_train(cfg, a.steps)
    if a.mode in ("decode", "both"):
        result["decode"] = bench_decode(cfg, a.decode_tokens)

    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
