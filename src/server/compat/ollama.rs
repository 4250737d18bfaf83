//! The Ollama API: `GET /api/version`, `GET /api/tags`, `POST /api/show`, `GET /api/ps`,
//! `POST /api/generate`, `POST /api/chat`, `POST /api/embed` and `POST /api/embeddings`,
//! with Ollama's field names, nanosecond timings and NDJSON streaming. Checked with the
//! official `ollama` Python client (`tests/clients/check_clients.py`).

use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use warp::Reply;

use super::wire::{self, ToolChoice, WireMessage};
use super::{
    answer_tokens, check_length, check_served, find, listed, note_unread, now_rfc3339, run,
    streamed, Answer, Ask, Listed, MODEL_NAME,
};
use crate::actors::inference::{CountTokens, Prompt, Served};
use crate::actors::long_term_memory::Embed;
use crate::actors::reply;
use crate::model::generate::{SamplingParams, StopReason};
use crate::model::tokenizer::{Message, Role};
use crate::server::error::ApiError;
use crate::server::AppState;
use crate::tools::ToolCall;

type Resp = Result<warp::reply::Response, warp::Rejection>;

/// The version of the Ollama API whose routes THAU implements (clients such as Open
/// WebUI ask `/api/version` first and compare).
pub const OLLAMA_API_VERSION: &str = "0.6.3";
/// Most texts one embedding request may hold.
pub const MAX_EMBED_INPUTS: usize = 256;

/// Ollama's sampling options (the ones THAU has; `num_ctx` is accepted and the model's
/// own context kept, as the served model's context is fixed).
#[derive(Debug, Default, Deserialize)]
pub struct OllamaOptions {
    temperature: Option<f64>,
    num_predict: Option<i64>,
    top_k: Option<usize>,
    top_p: Option<f64>,
    seed: Option<u64>,
    repeat_penalty: Option<f64>,
    stop: Option<Value>,
    #[allow(dead_code)] // Accepted: the served model's context is fixed.
    num_ctx: Option<i64>,
}

impl OllamaOptions {
    /// These options laid over the configured sampling settings `d`.
    fn params(&self, d: SamplingParams) -> SamplingParams {
        SamplingParams {
            max_new_tokens: answer_tokens(self.num_predict, d.max_new_tokens),
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
    #[serde(default)]
    prompt: String,
    system: Option<String>,
    /// Without the chat template: the prompt is continued as it is.
    #[serde(default)]
    raw: bool,
    format: Option<Value>,
    stream: Option<bool>,
    #[serde(default)]
    options: OllamaOptions,
    /// Pictures: THAU reads text, so they are left out (and logged).
    #[serde(default)]
    images: Vec<Value>,
    /// THAU's extension: recall memories into a chat prompt (default: `[memory] recall`).
    memory: Option<bool>,
}

/// Body of `POST /api/chat`.
#[derive(Debug, Deserialize)]
pub struct OllamaChat {
    #[serde(default)]
    model: String,
    #[serde(default)]
    messages: Vec<WireMessage>,
    stream: Option<bool>,
    format: Option<Value>,
    #[serde(default)]
    options: OllamaOptions,
    /// THAU's extension: recall memories into the prompt (default: `[memory] recall`).
    memory: Option<bool>,
    /// The client's tools, offered to the model; their calls come back as `tool_calls`.
    tools: Option<Value>,
}

/// Body of `POST /api/show`.
#[derive(Debug, Deserialize)]
pub struct OllamaShow {
    #[serde(default)]
    model: String,
    /// Older clients' name for `model`.
    #[serde(default)]
    name: String,
}

/// Body of `POST /api/embed` (`input`: a text or a list) and `POST /api/embeddings`
/// (`prompt`: one text).
#[derive(Debug, Deserialize)]
pub struct OllamaEmbed {
    #[serde(default)]
    model: String,
    input: Option<Value>,
    prompt: Option<String>,
}

/// `GET /api/version`.
pub async fn version() -> Resp {
    Ok(warp::reply::json(&json!({ "version": OLLAMA_API_VERSION })).into_response())
}

/// Ollama's description of a model's shape.
fn details(m: &Listed) -> Value {
    json!({
        "parent_model": "", "format": "safetensors", "family": "llama",
        "families": ["llama"],
        "parameter_size": format!("{:.1}M", m.config.param_count() as f64 / 1e6),
        "quantization_level": "F32",
    })
}

/// `GET /api/tags`: the served model (`thau:latest`) and each age's newest checkpoint.
pub async fn tags(st: AppState) -> Resp {
    let models: Vec<Value> = listed(&st.rt.home)
        .iter()
        .map(|m| {
            json!({
                "name": m.name, "model": m.name,
                "modified_at": m.modified.to_rfc3339(),
                "size": m.size, "digest": m.digest(), "details": details(m),
            })
        })
        .collect();
    Ok(warp::reply::json(&json!({ "models": models })).into_response())
}

/// `POST /api/show`: a model's details, template, parameters and shape (`model_info`,
/// with GGUF's key names as Ollama gives them).
pub async fn show(st: AppState, b: OllamaShow) -> Resp {
    let asked = if b.model.is_empty() {
        &b.name
    } else {
        &b.model
    };
    let m = find(&st.rt.home, asked)?;
    let c = &m.config;
    let d = st.rt.sampling();
    let parameters = format!(
        "stop \"<|eot|>\"\nstop \"<|user|>\"\ntemperature {}\ntop_k {}\ntop_p {}\nrepeat_penalty {}\nnum_predict {}",
        d.temperature, d.top_k, d.top_p, d.repetition_penalty, d.max_new_tokens
    );
    let body = json!({
        "license": "",
        "modelfile": crate::export::modelfile(&format!("{}.gguf", m.name.replace(':', "-")))
            .unwrap_or_default(),
        "parameters": parameters,
        "template": crate::export::OLLAMA_TEMPLATE,
        "system": crate::export::SYSTEM_PROMPT,
        "details": details(&m),
        "model_info": {
            "general.architecture": "llama",
            "general.parameter_count": c.param_count(),
            "llama.context_length": c.max_seq_len,
            "llama.embedding_length": c.d_model,
            "llama.block_count": c.n_layers,
            "llama.feed_forward_length": c.d_ff,
            "llama.attention.head_count": c.n_heads,
            "llama.attention.head_count_kv": c.n_heads,
            "llama.attention.key_length": c.head_dim,
            "llama.attention.value_length": c.head_dim,
            "llama.attention.layer_norm_rms_epsilon": c.rms_eps,
            "llama.rope.freq_base": c.rope_theta,
            "llama.vocab_size": c.vocab_size,
            "thau.age": c.age,
            "thau.copy_head": c.copy_head,
        },
        "capabilities": ["completion", "tools", "embedding"],
        "modified_at": m.modified.to_rfc3339(),
    });
    Ok(warp::reply::json(&body).into_response())
}

/// `GET /api/ps`: the model held in memory (THAU keeps its one model loaded).
pub async fn ps(st: AppState) -> Resp {
    let mut models = Vec::new();
    if let Some(inference) = st.rt.addrs.inference.clone() {
        if let Ok(Ok(info)) = inference.send(Served).await {
            let name = info
                .age
                .map_or(MODEL_NAME.to_string(), |a| format!("thau:age{a}"));
            if let Some(m) = listed(&st.rt.home).into_iter().find(|m| m.name == name) {
                models.push(json!({
                    "name": MODEL_NAME, "model": MODEL_NAME, "size": m.size,
                    "digest": m.digest(), "details": details(&m),
                    // Held until the server stops.
                    "expires_at": "2099-01-01T00:00:00Z", "size_vram": 0,
                    "context_length": m.config.max_seq_len,
                }));
            }
        }
    }
    Ok(warp::reply::json(&json!({ "models": models })).into_response())
}

/// `POST /api/embed` and `POST /api/embeddings`: vectors from the embedder of THAU's
/// long-term memory (the space its memories are recalled in).
pub async fn embed(st: AppState, b: OllamaEmbed, legacy: bool) -> Resp {
    find(&st.rt.home, &b.model)?;
    let texts: Vec<String> = match (&b.input, &b.prompt) {
        (Some(Value::String(s)), _) => vec![s.clone()],
        (Some(Value::Array(a)), _) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::bad_request("`input` must be a text or a list of texts"))?,
        (None, Some(p)) => vec![p.clone()],
        _ => return Err(ApiError::bad_request("give `input` (or `prompt`)").into()),
    };
    if texts.len() > MAX_EMBED_INPUTS {
        return Err(ApiError::bad_request(format!(
            "{} texts in one request; at most {MAX_EMBED_INPUTS}",
            texts.len()
        ))
        .into());
    }
    let started = Instant::now();
    let (vectors, tokens) = embed_texts(&st, texts).await?;
    let body = if legacy {
        json!({ "embedding": vectors.into_iter().next().unwrap_or_default() })
    } else {
        json!({
            "model": b.model, "embeddings": vectors,
            "total_duration": started.elapsed().as_nanos() as u64,
            "load_duration": 0u64, "prompt_eval_count": tokens,
        })
    };
    Ok(warp::reply::json(&body).into_response())
}

/// The memory embedder's vectors of `texts`, and how many tokens they take in the served
/// model (the usage both APIs report).
pub(super) async fn embed_texts(
    st: &AppState,
    texts: Vec<String>,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let memory =
        st.rt.addrs.long_term_memory.clone().ok_or_else(|| {
            ApiError::unavailable("long-term memory (the embedder) is not running")
        })?;
    let tokens = match st.rt.addrs.inference.clone() {
        Some(i) => match i.send(CountTokens(texts.clone())).await {
            Ok(Ok(c)) => c.counts.iter().sum(),
            _ => 0,
        },
        None => 0,
    };
    let e = reply("long-term memory", memory.send(Embed(texts)).await)?;
    Ok((e.vectors, tokens))
}

/// Ollama's closing fields: reason and nanosecond timings.
fn done_fields(a: &Answer, started: Instant) -> Value {
    let g = &a.generation;
    let total = started.elapsed().as_nanos() as u64;
    let prompt_ns = a
        .first
        .map_or(total, |f| f.duration_since(started).as_nanos() as u64);
    let length = g.stop == StopReason::Length && !a.stopped;
    json!({
        "done": true,
        "done_reason": if length { "length" } else { "stop" },
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

/// One NDJSON line. The line separators U+2028/U+2029 and U+0085 are escaped: serde
/// writes them raw inside strings, and clients that split the stream with Python's
/// `splitlines()` cut a line there.
fn line(v: &Value) -> Bytes {
    let s = v
        .to_string()
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
        .replace('\u{0085}', "\\u0085");
    Bytes::from(format!("{s}\n"))
}

/// What a model answers the moment it is loaded (an empty prompt or conversation loads
/// it, as in Ollama).
fn loaded(model: &str, chat: bool) -> warp::reply::Response {
    let model = if model.is_empty() { MODEL_NAME } else { model };
    let mut v =
        json!({ "model": model, "created_at": now_rfc3339(), "done": true, "done_reason": "load" });
    if chat {
        v["message"] = json!({ "role": "assistant", "content": "" });
    } else {
        v["response"] = json!("");
    }
    warp::reply::json(&v).into_response()
}

/// `POST /api/generate`: a completion of `prompt` (NDJSON stream by default). Without
/// `raw` the prompt is the user's turn of the chat template (with `system` before it).
pub async fn generate(st: AppState, b: OllamaGenerate) -> Resp {
    check_served(&st, &b.model).await?;
    if b.prompt.chars().count() > 4 * super::super::MAX_MESSAGE_CHARS {
        return Err(ApiError::bad_request("the prompt is too long").into());
    }
    note_unread("/api/generate", b.images.len());
    if b.prompt.is_empty() {
        return Ok(loaded(&b.model, false));
    }
    let prompt = if b.raw {
        Prompt::Text(b.prompt.clone())
    } else {
        let mut ms: Vec<Message> = b
            .system
            .iter()
            .map(|s| Message::new(Role::System, s.clone()))
            .collect();
        ms.push(Message::new(Role::User, b.prompt.clone()));
        Prompt::Chat(ms)
    };
    let mut ask = Ask::new(prompt, b.options.params(st.rt.sampling()));
    ask.memory = b.memory;
    ask.stops = wire::stops(b.options.stop.as_ref())?;
    ask.json = wire::ollama_format(b.format.as_ref())?;
    let model = b.model.clone();
    let frame = move |extra: Value| {
        merge(
            json!({ "model": model, "created_at": now_rfc3339() }),
            extra,
        )
    };
    let started = Instant::now();
    if !b.stream.unwrap_or(true) {
        let a = run(&st, ask, None).await?;
        let v = frame(merge(
            json!({ "response": a.text, "context": [] }),
            done_fields(&a, started),
        ));
        return Ok(warp::reply::json(&v).into_response());
    }
    let last = frame.clone();
    Ok(ndjson(
        st,
        ask,
        move |piece| Some(frame(json!({ "response": piece, "done": false }))),
        move |a| {
            last(merge(
                json!({ "response": "", "context": [] }),
                done_fields(a, started),
            ))
        },
    ))
}

/// An Ollama assistant message, with `tool_calls` when the model wrote calls.
fn assistant(text: &str, calls: &[ToolCall]) -> Value {
    let mut m = json!({ "role": "assistant", "content": text.trim() });
    if !calls.is_empty() {
        m["tool_calls"] = calls
            .iter()
            .map(|c| json!({ "function": { "name": c.name, "arguments": c.arguments } }))
            .collect();
    }
    m
}

/// `POST /api/chat`: the assistant's next message (NDJSON stream by default). An empty
/// conversation loads the model, as in Ollama.
pub async fn chat(st: AppState, b: OllamaChat) -> Resp {
    check_served(&st, &b.model).await?;
    let conv = wire::conversation(&b.messages)?;
    check_length(&conv.messages)?;
    note_unread("/api/chat", conv.unread_parts);
    if conv.messages.is_empty() {
        return Ok(loaded(&b.model, true));
    }
    let mut ask = Ask::new(
        Prompt::Chat(conv.messages),
        b.options.params(st.rt.sampling()),
    );
    ask.memory = b.memory;
    ask.stops = wire::stops(b.options.stop.as_ref())?;
    ask.json = wire::ollama_format(b.format.as_ref())?;
    if let Some(t) = &b.tools {
        ask.tools = wire::tools(t)?;
        ask.choice = ToolChoice::Auto;
    }
    let model = b.model.clone();
    let frame = move |message: Value, extra: Value| {
        merge(
            json!({ "model": model, "created_at": now_rfc3339(), "message": message }),
            extra,
        )
    };
    let started = Instant::now();
    if !b.stream.unwrap_or(true) {
        let a = run(&st, ask, None).await?;
        let v = frame(assistant(&a.visible, &a.calls), done_fields(&a, started));
        return Ok(warp::reply::json(&v).into_response());
    }
    // Calls are sent whole in the last message, not piece by piece.
    let mut parser = crate::tools::ToolCallParser::default();
    let last = frame.clone();
    Ok(ndjson(
        st,
        ask,
        move |piece| {
            let piece = parser.visible(piece);
            (!piece.is_empty()).then(|| {
                frame(
                    json!({"role": "assistant", "content": piece}),
                    json!({ "done": false }),
                )
            })
        },
        move |a| last(assistant("", &a.calls), done_fields(a, started)),
    ))
}

/// Streams `ask` as NDJSON: a line for each piece `piece` frames (`None`: nothing to show
/// yet), then the closing line `last` makes of the answer, or an error line. A client that
/// goes away stops the generation at its next token.
fn ndjson(
    st: AppState,
    ask: Ask,
    mut piece: impl FnMut(&str) -> Option<Value> + Send + 'static,
    last: impl FnOnce(&Answer) -> Value + Send + 'static,
) -> warp::reply::Response {
    let (tx, body) = streamed("application/x-ndjson");
    let (ptx, mut prx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let gen = run(&st, ask, Some(ptx));
        let fwd = async {
            while let Some(p) = prx.recv().await {
                let Some(v) = piece(&p) else { continue };
                if tx.send(line(&v)).is_err() {
                    break; // The client went away.
                }
            }
            // Closing the channel stops the generation at its next token.
            drop(prx);
        };
        let (a, ()) = tokio::join!(gen, fwd);
        let end = match a {
            Ok(a) => last(&a),
            Err(e) => json!({ "error": e.message }),
        };
        let _ = tx.send(line(&end));
    });
    body
}
