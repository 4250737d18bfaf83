#!/usr/bin/env python3
"""Compares llama.cpp itself with THAU on THAU's own exported GGUF file.

llama.cpp is built here from the PyPI source distribution of llama-cpp-python:

    python3 -m pip install cmake ninja
    CMAKE_ARGS="-DGGML_NATIVE=ON" python3 -m pip install llama-cpp-python   # ~3 minutes

Then:

    thau export gguf --type f32 -o thau.gguf --reference thau-ref.json
    python3 bench/llamacpp_compare.py thau.gguf thau-ref.json

For each reference text it feeds THAU's token ids to llama.cpp, compares the logits at
every position (max |difference|, greedy agreement) and the greedy continuation, checks
that llama.cpp's own tokenizer gives the same ids, and prints one JSON line. Exit code 3
when llama_cpp is not installed.

Weight repacking into llama.cpp's extra buffer types (AMX tiles on this machine's Xeon)
is turned off: here the AMX path crashes on quantized files (the sandbox does not grant
the AMX tile state), and repacking changes speed, not results.
"""

import json
import sys


def main(gguf_path, ref_path):
    try:
        import numpy as np
        from llama_cpp import Llama
    except ImportError as e:
        print(json.dumps({"error": f"{e} (see the docstring to install llama-cpp-python)"}))
        return 3
    import llama_cpp.llama_cpp as low

    default_params = low.llama_model_default_params

    def params_without_repacking():
        p = default_params()
        p.use_extra_bufts = False
        return p

    low.llama_model_default_params = params_without_repacking
    ref = json.load(open(ref_path))
    llm = Llama(model_path=gguf_path, n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    report = {"texts": [], "positions": 0, "agree": 0, "max_abs_logit_diff": 0.0,
              "continuations_equal": 0, "tokenizer_equal": 0}
    for t in ref["texts"]:
        ids = t["ids"]
        want = np.array(t["logits"], dtype=np.float32)
        llm.reset()
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)], dtype=np.float32)
        diff = float(np.abs(got - want).max())
        agree = int((got.argmax(-1) == want.argmax(-1)).sum())
        # Greedy continuation from llama.cpp's sampler at temperature 0.
        out = []
        for tok in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, reset=True):
            if len(out) == len(t["greedy"]):
                break
            out.append(int(tok))
        tokenized = llm.tokenize(t["text"].encode("utf-8"), add_bos=False, special=True)
        report["texts"].append({
            "text": t["text"], "positions": len(ids), "agree": agree, "max_abs_logit_diff": diff,
            "greedy_thau": t["greedy"], "greedy_llamacpp": out,
            "tokenizer_equal": list(tokenized) == ids,
        })
        report["positions"] += len(ids)
        report["agree"] += agree
        report["max_abs_logit_diff"] = max(report["max_abs_logit_diff"], diff)
        report["continuations_equal"] += int(out == t["greedy"])
        report["tokenizer_equal"] += int(list(tokenized) == ids)
    report["greedy_agreement"] = report["agree"] / max(1, report["positions"])
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
