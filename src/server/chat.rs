//! The server's side of a chat turn: the turn itself is [`crate::chat::chat_turn`]; here
//! its errors become API errors, and actor replies API results.

use super::error::ApiError;
use crate::chat::ChatError;
pub use crate::chat::{ChatReply, ChatRequest};

/// A chat turn for the routes: [`crate::chat::chat_turn`] on the server's runtime.
pub async fn chat_turn(
    st: &super::AppState,
    req: ChatRequest,
    detect_tools: bool,
    stream: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Result<ChatReply, ApiError> {
    Ok(crate::chat::chat_turn(&st.rt, req, detect_tools, stream).await?)
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::BadRequest(m) => ApiError::bad_request(m),
            ChatError::Unavailable(m) => ApiError::unavailable(m),
            ChatError::Actor { actor, error } => ApiError::from_actor(&actor, error),
            ChatError::Mailbox { actor, error } => ApiError::mailbox(&actor, error),
        }
    }
}

/// An actor's reply as an API result.
pub fn ask<T>(
    actor: &str,
    r: Result<Result<T, crate::actors::ActorError>, actix::MailboxError>,
) -> Result<T, ApiError> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiError::from_actor(actor, e)),
        Err(e) => Err(ApiError::mailbox(actor, e)),
    }
}
