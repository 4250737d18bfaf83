//! The OpenAI API: `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/embeddings` and
//! `POST /v1/chat/completions` (SSE when `stream`; `tools` and `tool_choice` in,
//! `tool_calls` out; `response_format` JSON), with OpenAI's field names. Checked with the
//! official `openai` Python client (`tests/clients/check_clients.py`).

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use warp::Reply;

use super::ollama::{embed_texts, MAX_EMBED_INPUTS};
use super::wire::{self, ToolChoice, WireMessage};
use super::{check_length, check_served, find, listed, note_unread, run, streamed, Answer, Ask};
use crate::actors::inference::Prompt;
use crate::model::generate::StopReason;
use crate::server::error::ApiError;
use crate::server::AppState;
use crate::tools::ToolCall;

type Resp = Result<warp::reply::Response, warp::Rejection>;

/// Body of `POST /v1/chat/completions`. Fields THAU has no use for (penalties, `user`,
/// `logprobs`) are accepted and left.
#[derive(Debug, Deserialize)]
pub struct OpenAiChat {
    #[serde(default)]
    model: String,
    messages: Vec<WireMessage>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<u64>,
    n: Option<u32>,
    stop: Option<Value>,
    response_format: Option<Value>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    /// THAU's extension: recall memories into the prompt (default: `[memory] recall`).
    memory: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Body of `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
pub struct OpenAiEmbed {
    #[serde(default)]
    model: String,
    input: Value,
    /// `float` (the default) or `base64` (little-endian f32, what the Python client asks).
    encoding_format: Option<String>,
}

fn model_object(name: &str, created: i64) -> Value {
    json!({ "id": name, "object": "model", "created": created, "owned_by": "thau" })
}

/// `GET /v1/models`: the served model and each age's newest checkpoint.
pub async fn models(st: AppState) -> Resp {
    let data: Vec<Value> = listed(&st.rt.home)
        .iter()
        .map(|m| model_object(&m.name, m.modified.timestamp()))
        .collect();
    Ok(warp::reply::json(&json!({ "object": "list", "data": data })).into_response())
}

/// `GET /v1/models/{id}`.
pub async fn model(id: String, st: AppState) -> Resp {
    let id = percent_encoding::percent_decode_str(&id)
        .decode_utf8_lossy()
        .to_string();
    let m = find(&st.rt.home, &id)?;
    Ok(warp::reply::json(&model_object(&m.name, m.modified.timestamp())).into_response())
}

/// `POST /v1/embeddings`: vectors from the embedder of THAU's long-term memory.
pub async fn embeddings(st: AppState, b: OpenAiEmbed) -> Resp {
    find(&st.rt.home, &b.model)?;
    let texts: Vec<String> = match &b.input {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => {
            return Err(ApiError::bad_request(
                "`input` must be a text or a list of texts (token arrays are not taken: THAU's vocabulary is its own)",
            )
            .into())
        }
    };
    if texts.is_empty() || texts.len() > MAX_EMBED_INPUTS {
        return Err(ApiError::bad_request(format!(
            "`input` holds {} texts: 1 to {MAX_EMBED_INPUTS}",
            texts.len()
        ))
        .into());
    }
    let base64 = match b.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(f) => {
            return Err(ApiError::bad_request(format!(
                "encoding_format `{f}` is not float or base64"
            ))
            .into())
        }
    };
    let (vectors, tokens) = embed_texts(&st, texts).await?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    let body = json!({
        "object": "list", "data": data, "model": b.model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    });
    Ok(warp::reply::json(&body).into_response())
}

/// Why the answer ended, in OpenAI's words.
fn finish_reason(a: &Answer) -> &'static str {
    if !a.calls.is_empty() {
        "tool_calls"
    } else if a.generation.stop == StopReason::Length && !a.stopped {
        "length"
    } else {
        "stop"
    }
}

fn usage(a: &Answer) -> Value {
    let g = &a.generation;
    json!({ "prompt_tokens": g.prompt_tokens, "completion_tokens": g.ids.len(),
            "total_tokens": g.prompt_tokens + g.ids.len() })
}

/// The calls as OpenAI's `tool_calls` (arguments as JSON text).
fn tool_calls(prefix: &str, calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({ "index": i, "id": format!("{prefix}_{i}"), "type": "function",
                "function": { "name": c.name, "arguments": c.arguments.to_string() } })
        })
        .collect()
}

/// The request as an [`Ask`].
fn ask(st: &AppState, b: &OpenAiChat) -> Result<Ask, ApiError> {
    if let Some(n) = b.n.filter(|&n| n != 1) {
        return Err(ApiError::bad_request(format!(
            "`n` = {n}: THAU gives one choice per request (n = 1)"
        )));
    }
    let conv = wire::conversation(&b.messages)?;
    if conv.messages.is_empty() {
        return Err(ApiError::bad_request("`messages` is empty"));
    }
    check_length(&conv.messages)?;
    note_unread("/v1/chat/completions", conv.unread_parts);
    let d = st.rt.sampling();
    let params = crate::model::generate::SamplingParams {
        max_new_tokens: super::answer_tokens(
            b.max_completion_tokens.or(b.max_tokens),
            d.max_new_tokens,
        ),
        temperature: b.temperature.unwrap_or(d.temperature).clamp(0.0, 2.0),
        top_p: b.top_p.unwrap_or(d.top_p).clamp(0.0, 1.0),
        seed: b.seed.unwrap_or(d.seed),
        ..d
    };
    let mut ask = Ask::new(Prompt::Chat(conv.messages), params);
    ask.memory = b.memory;
    ask.stops = wire::stops(b.stop.as_ref())?;
    ask.json = wire::openai_format(b.response_format.as_ref())?;
    if let Some(t) = &b.tools {
        ask.tools = wire::tools(t)?;
    }
    ask.choice = wire::tool_choice(b.tool_choice.as_ref(), &ask.tools)?;
    Ok(ask)
}

/// `POST /v1/chat/completions`: OpenAI's chat completion (SSE when `stream`).
pub async fn chat(st: AppState, b: OpenAiChat) -> Resp {
    check_served(&st, &b.model).await?;
    let ask = ask(&st, &b)?;
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = chrono::Utc::now().timestamp();
    let model = if b.model.is_empty() {
        super::MODEL_NAME.to_string()
    } else {
        b.model.clone()
    };
    let call_prefix = format!("call_{}", &id[9..17]);
    if !b.stream {
        let a = run(&st, ask, None).await?;
        let mut message =
            json!({ "role": "assistant", "content": a.visible.trim(), "refusal": null });
        if !a.calls.is_empty() {
            message["tool_calls"] = tool_calls(&call_prefix, &a.calls);
            message["content"] = Value::Null;
        }
        let body = json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(&a) }],
            "usage": usage(&a),
        });
        return Ok(warp::reply::json(&body).into_response());
    }
    let include_usage = b.stream_options.as_ref().is_some_and(|o| o.include_usage);
    // A call the client required is sent whole at the end, like any call.
    let forced =
        matches!(ask.choice, ToolChoice::Named(_) | ToolChoice::Required) && ask.json.is_none();
    let (tx, body) = streamed("text/event-stream");
    let (ptx, mut prx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let chunk = |delta: Value, finish: Value| {
            let mut c = json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }] });
            if include_usage {
                c["usage"] = Value::Null;
            }
            Bytes::from(format!("data: {c}\n\n"))
        };
        let _ = tx.send(chunk(
            json!({ "role": "assistant", "content": "" }),
            Value::Null,
        ));
        let gen = run(&st, ask, Some(ptx));
        let fwd = async {
            // Calls go out whole as `tool_calls` at the end, not as content.
            let mut parser = crate::tools::ToolCallParser::default();
            while let Some(piece) = prx.recv().await {
                let piece = parser.visible(&piece);
                if forced || piece.is_empty() {
                    continue;
                }
                if tx
                    .send(chunk(json!({ "content": piece }), Value::Null))
                    .is_err()
                {
                    break; // The client went away.
                }
            }
            // Closing the channel stops the generation at its next token.
            drop(prx);
        };
        let (a, ()) = tokio::join!(gen, fwd);
        match a {
            Ok(a) => {
                if !a.calls.is_empty() {
                    let _ = tx.send(chunk(
                        json!({ "tool_calls": tool_calls(&call_prefix, &a.calls) }),
                        Value::Null,
                    ));
                }
                let _ = tx.send(chunk(json!({}), json!(finish_reason(&a))));
                if include_usage {
                    let c = json!({ "id": id, "object": "chat.completion.chunk", "created": created,
                        "model": model, "choices": [], "usage": usage(&a) });
                    let _ = tx.send(Bytes::from(format!("data: {c}\n\n")));
                }
            }
            Err(e) => {
                let err = json!({ "error": { "message": e.message, "type": "server_error", "code": e.code } });
                let _ = tx.send(Bytes::from(format!("data: {err}\n\n")));
            }
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n"));
    });
    Ok(body)
}
