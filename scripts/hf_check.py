#!/usr/bin/env python3
"""Checks a `thau export hf` directory with Hugging Face transformers, offline.

Usage:
  python3 scripts/hf_check.py EXPORT_DIR REFERENCE_JSON [--tol 1e-4] [--attn eager|sdpa]

EXPORT_DIR is a LlamaForCausalLM checkpoint: config.json, model.safetensors (or shards with
model.safetensors.index.json), tokenizer.json, tokenizer_config.json (with the chat
template) and optionally generation_config.json.

REFERENCE_JSON is written by THAU from the native model (the LM head alone, no copy head):
  {"ids":      [[id, ...], ...],                    token ids of each sequence
   "logits":   [[[V floats] per position], ...],     THAU's logits at every position
   "text":     "some text",
   "text_ids": [id, ...],                            THAU's tokenizer on `text`
   "chat_ids": [id, ...]}                            optional: THAU's chat prompt for one user
                                                     turn "hola" (<|user|> hola<|eot|><|assistant|>)
The output of `thau export gguf --reference` ({"texts": [{"text", "ids", "logits"}, ...]})
is read too.

Before loading anything it checks the files: every tensor named and shaped as
LlamaForCausalLM wants for config.json, all float32, none extra (exit 2 otherwise).
Checks, each failing the run (exit 1):
  * the model's logits on every sequence differ from THAU's by less than --tol (max |diff|);
  * tokenizer(text, add_special_tokens=False).input_ids == text_ids;
  * apply_chat_template([{"role": "user", "content": "hola"}], add_generation_prompt=True)
    renders a string (and, given chat_ids, tokenizes to exactly those ids).
Prints one summary line of figures at the end. Exit 2: unusable arguments or files;
exit 3: torch or transformers is missing.
Needs torch and transformers (e.g. target/pyenv: pip install torch transformers).
"""

import argparse
import json
import os
import sys
from pathlib import Path

# Never reach for the Hub: everything comes from EXPORT_DIR.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

CHAT_MESSAGES = [{"role": "user", "content": "hola"}]


def die(msg: str, code: int = 2):
    print(f"hf_check: {msg}", file=sys.stderr)
    sys.exit(code)


def check_dir(d: Path) -> dict:
    """The files a LlamaForCausalLM export needs, with a clear message for each one missing."""
    if not d.is_dir():
        die(f"{d} is not a directory")
    missing = []
    if not (d / "config.json").is_file():
        missing.append("config.json (the LlamaForCausalLM configuration)")
    if not (d / "model.safetensors").is_file() and not (d / "model.safetensors.index.json").is_file():
        missing.append("model.safetensors (the weights) or model.safetensors.index.json (shards)")
    if not (d / "tokenizer.json").is_file():
        missing.append("tokenizer.json (the byte-level BPE)")
    if not (d / "tokenizer_config.json").is_file():
        missing.append("tokenizer_config.json (special tokens and chat_template)")
    if missing:
        die(f"{d} lacks: " + "; ".join(missing))
    try:
        cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
        tcfg = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        die(f"{d}: unreadable JSON: {e}")
    if cfg.get("model_type") != "llama" or "LlamaForCausalLM" not in cfg.get("architectures", []):
        die(f"{d}/config.json: model_type {cfg.get('model_type')!r}, architectures "
            f"{cfg.get('architectures')!r}; expected 'llama' and ['LlamaForCausalLM']")
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "rms_norm_eps"):
        if key not in cfg:
            die(f"{d}/config.json lacks `{key}`")
    if not tcfg.get("chat_template") and not (d / "chat_template.jinja").is_file():
        die(f"{d}: no chat template (tokenizer_config.json `chat_template` or chat_template.jinja)")
    return cfg


def expected_tensors(cfg: dict) -> dict:
    """HF LlamaForCausalLM tensor names and shapes for `cfg` (no biases, untied head)."""
    v, d, f = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]
    h = cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or d // h
    kv = cfg.get("num_key_value_heads") or h
    out = {"model.embed_tokens.weight": [v, d], "model.norm.weight": [d], "lm_head.weight": [v, d]}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.update({
            p + "input_layernorm.weight": [d],
            p + "post_attention_layernorm.weight": [d],
            p + "self_attn.q_proj.weight": [h * hd, d],
            p + "self_attn.k_proj.weight": [kv * hd, d],
            p + "self_attn.v_proj.weight": [kv * hd, d],
            p + "self_attn.o_proj.weight": [d, h * hd],
            p + "mlp.gate_proj.weight": [f, d],
            p + "mlp.up_proj.weight": [f, d],
            p + "mlp.down_proj.weight": [d, f],
        })
    return out


def safetensors_header(path: Path) -> dict:
    """name -> {dtype, shape} from a safetensors file's JSON header (no torch needed)."""
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or n > 100_000_000:
                die(f"{path}: not a safetensors file (header length {n})")
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as e:
        die(f"{path}: unreadable safetensors header: {e}")
    header.pop("__metadata__", None)
    return header


def check_tensors(d: Path, cfg: dict):
    """Every tensor LlamaForCausalLM needs, with its shape, in float32; nothing else."""
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError) as e:
            die(f"{index}: unreadable weight_map: {e}")
    else:
        files = ["model.safetensors"]
    have = {}
    for name in files:
        if not (d / name).is_file():
            die(f"{d} lacks the shard {name} named in model.safetensors.index.json")
        have.update(safetensors_header(d / name))
    want = expected_tensors(cfg)
    problems = [f"missing {k}" for k in want if k not in have]
    problems += [f"unexpected {k}" for k in have if k not in want]
    problems += [
        f"{k} has shape {have[k].get('shape')}, config needs {s}"
        for k, s in want.items() if k in have and have[k].get("shape") != s
    ]
    problems += [f"{k} is {t.get('dtype')}, not F32" for k, t in have.items() if t.get("dtype") != "F32"]
    if problems:
        shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
        die(f"{d}: weights do not match config.json: " + "; ".join(shown))
    return len(have)


def load_reference(path: Path, vocab: int) -> dict:
    try:
        ref = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        die(f"{path}: cannot read the reference JSON: {e}")
    if "texts" in ref and "ids" not in ref:  # `thau export gguf --reference`
        texts = ref["texts"]
        if not texts:
            die(f"{path}: no texts")
        ref = {
            "ids": [t["ids"] for t in texts],
            "logits": [t["logits"] for t in texts],
            "text": texts[0]["text"],
            # The whole text's tokens (`ids` are cut to fit the context).
            "text_ids": texts[0].get("text_ids", texts[0]["ids"]),
        }
    for key in ("ids", "logits", "text", "text_ids"):
        if key not in ref:
            die(f"{path}: missing `{key}` (expected ids, logits, text, text_ids)")
    if len(ref["ids"]) != len(ref["logits"]) or not ref["ids"]:
        die(f"{path}: {len(ref['ids'])} id sequences but {len(ref['logits'])} logit sequences")
    for i, (ids, lg) in enumerate(zip(ref["ids"], ref["logits"])):
        if not ids or len(ids) != len(lg):
            die(f"{path}: sequence {i} has {len(ids)} ids and {len(lg)} logit rows")
        if any(len(row) != vocab for row in lg):
            die(f"{path}: sequence {i} has logit rows that are not {vocab} long (config vocab_size)")
        if any((not isinstance(t, int)) or t < 0 or t >= vocab for t in ids):
            die(f"{path}: sequence {i} holds an id outside 0..{vocab}")
    return ref


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("export_dir", type=Path)
    ap.add_argument("reference_json", type=Path)
    ap.add_argument("--tol", type=float, default=1e-4, help="largest allowed |logit diff| (default 1e-4)")
    ap.add_argument("--attn", choices=["eager", "sdpa"], default="eager", help="attention implementation")
    args = ap.parse_args()

    cfg = check_dir(args.export_dir)
    n_tensors = check_tensors(args.export_dir, cfg)
    ref = load_reference(args.reference_json, cfg["vocab_size"])

    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        # Exit 3: the packages are missing (tests say they skipped; CI installs them).
        die(f"needs torch and transformers ({e}); e.g. target/pyenv/bin/pip install torch transformers", 3)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)

    d = str(args.export_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            d, local_files_only=True, dtype=torch.float32, attn_implementation=args.attn
        )
    except Exception as e:  # noqa: BLE001 - report any loading failure plainly
        die(f"AutoModelForCausalLM.from_pretrained({d}) failed: {type(e).__name__}: {e}")
    try:
        tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        die(f"AutoTokenizer.from_pretrained({d}) failed: {type(e).__name__}: {e}")
    model.eval()
    failures = []

    # Weights nobody loaded or that were freshly initialised show up as garbage logits
    # below; a dtype other than float32 would blur the comparison.
    if model.dtype != torch.float32:
        failures.append(f"model loaded as {model.dtype}, not float32")

    # 1. Logits.
    max_diff, positions, agree = 0.0, 0, 0
    worst = (0, 0)
    with torch.no_grad():
        for i, (ids, want) in enumerate(zip(ref["ids"], ref["logits"])):
            got = model(torch.tensor([ids], dtype=torch.long)).logits[0].float()  # [T, V]
            want = torch.tensor(want, dtype=torch.float32)
            diff = (got - want).abs()
            if diff.max().item() > max_diff:
                max_diff = diff.max().item()
                worst = (i, int(diff.max(-1).values.argmax().item()))
            agree += int((got.argmax(-1) == want.argmax(-1)).sum().item())
            positions += len(ids)
    if not max_diff < args.tol:
        failures.append(
            f"max |logit diff| {max_diff:.3e} >= {args.tol:g} (sequence {worst[0]}, position {worst[1]})"
        )

    # 2. Tokenizer.
    got_ids = tok(ref["text"], add_special_tokens=False).input_ids
    tok_ok = got_ids == ref["text_ids"]
    if not tok_ok:
        first = next((k for k, (a, b) in enumerate(zip(got_ids, ref["text_ids"])) if a != b),
                     min(len(got_ids), len(ref["text_ids"])))
        failures.append(
            f"tokenizer: {len(got_ids)} ids vs THAU's {len(ref['text_ids'])}, first difference at {first} "
            f"(HF {got_ids[first:first + 5]} vs THAU {ref['text_ids'][first:first + 5]})"
        )

    # 3. Chat template.
    chat_ok, chat_text = False, None
    try:
        chat_text = tok.apply_chat_template(CHAT_MESSAGES, add_generation_prompt=True, tokenize=False)
        chat_ok = isinstance(chat_text, str) and len(chat_text) > 0
        if not chat_ok:
            failures.append(f"apply_chat_template returned {type(chat_text).__name__}, not a string")
    except Exception as e:  # noqa: BLE001
        failures.append(f"apply_chat_template failed: {type(e).__name__}: {e}")
    if chat_ok and "chat_ids" in ref:
        # Rendered text tokenized without added BOS/EOS: what a serving stack feeds the model.
        chat_ids = tok(chat_text, add_special_tokens=False).input_ids
        if chat_ids != ref["chat_ids"]:
            chat_ok = False
            failures.append(f"chat prompt {chat_text!r} tokenizes to {chat_ids}, THAU's is {ref['chat_ids']}")

    # Soft checks: printed, not failed.
    eos = tok.eos_token_id
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    gen_eos = gen_eos if isinstance(gen_eos, list) else [gen_eos]
    if eos is None:
        print("hf_check: note: the tokenizer has no eos_token", file=sys.stderr)
    elif eos not in gen_eos:
        print(f"hf_check: note: generation eos {gen_eos} lacks the tokenizer's eos {eos}", file=sys.stderr)

    for f in failures:
        print(f"hf_check: FAIL: {f}", file=sys.stderr)
    print(
        f"hf_check: {'ok' if not failures else 'FAILED'} transformers={transformers.__version__} "
        f"torch={torch.__version__} tensors={n_tensors} sequences={len(ref['ids'])} positions={positions} "
        f"max_abs_logit_diff={max_diff:.3e} tol={args.tol:g} greedy_agreement={agree / max(positions, 1):.4f} "
        f"tokenizer_match={tok_ok} text_ids={len(ref['text_ids'])} chat_template={chat_ok} "
        f"chat_prompt={chat_text!r} eos={eos} generation_eos={gen_eos}"
    )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
