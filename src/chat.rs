//! One chat turn through the actors ([`chat_turn`]), shared by the HTTP routes, the
//! WebSocket, `thau chat`, `thau generate` and `thau replay`: the user's words go into the
//! conversation's short-term window, the memories that best match them are recalled into
//! the prompt ([`recall_for_prompt`], [`with_memories`]), Inference answers, the ToolRouter
//! runs the calls in the answer (and, for image requests in the user's own words, the
//! intent fallback's call), and the visible answer goes back into the window. A message
//! that teaches ("Remember that…") is stored in long-term memory instead of answered by
//! the model ([`crate::learn::teaching`]). Main types:
//! [`ChatRequest`], [`ChatReply`], [`ChatError`].

use serde::{Deserialize, Serialize};

use crate::actors::episodic_memory::SearchEpisodes;
use crate::actors::inference::{generate_batched, CountTokens, Generate, Inference, Prompt};
use crate::actors::long_term_memory::RecallLong;
use crate::actors::short_term_memory::{AddTurn, GetWindow};
use crate::actors::tool_router::{DetectIntent, HandleOutput, RunTool, ToolResult};
use crate::actors::{reply, ActorError, AskError};
use crate::memory::recall::{fit_budget, RecallHit};
use crate::model::generate::{answer_room, SamplingParams};
use crate::model::tokenizer::{memory_block, Message, Role};
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

impl From<ChatError> for crate::error::ThauError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::BadRequest(m) => crate::error::ThauError::Invalid(m),
            ChatError::Unavailable(m) => crate::error::ThauError::Runtime(m),
            ChatError::Actor(e) => e.into(),
        }
    }
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
    /// Recall memories into the prompt (default: the `[memory] recall` setting).
    #[serde(default)]
    pub memory: Option<bool>,
    /// The conversation's resume token, when `session` names one the server opened
    /// (checked by the server; the in-process callers have no owners to check).
    #[serde(default)]
    pub token: Option<String>,
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
    /// Tokens of the prompt the model answered (the conversation and its memories).
    pub prompt_tokens: usize,
    /// Whether decoding was stopped by the client (`response.cancel`).
    pub cancelled: bool,
    /// The memories the prompt held, best first (ids, scores, sources, texts).
    pub memories: Vec<RecallHit>,
    /// The resume token of a conversation this turn opened (server replies only): the
    /// only way to continue it, read its window or forget it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Ids of the long-term memories this turn stored, when the user taught a fact
    /// ("Remember that…"; see [`crate::learn::teaching`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub taught: Vec<String>,
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
    if let Some(lesson) = crate::learn::teaching::lesson(&text) {
        return remember_lesson(rt, &session, lesson, stream).await;
    }
    let params = if req.max_tokens.is_some() || req.temperature.is_some() || req.seed.is_some() {
        let d = rt.sampling();
        Some(SamplingParams {
            max_new_tokens: req.max_tokens.unwrap_or(d.max_new_tokens).clamp(1, 2048),
            temperature: req.temperature.unwrap_or(d.temperature).clamp(0.0, 2.0),
            seed: req.seed.unwrap_or(d.seed),
            ..d
        })
    } else {
        None
    };
    let memories = if req.memory.unwrap_or(rt.config.memory.recall) {
        let answer = params.as_ref().map(|p| p.max_new_tokens);
        recall_for_prompt(rt, &inference, &text, &messages, answer).await?
    } else {
        Vec::new()
    };
    let messages = with_memories(messages, &memories);
    // Through the batching queue: concurrent sessions decode together.
    let generation = reply(
        "inference",
        generate_batched(
            &inference,
            Generate {
                prompt: Prompt::Chat(messages),
                params,
                stream,
                tools: None,
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
        prompt_tokens: generation.prompt_tokens,
        cancelled: generation.stop == crate::model::generate::StopReason::Cancelled,
        memories,
        token: None,
        taught: Vec::new(),
    })
}

/// A turn that teaches ("Remember that…", "Recuerda que…"): the fact goes into long-term
/// memory at once, from `taught:<conversation>` (so it can be listed and forgotten by the
/// conversation that taught it), and the reply says what was stored; the model is not
/// asked. A fact stored before keeps its one copy (content ids).
async fn remember_lesson(
    rt: &Runtime,
    session: &str,
    lesson: crate::learn::teaching::Lesson,
    stream: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Result<ChatReply, ChatError> {
    let Some(long) = rt.addrs.long_term_memory.clone() else {
        return Err(ChatError::Unavailable(
            "long-term memory is not running: nothing was stored".into(),
        ));
    };
    let memories =
        crate::memory::passages::memories_of(&lesson.fact, &format!("{TAUGHT_SOURCE}{session}"));
    let ids = reply(
        "long_term_memory",
        long.send(crate::actors::long_term_memory::Memorize(memories))
            .await,
    )?;
    let text = lesson.confirmation();
    if let Some(s) = &stream {
        let _ = s.send(text.clone());
    }
    if let Some(s) = &rt.addrs.short_term_memory {
        reply(
            "short_term_memory",
            s.send(AddTurn {
                conversation: session.to_string(),
                role: Role::Assistant,
                text: text.clone(),
            })
            .await,
        )?;
    }
    Ok(ChatReply {
        session: session.to_string(),
        reply: text,
        tool_calls: Vec::new(),
        tool_results: Vec::new(),
        images: Vec::new(),
        tokens: 0,
        prompt_tokens: 0,
        cancelled: false,
        memories: Vec::new(),
        token: None,
        taught: ids.iter().map(ToString::to_string).collect(),
    })
}

/// The source of what a conversation taught: `taught:` and the conversation's name.
pub const TAUGHT_SOURCE: &str = "taught:";

/// Tokens a turn's markup takes beside its text (role token, end of turn), and the
/// memory block's header line.
const TURN_MARKUP_TOKENS: usize = 2;
const MEMORY_HEADER_TOKENS: usize = 4;

/// The memories to put into the prompt for `query`: long-term memory's best matches, then
/// (when `[memory] recall_episodes` > 0) episodes found by full-text search, cut to the
/// configured count, minimum score and token budget — and to the room the model's context
/// leaves beside `conversation` and the room kept for an answer of `answer_tokens` (the
/// Inference default when `None`; see [`answer_room`]), so the prompt is never cut. A
/// memory store that is down leaves its memories out (logged); the turn goes on without
/// them.
pub async fn recall_for_prompt(
    rt: &Runtime,
    inference: &actix::Addr<Inference>,
    query: &str,
    conversation: &[Message],
    answer_tokens: Option<usize>,
) -> Result<Vec<RecallHit>, ChatError> {
    let cfg = &rt.config.memory;
    if cfg.recall_limit == 0 || cfg.recall_tokens == 0 {
        return Ok(Vec::new());
    }
    let mut hits: Vec<RecallHit> = Vec::new();
    if let Some(long) = &rt.addrs.long_term_memory {
        let r = long
            .send(RecallLong {
                query: query.to_string(),
                limit: cfg.recall_limit,
                filter: Default::default(),
            })
            .await;
        hits.extend(
            left_out_if_down("long_term_memory", r)?
                .into_iter()
                .map(RecallHit::from_point),
        );
    }
    if let (Some(episodic), n @ 1..) = (&rt.addrs.episodic_memory, cfg.recall_episodes) {
        let r = episodic
            .send(SearchEpisodes {
                query: query.to_string(),
                filter: Default::default(),
                limit: n,
            })
            .await;
        hits.extend(
            left_out_if_down("episodic_memory", r)?
                .into_iter()
                .map(RecallHit::from_episode),
        );
    }
    if hits.is_empty() {
        return Ok(hits);
    }
    // Each memory is counted as the line it becomes in the prompt; the conversation is
    // counted to know how much of the context is left.
    let mut texts: Vec<String> = hits.iter().map(|h| format!("- {}", h.text)).collect();
    texts.extend(conversation.iter().map(|m| m.content.clone()));
    let counted = reply("inference", inference.send(CountTokens(texts)).await)?;
    let (memory_tokens, turn_tokens) = counted.counts.split_at(hits.len());
    let answer = answer_tokens.unwrap_or(counted.default_answer_tokens);
    let used = turn_tokens.iter().sum::<usize>()
        + TURN_MARKUP_TOKENS * (conversation.len() + 1)
        + 1
        + MEMORY_HEADER_TOKENS
        + answer_room(answer, counted.context);
    let budget = cfg.recall_tokens.min(counted.context.saturating_sub(used));
    Ok(fit_budget(
        hits,
        memory_tokens,
        budget,
        cfg.recall_limit + cfg.recall_episodes,
        cfg.recall_min_score,
    ))
}

/// An actor's answer, or nothing when its store is unavailable (so chat works without
/// memory); a bad query or a closed mailbox is still an error.
fn left_out_if_down<T>(
    actor: &'static str,
    r: crate::actors::Reply<Vec<T>>,
) -> Result<Vec<T>, ChatError> {
    match reply(actor, r) {
        Err(AskError::Actor {
            error: ActorError::Unavailable(why),
            ..
        }) => {
            tracing::warn!(actor, %why, "recall: store left out of the prompt");
            Ok(Vec::new())
        }
        // A message with no searchable word matches no episode: nothing to recall.
        Err(AskError::Actor {
            error: ActorError::BadRequest(_),
            ..
        }) => Ok(Vec::new()),
        r => Ok(r?),
    }
}

/// The conversation with its memories in front: a system turn laid out by
/// [`memory_block`] (the chat template's context block). No memories, no turn.
pub fn with_memories(mut messages: Vec<Message>, memories: &[RecallHit]) -> Vec<Message> {
    if memories.is_empty() {
        return messages;
    }
    let texts: Vec<&str> = memories.iter().map(|m| m.text.as_str()).collect();
    messages.insert(0, Message::new(Role::System, memory_block(&texts)));
    messages
}
