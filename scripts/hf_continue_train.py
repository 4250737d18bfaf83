#!/usr/bin/env python3
"""Continues training a `thau export hf` checkpoint with PyTorch (FSDP on several GPUs).

Single process (CPU, or one GPU when there is one):
  python3 scripts/hf_continue_train.py EXPORT_DIR TEXT_FILE OUT_DIR --steps 100
Several GPUs on one machine (FSDP2 `fully_shard`, one process per GPU):
  torchrun --standalone --nproc_per_node=8 scripts/hf_continue_train.py EXPORT_DIR TEXT_FILE OUT_DIR --steps 1000
Several machines: the usual torchrun --nnodes/--rdzv-* flags; nothing here changes.

The text file is split into documents at blank lines; each document is tokenized alone
and followed by the end-of-text token (THAU's <|eot|>, the tokenizer's eos), as THAU
trains plain text. The token stream is cut into windows of --seq-len + 1 ids, and every
step draws --batch windows per process at random (seeded; each rank its own draw).
AdamW as THAU trains: betas (0.9, 0.95), weight decay 0.1 except on the norm gains,
gradients clipped to 1.0, linear warm-up then constant --lr.

OUT_DIR gets the same layout as EXPORT_DIR, so `thau import hf OUT_DIR` reads it back:
config.json and generation_config.json by save_pretrained, model.safetensors (float32,
every tensor under its own HF name, nothing shared: the head is untied), and the
tokenizer files copied from EXPORT_DIR byte for byte. Writes go to OUT_DIR.tmp, then a
rename, so a crash never leaves a half-written OUT_DIR.
Needs torch and transformers (target/pyenv: pip install torch transformers).
"""

import argparse
import inspect
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

TOKENIZER_FILES = [
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
]


def log(msg):
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"hf_continue_train: {msg}", flush=True)


def die(msg):
    print(f"hf_continue_train: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def windows(tok, path: Path, seq_len: int) -> torch.Tensor:
    """[N, seq_len + 1] token windows of the documents of `path`, each ended by eos."""
    eos = tok.eos_token_id
    if eos is None:
        die("the tokenizer has no eos_token (tokenizer_config.json `eos_token`)")
    text = path.read_text(encoding="utf-8")
    docs = [d.strip() for d in text.replace("\r\n", "\n").split("\n\n") if d.strip()]
    ids = []
    for d in docs:
        ids.extend(tok(d, add_special_tokens=False).input_ids)
        ids.append(eos)
    n = len(ids) // (seq_len + 1)
    if n == 0:
        die(f"{path}: {len(ids)} tokens, fewer than one window of {seq_len + 1}; lower --seq-len")
    return torch.tensor(ids[: n * (seq_len + 1)], dtype=torch.long).view(n, seq_len + 1)


def param_groups(model, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith("norm.weight") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def full_state_dict(model, sharded: bool) -> dict:
    """Every weight as a whole float32 CPU tensor (on rank 0; {} elsewhere when sharded)."""
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if dist.get_rank() != 0:
            return {}
    else:
        sd = model.state_dict()
    # Own storage per tensor: safetensors refuses shared tensors, and THAU wants them apart.
    return {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in sd.items()}


def save(export_dir: Path, out: Path, sd: dict, generation_config):
    """save_pretrained from a fresh unsharded float32 model, then the tokenizer files."""
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    config = AutoConfig.from_pretrained(export_dir, local_files_only=True)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(sd, strict=False)
    if missing or unexpected:
        die(f"state dict does not fit the model: missing {missing[:4]}, unexpected {unexpected[:4]}")
    fresh.generation_config = generation_config
    kw = {}
    if "safe_serialization" in inspect.signature(fresh.save_pretrained).parameters:
        kw["safe_serialization"] = True  # transformers 4.x; 5.x always writes safetensors
    fresh.save_pretrained(tmp, max_shard_size="100GB", **kw)
    for name in TOKENIZER_FILES:
        if (export_dir / name).is_file():
            shutil.copyfile(export_dir / name, tmp / name)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("export_dir", type=Path)
    ap.add_argument("text_file", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8, help="windows per process per step")
    ap.add_argument("--seq-len", type=int, default=0, help="default: max_position_embeddings")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="bf16 compute on GPU (weights stay float32)")
    ap.add_argument("--log-every", type=int, default=10)
    args = ap.parse_args()

    for need in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if not (args.export_dir / need).is_file():
            die(f"{args.export_dir} lacks {need}: not a `thau export hf` directory")
    if not args.text_file.is_file():
        die(f"{args.text_file}: no such file")

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    else:
        rank, world = 0, 1
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(args.seed)

    tok = AutoTokenizer.from_pretrained(args.export_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        args.export_dir, local_files_only=True, dtype=torch.float32, attn_implementation="sdpa"
    )
    generation_config = model.generation_config
    seq_len = args.seq_len or model.config.max_position_embeddings
    data = windows(tok, args.text_file, seq_len)
    log(f"{sum(p.numel() for p in model.parameters()):,} parameters, {len(data)} windows of "
        f"{seq_len + 1} tokens, {world} process(es) on {device.type}")

    model.to(device)
    if distributed:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16 if args.bf16 else torch.float32, reduce_dtype=torch.float32
        )
        for layer in model.model.layers:
            fully_shard(layer, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    rng = random.Random(args.seed * 1000 + rank)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if args.bf16 and device.type == "cuda" and not distributed
        else torch.autocast(device.type, enabled=False)
    )
    t0 = time.time()
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / max(1, args.warmup))
        for g in opt.param_groups:
            g["lr"] = lr
        batch = data[[rng.randrange(len(data)) for _ in range(args.batch)]].to(device)
        with autocast:
            loss = model(input_ids=batch, labels=batch).loss
        if not math.isfinite(loss.item()):
            die(f"step {step}: loss is {loss.item()}")
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step == 1 or step % args.log_every == 0 or step == args.steps:
            l = loss.detach()
            if distributed:  # the mean over ranks (gloo has no AVG)
                dist.all_reduce(l)
                l = l / world
            log(f"step {step}/{args.steps} loss {l.item():.4f} grad_norm {float(norm):.3f} lr {lr:.2e} "
                f"{time.time() - t0:.1f}s")

    sd = full_state_dict(model, distributed)
    if rank == 0:
        save(args.export_dir, args.out_dir, sd, generation_config)
        log(f"saved {args.out_dir} ({len(sd)} tensors, float32)")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
