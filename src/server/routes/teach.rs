//! `POST /learn/documents`: a document people hand THAU to know, stored in long-term
//! memory at once (usable in the next answer).

use serde::Deserialize;
use warp::http::StatusCode;
use warp::Reply;

use super::{json, Resp};
use crate::actors::long_term_memory::{KnownMemories, Memorize};
use crate::actors::reply;
use crate::memory::passages::{check_text, memories_of};
use crate::server::error::ApiError;
use crate::server::AppState;

/// Longest document name.
const MAX_NAME_CHARS: usize = 200;
/// Passages stored per message to long-term memory (a long document is many).
const STORE_BATCH: usize = 256;

/// The query of `POST /learn/documents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DocumentQuery {
    /// The document's name (its memories' source is `taught:NAME#POSITION`).
    name: Option<String>,
}

/// A JSON body of `POST /learn/documents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentBody {
    text: String,
    name: Option<String>,
}

/// `POST /learn/documents[?name=NAME]` (API key): a document — the body as a file
/// (`text/plain`, `text/markdown`, anything but JSON; up to 16 MiB), or
/// `{"text", "name"?}` as JSON — cut into passages that long-term memory stores at once,
/// from `taught:NAME`. Passages stored before are left as they were. An empty, binary or
/// non-UTF-8 document is a 400, a larger one a 413; nothing is stored then.
pub(super) async fn learn_documents(
    q: DocumentQuery,
    content_type: Option<String>,
    body: bytes::Bytes,
    st: AppState,
) -> Resp {
    let is_json = content_type
        .as_deref()
        .is_some_and(|c| c.trim_start().starts_with("application/json"));
    let (text, name) = if is_json {
        let b: DocumentBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?;
        (b.text, b.name.or(q.name))
    } else {
        let text = check_text(&body)
            .map_err(|why| ApiError::bad_request(format!("the document {why}")))?;
        (text, q.name)
    };
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("the document is empty").into());
    }
    let name = name.map(|n| n.trim().to_string()).unwrap_or_default();
    let name = if name.is_empty() {
        "document".to_string()
    } else {
        name
    };
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "document names are 1..={MAX_NAME_CHARS} characters, without control characters"
        ))
        .into());
    }
    let long = st.long_term()?;
    let memories = memories_of(&text, &format!("{}{name}", crate::chat::TAUGHT_SOURCE));
    let passages = memories.len();
    let ids: Vec<uuid::Uuid> = memories.iter().filter_map(|m| m.id).collect();
    let known = reply("long_term_memory", long.send(KnownMemories(ids)).await)?;
    // New passages only: stored before, or twice in this document, are skipped.
    let mut seen = std::collections::HashSet::new();
    let fresh: Vec<_> = memories
        .into_iter()
        .zip(known)
        .filter(|(m, k)| !k && m.id.is_some_and(|id| seen.insert(id)))
        .map(|(m, _)| m)
        .collect();
    let new = fresh.len();
    for batch in fresh.chunks(STORE_BATCH) {
        reply(
            "long_term_memory",
            long.send(Memorize(batch.to_vec())).await,
        )?;
    }
    Ok(warp::reply::with_status(
        json(&serde_json::json!({
            "name": name,
            "source": format!("{}{name}", crate::chat::TAUGHT_SOURCE),
            "passages": passages,
            "new": new,
            "known": passages - new,
        })),
        StatusCode::CREATED,
    )
    .into_response())
}
