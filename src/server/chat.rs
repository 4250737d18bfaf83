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
            ChatError::Actor(e) => e.into(),
        }
    }
}
