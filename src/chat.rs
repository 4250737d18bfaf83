//! One chat turn through the actors ([`chat_turn`]), shared by the HTTP routes, the
//! WebSocket, `thau chat` and `thau replay`: the user's words go into the conversation's
//! short-term window, Inference answers the window, the ToolRouter runs the calls in the
//! answer (and, for image requests in the user's own words, the intent fallback's call), and
//! the visible answer goes back into the window. Main types: [`ChatRequest`],
//! [`ChatReply`], [`ChatError`].

use serde::{Deserialize, Serialize};

use crate::actors::inference::{generate_batched, Generate, Prompt};
use crate::actors::short_term_memory::{AddTurn, GetWindow};
use crate::actors::tool_router::{DetectIntent, HandleOutput, RunTool, ToolResult};
use crate::actors::{reply, AskError};
use crate::model::generate::SamplingParams;
use crate::model::tokenizer::{Message, Role};
use crate::runtime::Runtime;
use crate::tools::ToolCall;

/// Longest chat message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 8_000;

/// Why a chat turn failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The request itself is invalid (empty, too long, a bad session id).
    #[error("{0}")]
    BadRequest(String),
    /// A needed actor is disabled.
    #[error("{0}")]
    Unavailable(String),
    /// An actor answered with an error, or its mailbox is closed or full.
    #[error(transparent)]
    Actor(#[from] AskError),
}

/// A chat request (`POST /chat/message`, `POST /vision/chat`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The conversation; a new one is started when absent.
    pub session: Option<String>,
    pub message: String,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f64>,
    pub seed: Option<u64>,
}

/// The answer to a chat turn.
#[derive(Debug, Clone, Serialize)]
pub struct ChatReply {
    pub session: String,
    /// The answer without its tool calls.
    pub reply: String,
    pub tool_calls: Vec<ToolCall>,
    pub tool_results: Vec<ToolResult>,
    /// `/vision/image/...` URLs of pictures made in this turn.
    pub images: Vec<String>,
    pub tokens: usize,
    /// Whether decoding was stopped by the client (`response.cancel`).
    pub cancelled: bool,
}

/// Runs one turn. With `detect_tools`, an image request in the user's words runs the
/// intent fallback's call even when the model did not write one. With `stream`, every
/// piece of the answer is sent there as it is decoded (closing it stops the decoding).
pub async fn chat_turn(
    rt: &Runtime,
    req: ChatRequest,
    detect_tools: bool,
    stream: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Result<ChatReply, ChatError> {
    let text = req.message.trim().to_string();
    if text.is_empty() {
        return Err(ChatError::BadRequest("the message is empty".into()));
    }
    if text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ChatError::BadRequest(format!(
            "the message exceeds {MAX_MESSAGE_CHARS} characters"
        )));
    }
    let session = match req.session.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() && s.len() <= 128 => s.to_string(),
        Some(_) => {
            return Err(ChatError::BadRequest(
                "session ids are 1..=128 characters".into(),
            ))
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let addrs = &rt.addrs;
    let (Some(inference), Some(router)) = (addrs.inference.clone(), addrs.tool_router.clone())
    else {
        return Err(ChatError::Unavailable(
            "chat needs the Inference and ToolRouter actors".into(),
        ));
    };
    let short = addrs.short_term_memory.clone();
    let messages = match &short {
        Some(s) => {
            reply(
                "short_term_memory",
                s.send(AddTurn {
                    conversation: session.clone(),
                    role: Role::User,
                    text: text.clone(),
                })
                .await,
            )?;
            reply(
                "short_term_memory",
                s.send(GetWindow(session.clone())).await,
            )?
            .messages()
        }
        None => vec![Message::new(Role::User, text.clone())],
    };
    let params = if req.max_tokens.is_some() || req.temperature.is_some() || req.seed.is_some() {
        let d = SamplingParams::default();
        Some(SamplingParams {
            max_new_tokens: req.max_tokens.unwrap_or(d.max_new_tokens).clamp(1, 2048),
            temperature: req.temperature.unwrap_or(d.temperature).clamp(0.0, 2.0),
            seed: req.seed.unwrap_or(d.seed),
            ..d
        })
    } else {
        None
    };
    // Through the batching queue: concurrent sessions decode together.
    let generation = reply(
        "inference",
        generate_batched(
            &inference,
            Generate {
                prompt: Prompt::Chat(messages),
                params,
                stream,
            },
        )
        .await,
    )?;
    let mut routed = reply(
        "tool_router",
        router
            .send(HandleOutput {
                session: session.clone(),
                output: generation.text.clone(),
            })
            .await,
    )?;
    if detect_tools && routed.calls.is_empty() {
        if let Some(call) = reply("tool_router", router.send(DetectIntent(text.clone())).await)? {
            let result = reply(
                "tool_router",
                router
                    .send(RunTool {
                        session: session.clone(),
                        call: call.clone(),
                    })
                    .await,
            )?;
            routed.calls.push(call);
            routed.results.push(result);
        }
    }
    if let Some(s) = &short {
        reply(
            "short_term_memory",
            s.send(AddTurn {
                conversation: session.clone(),
                role: Role::Assistant,
                text: routed.text.clone(),
            })
            .await,
        )?;
    }
    let images = routed
        .results
        .iter()
        .filter(|r| r.ok)
        .filter_map(|r| r.content["file"].as_str())
        .map(|f| format!("/vision/image/{f}"))
        .collect();
    Ok(ChatReply {
        session,
        reply: routed.text,
        tool_calls: routed.calls,
        tool_results: routed.results,
        images,
        tokens: generation.ids.len(),
        cancelled: generation.stop == crate::model::generate::StopReason::Cancelled,
    })
}
