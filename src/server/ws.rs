//! `GET /ws/chat`: a chat over a WebSocket, speaking JSON events with a `type` field. One
//! conversation per connection, resumable by session id.
//!
//! Client → server: `session.update {"session", "token"?}` (resume a conversation with
//! its token, or open a new one under a free name),
//! `message.create {"message", "max_tokens"?, "temperature"?, "seed"?, "detect_tools"?}`, `response.cancel`,
//! `feedback {"turn", "rating", "note"?}`.
//! Server → client: `session.created {"session", "resumed", "token"?}` (the token of a new
//! conversation: the only way to resume it), `response.delta {"delta"}`
//! (streamed text as it is decoded), `tool.call {"name", "arguments"}`,
//! `tool.result {"name", "ok", "content"}`, `response.done {"text", "tokens", "cancelled",
//! "images"}`, `feedback.recorded {...}` and `error {"code", "message"}`. A bad event gets
//! an `error` and the connection stays open.

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use warp::ws::{Message, WebSocket};

use super::chat::{chat_turn, ChatRequest};
use super::error::ApiError;
use super::AppState;
use crate::actors::reply;
use crate::actors::tuner::Feedback;
use crate::learn::tuning::Rating;

/// Largest WebSocket message accepted.
pub const MAX_WS_MESSAGE: usize = 64 * 1024;

/// A client event.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum ClientEvent {
    #[serde(rename = "session.update")]
    SessionUpdate {
        session: String,
        #[serde(default)]
        token: Option<String>,
    },
    #[serde(rename = "message.create")]
    MessageCreate {
        message: String,
        max_tokens: Option<usize>,
        temperature: Option<f64>,
        seed: Option<u64>,
        /// Run the intent fallback on the user's words, as `/vision/chat` does.
        #[serde(default)]
        detect_tools: bool,
        /// Recall memories into the prompt (default: the `[memory] recall` setting).
        memory: Option<bool>,
    },
    #[serde(rename = "response.cancel")]
    ResponseCancel,
    #[serde(rename = "feedback")]
    Feedback {
        turn: String,
        rating: Rating,
        note: Option<String>,
    },
}

fn error_event(e: &ApiError) -> Value {
    json!({ "type": "error", "code": e.code, "message": e.message })
}

/// Serves one connection until the client closes it; its place (`_permit`) is freed then.
pub async fn session(socket: WebSocket, st: AppState, _permit: super::limits::SessionPermit) {
    let (mut sink, mut incoming) = socket.split();
    // One writer: responses in flight and the read loop both send through it.
    let (out, mut queue) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(async move {
        while let Some(v) = queue.recv().await {
            if sink.send(Message::text(v.to_string())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let opened = match super::chat::open_conversation(&st, None, None) {
        Ok(o) => o,
        Err(e) => {
            let _ = out.send(error_event(&e));
            drop(out);
            let _ = writer.await;
            return;
        }
    };
    let mut session = opened.session;
    let _ = out.send(json!({
        "type": "session.created", "session": session, "resumed": false, "token": opened.token,
    }));
    // The response in flight: its task and the switch that cancels it.
    let mut running: Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )> = None;
    while let Some(msg) = incoming.next().await {
        let Ok(msg) = msg else { break };
        if msg.is_close() {
            break;
        }
        if !msg.is_text() {
            continue;
        }
        if running.as_ref().is_some_and(|(h, _)| h.is_finished()) {
            running = None;
        }
        let event = match serde_json::from_slice::<ClientEvent>(msg.as_bytes()) {
            Ok(e) => e,
            Err(e) => {
                let _ = out.send(error_event(&ApiError::bad_request(format!(
                    "bad event: {e}"
                ))));
                continue;
            }
        };
        match event {
            ClientEvent::SessionUpdate { session: s, token } => {
                if running.is_some() {
                    let _ = out.send(error_event(&ApiError::bad_request(
                        "the conversation changes only between responses",
                    )));
                    continue;
                }
                match super::chat::open_conversation(&st, Some(&s), token.as_deref()) {
                    Ok(o) => {
                        session = o.session;
                        let _ = out.send(json!({
                            "type": "session.created", "session": session,
                            "resumed": o.token.is_none(), "token": o.token,
                        }));
                    }
                    Err(e) => {
                        let _ = out.send(error_event(&e));
                    }
                }
            }
            ClientEvent::MessageCreate {
                message,
                max_tokens,
                temperature,
                seed,
                detect_tools,
                memory,
            } => {
                if running.is_some() {
                    let _ = out.send(error_event(&ApiError::bad_request(
                        "a response is in progress (send response.cancel first)",
                    )));
                    continue;
                }
                if let Err(e) = st.limits.take_turn(&format!("session:{session}")) {
                    let _ = out.send(error_event(&e));
                    continue;
                }
                let req = ChatRequest {
                    session: Some(session.clone()),
                    message,
                    max_tokens,
                    temperature,
                    seed,
                    memory,
                    token: None,
                };
                let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel();
                let task = tokio::spawn(respond(
                    st.clone(),
                    req,
                    detect_tools,
                    out.clone(),
                    cancel_rx,
                ));
                running = Some((task, cancel_tx));
            }
            ClientEvent::ResponseCancel => {
                if let Some((_, cancel)) = running.take() {
                    let _ = cancel.send(());
                }
            }
            ClientEvent::Feedback { turn, rating, note } => {
                let reply = match st.rt.addrs.tuner.clone() {
                    None => Err(ApiError::unavailable("the Tuner is not running")),
                    Some(t) => reply(
                        "tuner",
                        t.send(Feedback {
                            session: session.clone(),
                            turn,
                            rating,
                            note,
                        })
                        .await,
                    )
                    .map_err(ApiError::from),
                };
                let _ = out.send(match reply {
                    Ok(r) => json!({ "type": "feedback.recorded", "change": r.change, "ratings": r.ratings }),
                    Err(e) => error_event(&e),
                });
            }
        }
    }
    if let Some((_, cancel)) = running.take() {
        let _ = cancel.send(());
    }
    drop(out);
    let _ = writer.await;
}

/// One response: streams the deltas, then the tool events and `response.done`.
async fn respond(
    st: AppState,
    req: ChatRequest,
    detect_tools: bool,
    out: mpsc::UnboundedSender<Value>,
    cancel: tokio::sync::oneshot::Receiver<()>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let forward = {
        let out = out.clone();
        async move {
            let mut cancel = cancel;
            // Tool calls are announced whole (tool.call), never streamed as text.
            let mut parser = crate::tools::ToolCallParser::default();
            loop {
                tokio::select! {
                    piece = rx.recv() => match piece {
                        Some(piece) => {
                            let delta = parser.visible(&piece);
                            if !delta.is_empty() {
                                let _ = out.send(json!({ "type": "response.delta", "delta": delta }));
                            }
                        }
                        None => break,
                    },
                    // Dropping the receiver makes Inference stop decoding.
                    _ = &mut cancel => break,
                }
            }
        }
    };
    let (reply, ()) = tokio::join!(chat_turn(&st, req, detect_tools, Some(tx)), forward);
    match reply {
        Ok(r) => {
            for call in &r.tool_calls {
                let _ = out.send(
                    json!({ "type": "tool.call", "name": call.name, "arguments": call.arguments }),
                );
            }
            // One result per call, and one (its error) per invalid call, in order.
            for result in &r.tool_results {
                let _ = out.send(json!({ "type": "tool.result", "name": result.name, "ok": result.ok, "content": result.content }));
            }
            let _ = out.send(json!({
                "type": "response.done", "session": r.session, "text": r.reply,
                "tokens": r.tokens, "cancelled": r.cancelled, "images": r.images,
                "memories": r.memories, "taught": r.taught,
            }));
        }
        Err(e) => {
            let _ = out.send(error_event(&st.explain(e)));
        }
    }
}
