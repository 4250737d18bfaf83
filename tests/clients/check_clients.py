#!/usr/bin/env python3
"""Drive a running `thau serve` with the REAL official Python clients.

    python check_clients.py [BASE_URL] [-v]     e.g. http://127.0.0.1:8080
                                                (-v: print tracebacks of failures)

Needs the `ollama` (0.6.x) and `openai` packages (target/pyenv has both).
The served model is a tiny random model, so answers are gibberish: every check
looks at shapes and types only, never at content.  One line per check is
printed ("ok name" / "FAIL name: reason"); the exit status is 1 if any failed.
`tests/serve/clients.rs` runs it against a test server (README: "Works with the
clients people already use").
"""
import base64
import json
import re
import sys
import traceback

import httpx  # comes with both clients
import ollama
import openai
from openai import OpenAI

BASE_URL = "http://127.0.0.1:8080"  # overridden by argv[1]
MODEL = "thau:latest"
TIMEOUT = 120.0
# 1x1 transparent PNG, sent as raw bytes (the ollama client base64-encodes it).
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
# One function tool, in the OpenAI shape (the ollama client accepts the same dict).
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"}}, "required": ["city"]}}}

OL: ollama.Client = None   # set in main()
OA: OpenAI = None          # strict-validating client (see main)
OA_PLAIN: OpenAI = None    # default client, as users run it


def check(cond, msg):
    """Assert that raises with a readable reason (asserts may be stripped by -O)."""
    if not cond:
        raise AssertionError(msg)


def is_floats(v):
    return isinstance(v, list) and len(v) > 0 and all(isinstance(x, float) for x in v)


# ============================ ollama (/api/...) ============================
# ollama-python 0.6.3 has no version() method: use GET /api/version directly.
def ol_version():
    r = httpx.get(BASE_URL + "/api/version", timeout=TIMEOUT)
    check(r.status_code == 200, f"status {r.status_code}")
    v = r.json().get("version")
    check(isinstance(v, str) and v, f"version {v!r}")


def ol_list():
    names = [m.model for m in OL.list().models]       # ListResponse.Model.model
    check(MODEL in names, f"{MODEL} not in {names}")
    check(set(names) <= {"thau:latest", "thau:age0"}, f"unexpected models {names}")


def ol_show():
    for name in ("thau", MODEL):                      # bare name resolves to :latest
        r = OL.show(name)
        check(r.details is not None and isinstance(r.details.family, str), f"{name}: details {r.details}")
        check(isinstance(r.template, str), f"{name}: template {r.template!r}")
        check(isinstance(r.modelinfo, dict) and r.modelinfo, f"{name}: model_info {r.modelinfo!r}")
        check(isinstance(r.parameters, str), f"{name}: parameters {r.parameters!r}")


def ol_ps():
    names = [m.model for m in OL.ps().models]
    check(MODEL in names, f"{MODEL} not in {names}")


def ol_chat():
    r = OL.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}], options={"num_predict": 8})
    check(r.message.role == "assistant", f"role {r.message.role!r}")
    check(isinstance(r.message.content, str), f"content {r.message.content!r}")
    check(r.done is True, f"done {r.done!r}")


def ol_chat_stream():
    parts = list(OL.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                         stream=True, options={"num_predict": 8}))
    check(parts, "no chunks")
    check(all(p.done is not True for p in parts[:-1]), "done=True before the last chunk")
    check(parts[-1].done is True, f"last chunk done={parts[-1].done!r}")
    check(all(isinstance(p.message.content or "", str) for p in parts), "non-str content")


def ol_generate():
    r = OL.generate(model=MODEL, prompt="hi", options={"num_predict": 8})
    check(isinstance(r.response, str) and r.done is True, f"response {r.response!r} done {r.done!r}")
    parts = list(OL.generate(model=MODEL, prompt="hi", stream=True, options={"num_predict": 8}))
    check(parts and parts[-1].done is True, "stream did not end with done=True")
    check(all(isinstance(p.response, str) for p in parts), "non-str response in stream")


def ol_generate_raw():
    r = OL.generate(model=MODEL, prompt="[raw prompt]", raw=True, options={"num_predict": 5})
    check(isinstance(r.response, str) and r.done is True, f"response {r.response!r}")


def ol_chat_json():
    r = OL.chat(model=MODEL, messages=[{"role": "user", "content": "give json"}], format="json",
                options={"num_predict": 64})
    json.loads(r.message.content)                     # raises if not JSON


def ol_options():
    opts = {"num_predict": 5, "temperature": 0, "top_k": 1, "top_p": 0.9, "seed": 1,
            "repeat_penalty": 1.1, "stop": ["\n"], "num_ctx": 512}
    r = OL.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}], options=opts)
    check(r.done is True, "not done")
    check(isinstance(r.eval_count, int) and r.eval_count <= 5, f"eval_count {r.eval_count!r}")


def ol_empty_and_image():
    # NB: the client drops falsy fields, so the empty-content message goes out as {"role": "user"}.
    msgs = [{"role": "user", "content": ""},
            {"role": "user", "content": "what is this?", "images": [PNG]}]
    r = OL.chat(model=MODEL, messages=msgs, options={"num_predict": 4})
    check(r.done is True and r.message.role == "assistant", "bad reply")


def ol_embed():
    r = OL.embed(model="thau", input=["a", "b"])
    e = [list(v) for v in r.embeddings]
    check(len(e) == 2 and all(is_floats(v) for v in e), f"embeddings {str(e)[:80]}")
    check(len(e[0]) == len(e[1]), "vector lengths differ")


def ol_embeddings():
    r = OL.embeddings(model="thau", prompt="a")
    check(is_floats(list(r.embedding)), f"embedding {str(r.embedding)[:80]}")


def ol_load_empty():
    r = OL.chat(model=MODEL, messages=[])             # what `ollama run` sends to preload
    check(r.done is True, f"done {r.done!r}")


def ol_tool_round_trip():
    msgs = [{"role": "user", "content": "Weather in Paris?"},
            # ollama tool_calls: no id/type, arguments is an OBJECT (not a JSON string)
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "sunny, 21C", "tool_name": "get_weather"}]
    r = OL.chat(model=MODEL, messages=msgs, tools=[WEATHER_TOOL], options={"num_predict": 8})
    check(r.done is True and r.message.role == "assistant", "bad reply")


def ol_errors():
    for call in (lambda: OL.show("nosuchmodel"),
                 lambda: OL.chat(model="nosuchmodel", messages=[{"role": "user", "content": "hi"}])):
        try:
            call()
        except ollama.ResponseError as e:
            check(e.status_code == 404, f"status_code {e.status_code}")
            check(isinstance(e.error, str) and e.error, f".error {e.error!r} (want the body's 'error' string)")
        else:
            raise AssertionError("no ResponseError raised")


# ============================ openai (/v1/...) ============================
def chat(**kw):
    kw.setdefault("model", MODEL)
    kw.setdefault("messages", [{"role": "user", "content": "hi"}])
    kw.setdefault("max_tokens", 8)
    return OA.chat.completions.create(**kw)


def oa_models():
    ids = [m.id for m in OA.models.list()]
    check(MODEL in ids, f"{MODEL} not in {ids}")
    check(OA.models.retrieve(MODEL).id == MODEL, "retrieve id mismatch")


def oa_chat():
    r = chat()
    c = r.choices[0]
    check(isinstance(c.message.content, str), f"content {c.message.content!r}")
    check(c.message.role == "assistant", f"role {c.message.role!r}")
    check(c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r}")
    check(r.usage is not None and isinstance(r.usage.completion_tokens, int), f"usage {r.usage!r}")


def oa_chat_stream_usage():
    chunks = list(chat(stream=True, stream_options={"include_usage": True}))
    check(chunks, "no chunks")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(isinstance(text, str), "text")
    last = chunks[-1]
    check(last.usage is not None and isinstance(last.usage.completion_tokens, int), f"last usage {last.usage!r}")
    check(last.choices == [], f"usage chunk should have choices=[] (got {last.choices!r})")
    check(any(c.choices and c.choices[0].finish_reason for c in chunks), "no finish_reason")


def oa_developer_and_parts():
    r = chat(messages=[{"role": "developer", "content": "be terse"},
                       {"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    check(isinstance(r.choices[0].message.content, str), "content")


def oa_stop_seed():
    r = chat(stop=["\n"], seed=1, temperature=0)
    check(isinstance(r.choices[0].message.content, str), "content")


def oa_n2():
    try:
        chat(n=2)
    except openai.BadRequestError as e:
        body = e.body if isinstance(e.body, dict) else {}        # the inner "error" object
        named = body.get("param") == "n" or re.search(r"\bn\b", str(body.get("message", "")))
        check(named, f"error body does not name n: {e.body!r}")
    else:
        raise AssertionError("n=2 accepted")


def oa_json_object():
    r = chat(response_format={"type": "json_object"}, max_tokens=64,
             messages=[{"role": "user", "content": "give json"}])
    json.loads(r.choices[0].message.content)


FORCE = {"type": "function", "function": {"name": "get_weather"}}


def oa_forced_tool():
    r = chat(tools=[WEATHER_TOOL], tool_choice=FORCE, max_tokens=64)
    c = r.choices[0]
    tc = (c.message.tool_calls or [None])[0]
    check(tc is not None, "no tool_calls")
    check(tc.type == "function" and tc.id, f"tool call id/type {tc.id!r}/{tc.type!r}")
    check(tc.function.name == "get_weather", f"name {tc.function.name!r}")
    args = json.loads(tc.function.arguments)
    check(isinstance(args, dict) and "city" in args, f"arguments {args!r}")
    check(c.finish_reason == "tool_calls", f"finish_reason {c.finish_reason!r}")


def oa_forced_tool_stream():
    calls = {}       # index -> {"name", "args"}
    finish = None
    for ch in chat(tools=[WEATHER_TOOL], tool_choice=FORCE, max_tokens=64, stream=True):
        if not ch.choices:
            continue
        d = ch.choices[0].delta
        for t in d.tool_calls or []:
            slot = calls.setdefault(t.index, {"name": "", "args": ""})
            if t.function and t.function.name:
                slot["name"] += t.function.name
            if t.function and t.function.arguments:
                slot["args"] += t.function.arguments
        finish = ch.choices[0].finish_reason or finish
    check(0 in calls, "no tool_calls deltas")
    check(calls[0]["name"] == "get_weather", f"name {calls[0]['name']!r}")
    check("city" in json.loads(calls[0]["args"]), f"args {calls[0]['args']!r}")
    check(finish == "tool_calls", f"finish_reason {finish!r}")


def oa_tool_round_trip():
    msgs = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"}]
    r = chat(messages=msgs, tools=[WEATHER_TOOL])
    c = r.choices[0]
    check(isinstance(c.message.content, str) or c.message.tool_calls, "no answer")


def oa_embeddings():
    # Default call: the client sends encoding_format="base64" and decodes float32 LE itself.
    # Uses the non-strict client: strict validation rejects the base64 string before
    # the SDK gets to decode it (an SDK quirk, it would fail against api.openai.com too).
    r = OA_PLAIN.embeddings.create(model=MODEL, input=["a", "b"])
    e = [list(d.embedding) for d in sorted(r.data, key=lambda d: d.index)]
    check(len(e) == 2 and all(is_floats(v) for v in e), f"data {str(e)[:80]}")
    check(len(e[0]) == len(e[1]) > 0, "vector lengths differ")
    # Explicit float: must come back as a JSON array of numbers.
    f = OA_PLAIN.embeddings.create(model=MODEL, input="a", encoding_format="float")
    check(is_floats(list(f.data[0].embedding)), "encoding_format=float")
    check(len(f.data[0].embedding) == len(e[0]), "float and base64 lengths differ")


def oa_errors():
    for call in (lambda: OA.models.retrieve("nosuchmodel"),
                 lambda: chat(model="nosuchmodel")):
        try:
            call()
        except openai.NotFoundError as e:
            check(isinstance(e.body, dict) and e.body.get("message"), f"body {e.body!r}")
        else:
            raise AssertionError("no NotFoundError raised")


# ============================ disconnect ============================
def disconnect(base):
    """Start a long streaming chat, read the first SSE chunk, then hang up.
    Only drives the client side; the caller checks that the server freed the slot."""
    body = {"model": MODEL, "stream": True, "max_tokens": 4000,
            "messages": [{"role": "user", "content": "tell me a long story"}]}
    with httpx.Client(timeout=TIMEOUT) as c:
        with c.stream("POST", base + "/v1/chat/completions", json=body) as r:
            check(r.status_code == 200, f"status {r.status_code}")
            for line in r.iter_lines():
                if line.startswith("data:"):
                    break                        # got the first chunk
    # leaving both `with` blocks closes the response and the connection


CHECKS = [ol_version, ol_list, ol_show, ol_ps, ol_chat, ol_chat_stream, ol_generate,
          ol_generate_raw, ol_chat_json, ol_options, ol_empty_and_image, ol_embed,
          ol_embeddings, ol_load_empty, ol_tool_round_trip, ol_errors,
          oa_models, oa_chat, oa_chat_stream_usage, oa_developer_and_parts, oa_stop_seed,
          oa_n2, oa_json_object, oa_forced_tool, oa_forced_tool_stream, oa_tool_round_trip,
          oa_embeddings, oa_errors]


def main():
    global BASE_URL, OL, OA, OA_PLAIN
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    if args:
        BASE_URL = args[0].rstrip("/")
    OL = ollama.Client(host=BASE_URL, timeout=TIMEOUT)
    # Strict validation: a missing required field raises instead of being silently absent.
    # max_retries=0: a 5xx must fail once, not be retried (the default is 2 retries).
    kw = dict(base_url=BASE_URL + "/v1", api_key="unused", timeout=TIMEOUT, max_retries=0)
    OA = OpenAI(**kw, _strict_response_validation=True)
    OA_PLAIN = OpenAI(**kw)
    failed = 0
    for fn in CHECKS + [lambda: disconnect(BASE_URL)]:
        name = getattr(fn, "__name__", "disconnect")
        name = "disconnect" if name == "<lambda>" else name
        try:
            fn()
            print(f"ok {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            reason = f"{type(e).__name__}: {e}".replace("\n", " ")[:300]
            print(f"FAIL {name}: {reason}", flush=True)
            if "-v" in sys.argv:
                traceback.print_exc()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
