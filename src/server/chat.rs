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

/// Opens the conversation a request names for its caller ([`Owners::open`]): a new one
/// when none or a free name is given, an existing one for its token. A conversation let
/// go to make room has its window closed (filed as episodes), so no later claimant of the
/// name reads its turns.
///
/// [`Owners::open`]: super::owners::Owners::open
pub fn open_conversation(
    st: &super::AppState,
    name: Option<&str>,
    token: Option<&str>,
) -> Result<super::owners::Opened, ApiError> {
    let opened = st.owners.open(name, token)?;
    if let (Some(gone), Some(short)) = (&opened.evicted, &st.rt.addrs.short_term_memory) {
        short.do_send(crate::actors::short_term_memory::CloseConversation(
            gone.clone(),
        ));
    }
    Ok(opened)
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
