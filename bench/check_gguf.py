#!/usr/bin/env python3
"""Checks a GGUF file exported by `thau export gguf` with an independent reader, the
PyPI `gguf` package (pip install gguf): every metadata key llama.cpp's `llama`
architecture needs is present, and every tensor is there with the shape the metadata
implies. Prints one JSON line; exits 1 when something is missing or wrong, 3 when the
`gguf` package is not installed.

Usage: python3 bench/check_gguf.py FILE.gguf
"""

import json
import sys

REQUIRED_KEYS = [
    "general.architecture",
    "llama.context_length",
    "llama.embedding_length",
    "llama.block_count",
    "llama.feed_forward_length",
    "llama.rope.dimension_count",
    "llama.rope.freq_base",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.layer_norm_rms_epsilon",
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.chat_template",
]


def scalar(field):
    """The value of a scalar metadata field."""
    return field.parts[field.data[0]][0].item()


def main(path):
    try:
        from gguf import GGUFReader
    except ImportError:
        print(json.dumps({"error": "gguf not installed (pip install gguf)"}))
        return 3
    r = GGUFReader(path)
    problems = []
    for k in REQUIRED_KEYS:
        if k not in r.fields:
            problems.append(f"missing key {k}")
    if problems:
        print(json.dumps({"ok": False, "problems": problems}))
        return 1
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    if arch != "llama":
        problems.append(f"architecture is {arch}")
    d = scalar(r.fields["llama.embedding_length"])
    layers = scalar(r.fields["llama.block_count"])
    ff = scalar(r.fields["llama.feed_forward_length"])
    heads = scalar(r.fields["llama.attention.head_count"])
    head_dim = scalar(r.fields["llama.rope.dimension_count"])
    vocab = len(r.fields["tokenizer.ggml.tokens"].data)
    a = heads * head_dim
    # Shapes as the reader reports them: reversed (ggml order), i.e. [cols, rows].
    expected = {"token_embd.weight": [d, vocab], "output_norm.weight": [d], "output.weight": [d, vocab]}
    for i in range(layers):
        p = f"blk.{i}."
        expected.update({
            p + "attn_norm.weight": [d],
            p + "attn_q.weight": [d, a],
            p + "attn_k.weight": [d, a],
            p + "attn_v.weight": [d, a],
            p + "attn_output.weight": [a, d],
            p + "ffn_norm.weight": [d],
            p + "ffn_gate.weight": [d, ff],
            p + "ffn_up.weight": [d, ff],
            p + "ffn_down.weight": [ff, d],
        })
    found = {t.name: [int(x) for x in t.shape] for t in r.tensors}
    for name, shape in expected.items():
        if name not in found:
            problems.append(f"missing tensor {name}")
        elif found[name] != shape:
            problems.append(f"{name}: shape {found[name]}, expected {shape}")
    extra = sorted(set(found) - set(expected))
    if extra:
        problems.append(f"unexpected tensors {extra[:5]}")
    print(json.dumps({
        "ok": not problems,
        "problems": problems,
        "keys": len(r.fields),
        "tensors": len(found),
        "vocab": vocab,
        "layers": layers,
        "types": sorted({t.tensor_type.name for t in r.tensors}),
    }))
    return 0 if not problems else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
