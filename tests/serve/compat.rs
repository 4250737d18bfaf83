//! The Ollama- and OpenAI-compatible routes, checked field by field against their
//! documented JSON, streaming included.

use serde_json::{json, Value};

use crate::client::Client;

/// Ollama's and OpenAI's response shapes, field by field (their documented JSON).
pub fn ollama_and_openai(c: &Client) {
    let (s, v) = c.get_json("/api/tags");
    assert_eq!(s, 200);
    let m = &v["models"][0];
    assert_eq!(m["name"], "thau:latest");
    for f in ["model", "modified_at", "size", "digest"] {
        assert!(!m[f].is_null(), "tags: {f}");
    }
    for f in ["format", "family", "parameter_size", "quantization_level"] {
        assert!(m["details"][f].is_string(), "tags details: {f}");
    }
    let timing = [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ];
    let (s, v) = c.post_json(
        "/api/generate",
        json!({"model": "thau", "prompt": "the red", "stream": false, "options": {"num_predict": 4, "seed": 3}}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["model"].as_str(), v["done"].as_bool()),
        (Some("thau"), Some(true))
    );
    assert!(
        v["response"].is_string() && v["created_at"].is_string() && v["done_reason"].is_string()
    );
    for f in timing {
        assert!(v[f].is_u64(), "generate: {f} in {v}");
    }
    // Streaming: NDJSON, one object a line, the last one closing with the timings.
    let (s, ct, text) = c.post_text(
        "/api/chat",
        json!({"model": "thau", "messages": [{"role": "user", "content": "the fox"}], "options": {"num_predict": 4}}),
    );
    assert_eq!((s, ct.as_str()), (200, "application/x-ndjson"));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true, "{text}");
    for f in timing {
        assert!(last[f].is_u64(), "chat: {f}");
    }
    for l in &lines[..lines.len() - 1] {
        assert_eq!(
            (l["done"].as_bool(), l["message"]["role"].as_str()),
            (Some(false), Some("assistant"))
        );
        assert!(l["message"]["content"].is_string());
    }
    // Streamed, not the whole answer in one line: several pieces come before the end.
    let pieces = lines[..lines.len() - 1]
        .iter()
        .filter(|l| {
            l["message"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        })
        .count();
    assert!(pieces >= 2, "one piece is no stream: {text}");
    let (s, v) = c.post_json(
        "/api/chat",
        json!({"messages": [{"role": "user", "content": "hi"}], "stream": false, "options": {"num_predict": 3}}),
    );
    assert_eq!(
        (s, v["message"]["role"].as_str(), v["done"].as_bool()),
        (200, Some("assistant"), Some(true)),
        "{v}"
    );

    let (s, v) = c.post_json(
        "/v1/chat/completions",
        json!({"model": "thau", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "seed": 2}),
    );
    assert_eq!(s, 200, "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].is_i64() && v["model"] == "thau");
    let choice = &v["choices"][0];
    assert_eq!(
        (choice["index"].as_u64(), choice["message"]["role"].as_str()),
        (Some(0), Some("assistant"))
    );
    assert!(["stop", "length", "tool_calls"].contains(&choice["finish_reason"].as_str().unwrap()));
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
    );
    // Streaming: server-sent events, chunks, then [DONE].
    let (s, ct, text) = c.post_text(
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": true}),
    );
    assert_eq!((s, ct.as_str()), (200, "text/event-stream"));
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert!(chunks.last().unwrap()["choices"][0]["finish_reason"].is_string());
    let pieces = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert!(pieces >= 2, "one chunk is no stream: {text}");
    let (s, v) = c.post_json("/v1/chat/completions", json!({"messages": []}));
    assert_eq!(s, 400, "{v}");
}
