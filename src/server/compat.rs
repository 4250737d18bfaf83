//! Endpoints that existing LLM clients speak, so they work with THAU unchanged: Ollama's
//! `GET /api/tags`, `POST /api/generate` and `POST /api/chat` (NDJSON streaming, Ollama's
//! field names and nanosecond timings) and OpenAI's `POST /v1/chat/completions` (SSE
//! streaming; `tools` in, `tool_calls` out). These are stateless, as in those APIs: the
//! client sends the whole conversation. Tool calls the model writes are returned to the
//! client, not run (the client runs its tools).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use warp::Reply;

use super::error::ApiError;
use super::AppState;
use crate::actors::inference::{generate_batched, Generate, Prompt};
use crate::actors::reply;
use crate::actors::tool_router::ScanOutput;
use crate::model::generate::{Generation, SamplingParams, StopReason};
use crate::model::tokenizer::{Message, Role};
use crate::tools::ToolEvent;

/// The model name THAU answers to.
pub const MODEL_NAME: &str = "thau:latest";

/// Chunks sent as they come (a `Send + Sync` stream over a channel).
struct Chunks(mpsc::UnboundedReceiver<Bytes>);

impl futures_util::Stream for Chunks {
    type Item = Result<Bytes, std::convert::Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|o| o.map(Ok))
    }
}

fn streamed(
    rx: mpsc::UnboundedReceiver<Bytes>,
    content_type: &'static str,
) -> warp::reply::Response {
    warp::reply::with_header(
        warp::reply::stream(Chunks(rx)),
        "content-type",
        content_type,
    )
    .into_response()
}

/// Ollama's sampling options (the ones THAU has).
#[derive(Debug, Default, Deserialize)]
pub struct OllamaOptions {
    temperature: Option<f64>,
    num_predict: Option<i64>,
    top_k: Option<usize>,
    top_p: Option<f64>,
    seed: Option<u64>,
    repeat_penalty: Option<f64>,
}

impl OllamaOptions {
    /// These options laid over the configured sampling settings `d`.
    fn params(&self, d: SamplingParams) -> SamplingParams {
        SamplingParams {
            max_new_tokens: match self.num_predict {
                Some(n) if n > 0 => (n as usize).min(4096),
                _ => d.max_new_tokens,
            },
            temperature: self.temperature.unwrap_or(d.temperature).clamp(0.0, 2.0),
            top_k: self.top_k.unwrap_or(d.top_k),
            top_p: self.top_p.unwrap_or(d.top_p).clamp(0.0, 1.0),
            repetition_penalty: self.repeat_penalty.unwrap_or(d.repetition_penalty),
            seed: self.seed.unwrap_or(d.seed),
            ..d
        }
    }
}

/// Body of `POST /api/generate`.
#[derive(Debug, Deserialize)]
pub struct OllamaGenerate {
    #[serde(default)]
    model: String,
    prompt: String,
    system: Option<String>,
    stream: Option<bool>,
    #[serde(default)]
    options: OllamaOptions,
    /// THAU's extension: recall memories into a chat prompt (default: `[memory] recall`).
    memory: Option<bool>,
}

/// Body of `POST /api/chat`.
#[derive(Debug, Deserialize)]
pub struct OllamaChat {
    #[serde(default)]
    model: String,
    messages: Vec<Message>,
    stream: Option<bool>,
    #[serde(default)]
    options: OllamaOptions,
    /// THAU's extension: recall memories into the prompt (default: `[memory] recall`).
    memory: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)] // Accepted for compatibility; THAU's tools are its manifests.
    tools: Option<Value>,
}

/// Body of `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct OpenAiChat {
    #[serde(default)]
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<u64>,
    #[serde(default)]
    #[allow(dead_code)] // Accepted for compatibility; THAU's tools are its manifests.
    tools: Option<Value>,
    /// THAU's extension: recall memories into the prompt (default: `[memory] recall`).
    memory: Option<bool>,
}

/// Runs a generation, sending each piece of text to `on_piece`. A conversation gets the
/// memories recalled for its last user message in front, as in THAU's own chat, unless
/// `memory` is false.
async fn run(
    st: &AppState,
    prompt: Prompt,
    params: SamplingParams,
    pieces: Option<mpsc::UnboundedSender<String>>,
    memory: Option<bool>,
) -> Result<Generation, ApiError> {
    let inference = st
        .rt
        .addrs
        .inference
        .clone()
        .ok_or_else(|| ApiError::unavailable("the Inference actor is not running"))?;
    let prompt = match prompt {
        Prompt::Chat(ms) if memory.unwrap_or(st.rt.config.memory.recall) => {
            let asked = ms.iter().rev().find(|m| m.role == Role::User);
            let memories = match asked {
                Some(m) => {
                    let answer = Some(params.max_new_tokens);
                    crate::chat::recall_for_prompt(&st.rt, &inference, &m.content, &ms, answer)
                        .await?
                }
                None => Vec::new(),
            };
            Prompt::Chat(crate::chat::with_memories(ms, &memories))
        }
        p => p,
    };
    reply(
        "inference",
        generate_batched(
            &inference,
            Generate {
                prompt,
                params: Some(params),
                stream: pieces,
            },
        )
        .await,
    )
    .map_err(ApiError::from)
}

/// The calls in an answer, and the answer without them.
async fn split_calls(st: &AppState, text: &str) -> (String, Vec<crate::tools::ToolCall>) {
    let Some(router) = st.rt.addrs.tool_router.clone() else {
        return (text.to_string(), Vec::new());
    };
    match router.send(ScanOutput(text.to_string())).await {
        Ok(Ok(events)) => {
            let mut visible = String::new();
            let mut calls = Vec::new();
            for e in events {
                match e {
                    ToolEvent::Text { text } => visible.push_str(&text),
                    ToolEvent::Call { call } => calls.push(call),
                    ToolEvent::Invalid { .. } => {}
                }
            }
            (visible, calls)
        }
        _ => (text.to_string(), Vec::new()),
    }
}

fn check_messages(ms: &[Message]) -> Result<(), ApiError> {
    if ms.is_empty() {
        return Err(ApiError::bad_request("`messages` is empty"));
    }
    let chars: usize = ms.iter().map(|m| m.content.chars().count()).sum();
    if chars > 4 * super::MAX_MESSAGE_CHARS {
        return Err(ApiError::bad_request("the conversation is too long"));
    }
    Ok(())
}

fn model_name(asked: &str) -> String {
    if asked.is_empty() {
        MODEL_NAME.to_string()
    } else {
        asked.to_string()
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Ollama's closing fields: reason and nanosecond timings.
fn ollama_done(g: &Generation, started: Instant, first: Option<Instant>) -> Value {
    let total = started.elapsed().as_nanos() as u64;
    let prompt_ns = first.map_or(total, |f| f.duration_since(started).as_nanos() as u64);
    json!({
        "done": true,
        "done_reason": if g.stop == StopReason::Length { "length" } else { "stop" },
        "total_duration": total,
        "load_duration": 0u64,
        "prompt_eval_count": g.prompt_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": g.ids.len(),
        "eval_duration": total.saturating_sub(prompt_ns),
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// `GET /api/tags`: the one model THAU serves, as Ollama lists models.
pub async fn tags(st: AppState) -> Result<warp::reply::Response, warp::Rejection> {
    let ck = crate::model::checkpoint::newest(&st.rt.home.checkpoints())
        .ok()
        .flatten();
    let (size, modified, params) = match &ck {
        Some(dir) => {
            let meta = std::fs::metadata(dir.join("model.safetensors")).ok();
            let modified = meta
                .as_ref()
                .and_then(|m| m.modified().ok())
                .map(chrono::DateTime::<chrono::Utc>::from)
                .unwrap_or_else(chrono::Utc::now);
            let params = std::fs::read(dir.join(crate::model::checkpoint::CONFIG))
                .ok()
                .and_then(|b| serde_json::from_slice::<crate::model::ModelConfig>(&b).ok())
                .map_or(0, |c| c.param_count());
            (meta.map_or(0, |m| m.len()), modified, params)
        }
        None => (0, chrono::Utc::now(), 0),
    };
    let models = if ck.is_some() {
        vec![json!({
            "name": MODEL_NAME, "model": MODEL_NAME,
            "modified_at": modified.to_rfc3339(),
            "size": size,
            "digest": format!("{:016x}", size ^ params),
            "details": {
                "parent_model": "", "format": "safetensors", "family": "llama",
                "families": ["llama"],
                "parameter_size": format!("{:.1}M", params as f64 / 1e6),
                "quantization_level": "F32"
            }
        })]
    } else {
        Vec::new()
    };
    Ok(warp::reply::json(&json!({ "models": models })).into_response())
}

/// `POST /api/generate`: a completion of `prompt` (NDJSON stream by default).
pub async fn ollama_generate(
    st: AppState,
    b: OllamaGenerate,
) -> Result<warp::reply::Response, warp::Rejection> {
    if b.prompt.chars().count() > 4 * super::MAX_MESSAGE_CHARS {
        return Err(ApiError::bad_request("the prompt is too long").into());
    }
    // With a system prompt the request is a conversation; without, raw text.
    let prompt = match &b.system {
        Some(s) => Prompt::Chat(vec![
            Message::new(Role::System, s.clone()),
            Message::new(Role::User, b.prompt.clone()),
        ]),
        None => Prompt::Text(b.prompt.clone()),
    };
    let model = model_name(&b.model);
    let frame = move |extra: Value, model: &str| {
        merge(
            json!({ "model": model, "created_at": now_rfc3339() }),
            extra,
        )
    };
    let params = b.options.params(st.rt.sampling());
    ollama_respond(
        st,
        prompt,
        params,
        b.memory,
        b.stream.unwrap_or(true),
        move |piece, done| match done {
            None => frame(json!({ "response": piece, "done": false }), &model),
            Some(d) => frame(
                merge(json!({ "response": piece, "context": [] }), d),
                &model,
            ),
        },
    )
    .await
}

/// `POST /api/chat`: the assistant's next message (NDJSON stream by default).
pub async fn ollama_chat(
    st: AppState,
    b: OllamaChat,
) -> Result<warp::reply::Response, warp::Rejection> {
    check_messages(&b.messages)?;
    let model = model_name(&b.model);
    let stream = b.stream.unwrap_or(true);
    let params = b.options.params(st.rt.sampling());
    let started = Instant::now();
    let frame = |message: Value, extra: Value| {
        merge(
            json!({ "model": model, "created_at": now_rfc3339(), "message": message }),
            extra,
        )
    };
    if !stream {
        let g = run(&st, Prompt::Chat(b.messages), params, None, b.memory).await?;
        let (text, calls) = split_calls(&st, &g.text).await;
        return Ok(warp::reply::json(&frame(
            assistant(&text, &calls),
            ollama_done(&g, started, None),
        ))
        .into_response());
    }
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let (ptx, mut prx) = mpsc::unbounded_channel::<String>();
    let st2 = st.clone();
    tokio::spawn(async move {
        let gen = run(&st2, Prompt::Chat(b.messages), params, Some(ptx), b.memory);
        let model2 = model.clone();
        let fwd = async {
            let mut first = None;
            // Calls are sent whole in the last message, not piece by piece.
            let mut parser = crate::tools::ToolCallParser::default();
            while let Some(piece) = prx.recv().await {
                first.get_or_insert_with(Instant::now);
                let piece = parser.visible(&piece);
                if piece.is_empty() {
                    continue;
                }
                let line = json!({ "model": model2, "created_at": now_rfc3339(),
                    "message": {"role": "assistant", "content": piece}, "done": false });
                let _ = tx.send(Bytes::from(format!("{line}\n")));
            }
            first
        };
        let (g, first) = tokio::join!(gen, fwd);
        let last = match g {
            Ok(g) => {
                let (_, calls) = split_calls(&st2, &g.text).await;
                let msg = assistant("", &calls);
                merge(
                    json!({ "model": model2, "created_at": now_rfc3339(), "message": msg }),
                    ollama_done(&g, started, first),
                )
            }
            Err(e) => json!({ "error": e.message }),
        };
        let _ = tx.send(Bytes::from(format!("{last}\n")));
    });
    Ok(streamed(rx, "application/x-ndjson"))
}

/// An Ollama assistant message, with `tool_calls` when the model wrote calls.
fn assistant(text: &str, calls: &[crate::tools::ToolCall]) -> Value {
    let mut m = json!({ "role": "assistant", "content": text.trim() });
    if !calls.is_empty() {
        m["tool_calls"] = calls
            .iter()
            .map(|c| json!({ "function": { "name": c.name, "arguments": c.arguments } }))
            .collect();
    }
    m
}

/// Shared by `/api/generate`: one JSON object, or NDJSON lines then the closing one.
async fn ollama_respond(
    st: AppState,
    prompt: Prompt,
    params: SamplingParams,
    memory: Option<bool>,
    stream: bool,
    frame: impl Fn(&str, Option<Value>) -> Value + Send + Sync + 'static,
) -> Result<warp::reply::Response, warp::Rejection> {
    let started = Instant::now();
    if !stream {
        let g = run(&st, prompt, params, None, memory).await?;
        let done = ollama_done(&g, started, None);
        return Ok(warp::reply::json(&frame(&g.text, Some(done))).into_response());
    }
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let (ptx, mut prx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let gen = run(&st, prompt, params, Some(ptx), memory);
        let fwd = async {
            let mut first = None;
            while let Some(piece) = prx.recv().await {
                first.get_or_insert_with(Instant::now);
                let _ = tx.send(Bytes::from(format!("{}\n", frame(&piece, None))));
            }
            first
        };
        let (g, first) = tokio::join!(gen, fwd);
        let last = match g {
            Ok(g) => frame("", Some(ollama_done(&g, started, first))),
            Err(e) => json!({ "error": e.message }),
        };
        let _ = tx.send(Bytes::from(format!("{last}\n")));
    });
    Ok(streamed(rx, "application/x-ndjson"))
}

/// `POST /v1/chat/completions`: OpenAI's chat completion (SSE when `stream`).
pub async fn openai_chat(
    st: AppState,
    b: OpenAiChat,
) -> Result<warp::reply::Response, warp::Rejection> {
    check_messages(&b.messages)?;
    let d = st.rt.sampling();
    let params = SamplingParams {
        max_new_tokens: b
            .max_completion_tokens
            .or(b.max_tokens)
            .unwrap_or(d.max_new_tokens)
            .clamp(1, 4096),
        temperature: b.temperature.unwrap_or(d.temperature).clamp(0.0, 2.0),
        top_p: b.top_p.unwrap_or(d.top_p).clamp(0.0, 1.0),
        seed: b.seed.unwrap_or(d.seed),
        ..d
    };
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = chrono::Utc::now().timestamp();
    let model = model_name(&b.model);
    let finish = |g: &Generation, calls: usize| {
        if calls > 0 {
            "tool_calls"
        } else if g.stop == StopReason::Length {
            "length"
        } else {
            "stop"
        }
    };
    let call_prefix = format!("call_{}", &id[9..17]);
    let tool_calls = move |calls: &[crate::tools::ToolCall]| -> Value {
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({ "index": i, "id": format!("{call_prefix}_{i}"), "type": "function",
                "function": { "name": c.name, "arguments": c.arguments.to_string() } })
            })
            .collect()
    };
    if !b.stream {
        let g = run(&st, Prompt::Chat(b.messages), params, None, b.memory).await?;
        let (text, calls) = split_calls(&st, &g.text).await;
        let mut message = json!({ "role": "assistant", "content": text.trim() });
        if !calls.is_empty() {
            message["tool_calls"] = tool_calls(&calls);
            message["content"] = Value::Null;
        }
        let body = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish(&g, calls.len()) }],
            "usage": { "prompt_tokens": g.prompt_tokens, "completion_tokens": g.ids.len(),
                       "total_tokens": g.prompt_tokens + g.ids.len() },
        });
        return Ok(warp::reply::json(&body).into_response());
    }
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let (ptx, mut prx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let chunk = |delta: Value, finish: Value| {
            let c = json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }] });
            Bytes::from(format!("data: {c}\n\n"))
        };
        let _ = tx.send(chunk(
            json!({ "role": "assistant", "content": "" }),
            Value::Null,
        ));
        let gen = run(&st, Prompt::Chat(b.messages), params, Some(ptx), b.memory);
        let fwd = async {
            // Calls go out whole as `tool_calls` at the end, not as content.
            let mut parser = crate::tools::ToolCallParser::default();
            while let Some(piece) = prx.recv().await {
                let piece = parser.visible(&piece);
                if !piece.is_empty() {
                    let _ = tx.send(chunk(json!({ "content": piece }), Value::Null));
                }
            }
        };
        let (g, ()) = tokio::join!(gen, fwd);
        match g {
            Ok(g) => {
                let (_, calls) = split_calls(&st, &g.text).await;
                if !calls.is_empty() {
                    let _ = tx.send(chunk(
                        json!({ "tool_calls": tool_calls(&calls) }),
                        Value::Null,
                    ));
                }
                let _ = tx.send(chunk(json!({}), json!(finish(&g, calls.len()))));
            }
            Err(e) => {
                let err = json!({ "error": { "message": e.message, "type": e.code } });
                let _ = tx.send(Bytes::from(format!("data: {err}\n\n")));
            }
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n"));
    });
    Ok(streamed(rx, "text/event-stream"))
}
