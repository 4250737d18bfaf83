//! Endpoints that existing LLM clients speak, so they work with THAU unchanged: the
//! Ollama API under `/api` ([`ollama`]) and the OpenAI API under `/v1` ([`openai`]),
//! streaming included (NDJSON and server-sent events), each answering errors in its own
//! shape ([`super::error::Shape`]). These are stateless, as in those APIs: the client
//! sends the whole conversation. Tool calls the model writes are returned to the client,
//! not run (the client runs its tools); a client's own tools are offered to the model in
//! a system turn and their calls decoded under their schemas' grammar.
//!
//! Models: `thau:latest` is the served model; each age with a checkpoint is listed as
//! `thau:ageN` too ([`listed`]), and a request may name the served one.

pub mod ollama;
pub mod openai;
pub mod wire;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use warp::Reply;

use super::error::ApiError;
use super::AppState;
use crate::actors::inference::{generate_batched, Generate, Prompt, RequestTools, Served};
use crate::actors::reply;
use crate::actors::tool_router::ScanOutput;
use crate::home::Home;
use crate::model::checkpoint;
use crate::model::generate::{Generation, SamplingParams};
use crate::model::tokenizer::{Message, Role, TOOL_CLOSE};
use crate::model::ModelConfig;
use crate::tools::{ParseEvent, ToolCall, ToolCallParser, ToolEvent};
use wire::{ClientTool, StopFilter, ToolChoice, WireError};

/// The model name THAU answers to.
pub const MODEL_NAME: &str = "thau:latest";
/// The tool name of an answer held to a JSON Schema (`format`, `response_format`): the
/// answer is written as the arguments of a call to it, under the schema's grammar.
const JSON_TOOL: &str = "json";
/// Longest answer a request may ask for, in tokens.
pub const MAX_ANSWER_TOKENS: usize = 4096;

/// Chunks sent as they come (a `Send + Sync` stream over a channel).
struct Chunks(mpsc::UnboundedReceiver<Bytes>);

impl futures_util::Stream for Chunks {
    type Item = Result<Bytes, std::convert::Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|o| o.map(Ok))
    }
}

/// A streamed response of `content_type` whose chunks are sent on the returned channel.
/// When the client goes away the channel closes, and the sender's next `send` fails.
fn streamed(content_type: &'static str) -> (mpsc::UnboundedSender<Bytes>, warp::reply::Response) {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let body = warp::reply::with_header(
        warp::reply::stream(Chunks(rx)),
        "content-type",
        content_type,
    )
    .into_response();
    (tx, body)
}

/// A model the routes list: the newest checkpoint (`thau:latest`) and the newest of each
/// age (`thau:ageN`).
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub dir: PathBuf,
    pub config: ModelConfig,
    /// Bytes of its weights file.
    pub size: u64,
    pub modified: chrono::DateTime<chrono::Utc>,
}

impl Listed {
    fn read(name: String, dir: PathBuf) -> Option<Listed> {
        let meta = std::fs::metadata(dir.join("model.safetensors")).ok()?;
        let config = std::fs::read(dir.join(checkpoint::CONFIG))
            .ok()
            .and_then(|b| serde_json::from_slice::<ModelConfig>(&b).ok())?;
        Some(Listed {
            name,
            dir,
            config,
            size: meta.len(),
            modified: meta
                .modified()
                .map(chrono::DateTime::<chrono::Utc>::from)
                .unwrap_or_else(|_| chrono::Utc::now()),
        })
    }

    /// A digest that changes when the weights do (size and time), as Ollama lists one.
    pub fn digest(&self) -> String {
        let t = self.modified.timestamp_nanos_opt().unwrap_or(0) as u64;
        format!("{:016x}{:016x}", self.size, t ^ self.config.param_count())
    }
}

/// The models of a data directory: `thau:latest` first, then each age's newest.
pub fn listed(home: &Home) -> Vec<Listed> {
    let cks = home.checkpoints();
    let mut out = Vec::new();
    if let Some(dir) = checkpoint::newest(&cks).ok().flatten() {
        out.extend(Listed::read(MODEL_NAME.into(), dir));
    }
    for (age, dir) in checkpoint::ages(&cks) {
        if let Some(ck) = checkpoint::latest(&dir).ok().flatten() {
            out.extend(Listed::read(format!("thau:age{age}"), ck));
        }
    }
    out
}

/// The name a client means: `thau` is `thau:latest`, as Ollama completes a bare name.
fn full_name(asked: &str) -> String {
    match asked.trim() {
        "" | "thau" => MODEL_NAME.into(),
        a => a.into(),
    }
}

/// The listed model `asked` names, or a 404 that says which exist.
pub fn find(home: &Home, asked: &str) -> Result<Listed, ApiError> {
    let name = full_name(asked);
    let models = listed(home);
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    let known = names.join(", ");
    models
        .iter()
        .find(|m| m.name == name)
        .cloned()
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "model '{asked}' not found; this server has: {}",
                if known.is_empty() { "none yet" } else { &known }
            ))
        })
}

/// Checks that `asked` names the model this server answers with: `thau:latest` (or no
/// name, or `thau`), or `thau:ageN` of the age it serves. Another age on disk is a 404
/// that says so: the server serves one model.
async fn check_served(st: &AppState, asked: &str) -> Result<(), ApiError> {
    let name = full_name(asked);
    if name == MODEL_NAME {
        return Ok(());
    }
    let inference = st.inference()?;
    let info = reply("inference", inference.send(Served).await)?;
    let served = info.age.map(|a| format!("thau:age{a}"));
    if served.as_deref() == Some(name.as_str()) {
        return Ok(());
    }
    let on_disk = listed(&st.rt.home).iter().any(|m| m.name == name);
    let serves = served.unwrap_or_else(|| MODEL_NAME.into());
    Err(ApiError::not_found(if on_disk {
        format!("model '{asked}' is on disk, but this server serves {serves} (one model at a time)")
    } else {
        format!("model '{asked}' not found; this server serves {serves}")
    }))
}

/// A request's field that THAU cannot use is the client's error.
impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        ApiError::bad_request(e.0)
    }
}

/// Lets a route write `wire::…(…)?` directly.
impl From<WireError> for warp::Rejection {
    fn from(e: WireError) -> Self {
        warp::reject::custom(ApiError::from(e))
    }
}

/// What to generate, as both APIs ask it.
pub(super) struct Ask {
    /// A conversation (`Prompt::Chat`) or raw text.
    pub prompt: Prompt,
    pub params: SamplingParams,
    /// Recall memories into a conversation (default: `[memory] recall`).
    pub memory: Option<bool>,
    /// The client's tools, and what to do with them.
    pub tools: Vec<ClientTool>,
    pub choice: ToolChoice,
    /// The JSON Schema the answer is held to, if any.
    pub json: Option<serde_json::Value>,
    pub stops: Vec<String>,
}

impl Ask {
    pub fn new(prompt: Prompt, params: SamplingParams) -> Self {
        Ask {
            prompt,
            params,
            memory: None,
            tools: Vec::new(),
            choice: ToolChoice::Auto,
            json: None,
            stops: Vec::new(),
        }
    }
}

/// What came of an [`Ask`].
pub(super) struct Answer {
    pub generation: Generation,
    /// The answer's text as the client gets it: without a stop string and what followed
    /// it; a JSON answer's value; a forced call written whole.
    pub text: String,
    /// The calls it holds (the client's tools', or THAU's own).
    pub calls: Vec<ToolCall>,
    /// The text without its calls.
    pub visible: String,
    /// Whether a stop string ended it.
    pub stopped: bool,
    /// When its first piece came (the end of reading the prompt).
    pub first: Option<Instant>,
}

/// Generates `ask`, sending each piece of the client-visible text on `pieces` (when
/// given) as it comes. A conversation gets the memories recalled for its last user
/// message in front, as THAU's own chat does, unless `memory` is false. Generation stops
/// when `pieces` closes (the client went away), at a stop string, or when a forced call or
/// JSON answer is complete.
pub(super) async fn run(
    st: &AppState,
    ask: Ask,
    pieces: Option<mpsc::UnboundedSender<String>>,
) -> Result<Answer, ApiError> {
    let inference = st.inference()?;
    let mut prompt = match ask.prompt {
        Prompt::Chat(ms) if ask.memory.unwrap_or(st.rt.config.memory.recall) => {
            let asked = ms.iter().rev().find(|m| m.role == Role::User);
            let memories = match asked {
                Some(m) => {
                    let answer = Some(ask.params.max_new_tokens);
                    crate::chat::recall_for_prompt(&st.rt, &inference, &m.content, &ms, answer)
                        .await?
                }
                None => Vec::new(),
            };
            Prompt::Chat(crate::chat::with_memories(ms, &memories))
        }
        p => p,
    };
    // The client's tools are offered in a system turn (unless it chose none), and a call
    // it requires is begun for the model, whose arguments the grammar then holds.
    let offered = !ask.tools.is_empty() && ask.choice != ToolChoice::None;
    if let (true, Prompt::Chat(ms)) = (offered, &mut prompt) {
        let at = ms.iter().take_while(|m| m.role == Role::System).count();
        ms.insert(at, wire::tools_turn(&ask.tools));
    }
    let (tools, start): (Option<RequestTools>, Option<String>) = match (&ask.json, &ask.choice) {
        (Some(schema), _) => (
            Some(Arc::new(vec![(JSON_TOOL.to_string(), schema.clone())])),
            Some(format!("<TOOL:{JSON_TOOL}>")),
        ),
        (None, _) if !offered => (None, None),
        (None, choice) => (
            Some(Arc::new(
                ask.tools
                    .iter()
                    .map(|t| (t.name.clone(), t.parameters.clone()))
                    .collect(),
            )),
            match choice {
                ToolChoice::Named(n) => Some(format!("<TOOL:{n}>")),
                ToolChoice::Required => Some("<TOOL:".to_string()),
                _ => None,
            },
        ),
    };
    let client_tools = tools.is_some() && ask.json.is_none();
    let mut stops = ask.stops;
    if start.is_some() {
        // A begun call ends the answer when it closes.
        stops.push(TOOL_CLOSE.to_string());
    }
    if let Some(s) = &start {
        prompt = Prompt::Begun {
            prompt: Box::new(prompt),
            start: s.clone(),
        };
    }
    let (ptx, mut prx) = mpsc::unbounded_channel::<String>();
    let gen = generate_batched(
        &inference,
        Generate {
            prompt,
            params: Some(ask.params),
            stream: Some(ptx),
            tools,
        },
    );
    let mut filter = StopFilter::new(stops);
    let mut first = None;
    let forward = async {
        while let Some(piece) = prx.recv().await {
            first.get_or_insert_with(Instant::now);
            let shown = filter.push(&piece);
            let gone = match (&pieces, shown.is_empty()) {
                (Some(out), false) => out.send(shown).is_err(),
                _ => false,
            };
            // Dropping the receiver stops the generation at its next token.
            if gone || filter.hit() {
                break;
            }
        }
        drop(prx);
        if !filter.hit() {
            let rest = filter.finish();
            if let (Some(out), false) = (&pieces, rest.is_empty()) {
                let _ = out.send(rest);
            }
        }
    };
    let (g, ()) = tokio::join!(gen, forward);
    let generation = reply("inference", g).map_err(ApiError::from)?;
    let stopped = filter.hit();
    let mut text = filter.text().to_string();
    if let Some(s) = &start {
        if ask.json.is_some() {
            if !stopped {
                return Err(ApiError::bad_request(format!(
                    "the JSON answer did not end within {} tokens: ask for more",
                    generation.ids.len()
                )));
            }
        } else {
            text = format!("{s}{text}{}", TOOL_CLOSE);
        }
    }
    let (visible, calls) = if ask.json.is_some() {
        (text.clone(), Vec::new())
    } else if client_tools {
        own_calls(&text)
    } else {
        split_calls(st, &text).await
    };
    Ok(Answer {
        generation,
        text,
        calls,
        visible,
        stopped,
        first,
    })
}

/// The calls to a client's tools in an answer (already held to their grammar), and the
/// answer without them.
fn own_calls(text: &str) -> (String, Vec<ToolCall>) {
    let mut visible = String::new();
    let mut calls = Vec::new();
    for e in ToolCallParser::parse_all(text) {
        match e {
            ParseEvent::Text(t) => visible.push_str(&t),
            ParseEvent::Call(c) => calls.push(ToolCall {
                name: c.name,
                arguments: c.arguments,
            }),
            ParseEvent::Invalid(_) => {}
        }
    }
    (visible, calls)
}

/// The calls to THAU's own tools in an answer, and the answer without them.
async fn split_calls(st: &AppState, text: &str) -> (String, Vec<ToolCall>) {
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

/// A conversation THAU can read: not too long. (Empty is each route's own choice.)
fn check_length(ms: &[Message]) -> Result<(), ApiError> {
    let chars: usize = ms.iter().map(|m| m.content.chars().count()).sum();
    if chars > 4 * super::MAX_MESSAGE_CHARS {
        return Err(ApiError::bad_request("the conversation is too long"));
    }
    Ok(())
}

/// Warns once per request that parts of it were not read (pictures: THAU reads text).
fn note_unread(route: &str, unread: usize) {
    if unread > 0 {
        tracing::warn!(
            route,
            parts = unread,
            "left out parts THAU cannot read (pictures, audio)"
        );
    }
}

/// A token budget a client asked for, within THAU's limit; its absence keeps `default`.
fn answer_tokens(asked: Option<i64>, default: usize) -> usize {
    match asked {
        Some(n) if n > 0 => (n as usize).min(MAX_ANSWER_TOKENS),
        _ => default,
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
