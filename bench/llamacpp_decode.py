#!/usr/bin/env python3
"""Batch-1 greedy decode speed of llama.cpp on a GGUF file: the reference that
`thau bench decode --llamacpp` compares THAU with (same model, same precision).

Needs llama-cpp-python (see bench/llamacpp_compare.py for how it is built here).
Usage: python3 bench/llamacpp_decode.py FILE.gguf [--tokens N] [--threads T]
Prints one JSON line: {"decode": {"tokens_per_s": ..., "tokens": N}, ...}; exit 3 when
llama_cpp is not installed. Weight repacking (AMX here) is off, as in llamacpp_compare.py.
"""

import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    try:
        import llama_cpp
        import llama_cpp.llama_cpp as low
    except ImportError as e:
        print(json.dumps({"error": f"{e} (llama-cpp-python is not installed)"}))
        return 3
    default_params = low.llama_model_default_params

    def params_without_repacking():
        p = default_params()
        p.use_extra_bufts = False
        return p

    low.llama_model_default_params = params_without_repacking
    llm = llama_cpp.Llama(model_path=a.gguf, n_ctx=256, n_threads=a.threads, n_batch=64, verbose=False)
    prompt = list(range(10, 26))  # 16 tokens, as thau bench decode uses
    # Warm-up, then the timed run (prefill included, as THAU's figure includes it).
    for _ in zip(range(4), llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True)):
        pass
    t0 = time.perf_counter()
    n = 0
    for _ in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        n += 1
        if n == a.tokens:
            break
    secs = time.perf_counter() - t0
    print(json.dumps({"framework": "llama.cpp", "version": llama_cpp.__version__, "threads": a.threads,
                      "decode": {"tokens_per_s": n / secs, "tokens": n}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
