//! The memory routes: store, recall, list, show and forget items of the three stores,
//! and their figures.

use serde::Deserialize;
use warp::http::StatusCode;
use warp::Reply;

use super::{json, Resp, MAX_RECALL};
use crate::actors::episodic_memory::EpisodicStatsRequest;
use crate::actors::long_term_memory::{LongStatsRequest, Memorize, NewMemory};
use crate::actors::reply;
use crate::memory::EpisodeKind;
use crate::server::error::ApiError;
use crate::server::AppState;

/// Body of `POST /memory/store`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoreBody {
    text: String,
    source: Option<String>,
    importance: Option<f32>,
}

/// `POST /memory/store`: remember a text in long-term memory.
pub(super) async fn memory_store(st: AppState, b: StoreBody) -> Resp {
    let long = st.long_term()?;
    let importance = b.importance.unwrap_or(0.5);
    if !(0.0..=1.0).contains(&importance) {
        return Err(ApiError::bad_request("importance is within 0..=1").into());
    }
    let ids = reply(
        "long_term_memory",
        long.send(Memorize(vec![NewMemory {
            text: b.text,
            source: b.source.unwrap_or_else(|| "api".into()),
            importance,
            id: None,
            keys: Vec::new(),
        }]))
        .await,
    )?;
    Ok(warp::reply::with_status(
        json(&serde_json::json!({ "ids": ids })),
        StatusCode::CREATED,
    )
    .into_response())
}

/// Body of `POST /memory/recall`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecallBody {
    query: String,
    limit: Option<usize>,
}

/// `POST /memory/recall`: what the three memory stores know about a text, best first.
pub(super) async fn memory_recall(token: Option<String>, st: AppState, b: RecallBody) -> Resp {
    if b.query.trim().is_empty() {
        return Err(ApiError::bad_request("`query` is empty").into());
    }
    let limit = b.limit.unwrap_or(10).clamp(1, MAX_RECALL);
    let hits = st.rt.recall(&b.query, limit).await.map_err(|e| match e {
        crate::ThauError::Invalid(m) => ApiError::bad_request(m),
        other => ApiError::unavailable(other.to_string()),
    })?;
    // What came from a conversation is private to it.
    let reader = Reader::of(&st, token.as_deref());
    let hits: Vec<_> = hits.into_iter().filter(|h| reader.may_see_hit(h)).collect();
    Ok(json(&serde_json::json!({ "hits": hits })))
}

/// Most items in one page of a memory listing.
pub(super) const MAX_ITEMS: usize = 200;
/// Items in a page when the request does not say.
const DEFAULT_ITEMS: usize = 50;

/// The query of `GET /memory/{store}/items`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ItemsQuery {
    /// Only the items that match this text, best first.
    q: Option<String>,
    limit: Option<usize>,
    /// Episodic listing: items to skip (newest first).
    offset: Option<usize>,
    /// Long-term listing: the id after which the page starts (`next` of the last page).
    after: Option<uuid::Uuid>,
    /// Read by the key check.
    #[allow(dead_code)]
    api_key: Option<String>,
    /// Read by [`super::conversation_token`].
    #[allow(dead_code)]
    token: Option<String>,
}

/// Whose conversation windows a request may read or forget: every one for the
/// administrator (the API key, when one is set: these routes have checked it already),
/// else only the one whose resume token the request carries.
enum Reader {
    Admin,
    Owner(Option<String>),
}

impl Reader {
    fn of(st: &AppState, token: Option<&str>) -> Reader {
        if st.api_key.is_some() {
            return Reader::Admin;
        }
        Reader::Owner(token.and_then(|t| st.owners.conversation_of(t)))
    }

    fn may_read(&self, conversation: &str) -> bool {
        match self {
            Reader::Admin => true,
            Reader::Owner(mine) => mine.as_deref() == Some(conversation),
        }
    }

    /// Episodes filed from a conversation (its turns, its tool calls, feedback on it) are
    /// as private as its window; a learning session's episodes are shared.
    fn may_see(&self, e: &crate::memory::Episode) -> bool {
        !PRIVATE_KINDS.contains(&e.kind) || self.may_read(&e.session)
    }

    /// [`Reader::may_see`] for a recalled hit: short-term turns by conversation, episodes
    /// by the `session/kind` their source names.
    fn may_see_hit(&self, h: &crate::memory::recall::RecallHit) -> bool {
        use crate::memory::StoreKind;
        match h.store {
            StoreKind::Short => self.may_read(&h.id),
            StoreKind::Episodic => match h.source.rsplit_once('/') {
                Some((session, kind)) if PRIVATE_KINDS.iter().any(|k| k.as_str() == kind) => {
                    self.may_read(session)
                }
                _ => true,
            },
            StoreKind::Long => true,
        }
    }
}

/// Kinds of episode that come from a conversation.
const PRIVATE_KINDS: [EpisodeKind; 3] = [
    EpisodeKind::ChatTurn,
    EpisodeKind::ToolCall,
    EpisodeKind::Feedback,
];

/// The same answer for a conversation that does not exist and one that is not the
/// caller's, so that names cannot be probed.
fn no_conversation(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "no conversation `{name}` open to this request (send its token: X-Conversation-Token)"
    ))
}

/// The store a path names.
fn store_kind(name: &str) -> Result<crate::memory::StoreKind, ApiError> {
    use crate::memory::StoreKind;
    match name {
        "short" => Ok(StoreKind::Short),
        "episodic" => Ok(StoreKind::Episodic),
        "long" => Ok(StoreKind::Long),
        other => Err(ApiError::not_found(format!(
            "no memory store `{other}` (short, episodic or long)"
        ))),
    }
}

fn parse_id(id: &str) -> Result<uuid::Uuid, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("`{id}` is not a memory id (a UUID)")))
}

fn actor<A>(a: &Option<A>, name: &str) -> Result<A, ApiError>
where
    A: Clone,
{
    a.clone()
        .ok_or_else(|| ApiError::unavailable(format!("{name} is not running")))
}

/// `GET /memory/{store}/items[?q=TEXT][&limit=N][&offset=N | &after=ID]`: what a store
/// holds — episodes newest first, long-term memories in id order (`next` is the cursor of
/// the following page), short-term conversation windows — or, with `q`, what matches it,
/// best first. This is what the web page's memory inspector reads. Short-term windows
/// are shown to their owners only ([`Reader`]).
pub(super) async fn memory_items(
    store: String,
    q: ItemsQuery,
    token: Option<String>,
    st: AppState,
) -> Resp {
    use crate::actors::episodic_memory::{ListEpisodes, SearchEpisodes};
    use crate::actors::long_term_memory::{ListMemories, RecallLong};
    use crate::actors::short_term_memory::{ListWindows, SearchShort};
    use crate::memory::StoreKind;
    let kind = store_kind(&store)?;
    let limit = q.limit.unwrap_or(DEFAULT_ITEMS).clamp(1, MAX_ITEMS);
    let text = q.q.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let a = &st.rt.addrs;
    let reader = Reader::of(&st, token.as_deref());
    let body = match (kind, text) {
        (StoreKind::Episodic, Some(t)) => {
            let e = actor(&a.episodic_memory, "EpisodicMemory")?;
            let hits = e.send(SearchEpisodes {
                query: t.to_string(),
                filter: Default::default(),
                limit,
            });
            let mut hits = reply("episodic_memory", hits.await)?;
            hits.retain(|h| reader.may_see(&h.episode));
            serde_json::json!({ "store": store, "hits": hits })
        }
        (StoreKind::Episodic, None) => {
            let e = actor(&a.episodic_memory, "EpisodicMemory")?;
            let page = e.send(ListEpisodes {
                filter: Default::default(),
                limit,
                offset: q.offset.unwrap_or(0),
            });
            // A page holds fewer items when some are other conversations'.
            let mut items = reply("episodic_memory", page.await)?;
            items.retain(|e| reader.may_see(e));
            serde_json::json!({ "store": store, "items": items })
        }
        (StoreKind::Long, Some(t)) => {
            let l = actor(&a.long_term_memory, "LongTermMemory")?;
            let hits = l.send(RecallLong {
                query: t.to_string(),
                limit,
                filter: Default::default(),
            });
            serde_json::json!({ "store": store, "hits": reply("long_term_memory", hits.await)? })
        }
        (StoreKind::Long, None) => {
            let l = actor(&a.long_term_memory, "LongTermMemory")?;
            let page = l.send(ListMemories {
                after: q.after,
                limit,
            });
            let (items, next) = reply("long_term_memory", page.await)?;
            serde_json::json!({ "store": store, "items": items, "next": next })
        }
        (StoreKind::Short, Some(t)) => {
            let s = actor(&a.short_term_memory, "ShortTermMemory")?;
            // Every conversation's turns are searched, then the caller's kept: a search
            // the size of the whole store, then cut.
            let hits = s.send(SearchShort {
                query: t.to_string(),
                limit: usize::MAX,
            });
            let mut hits = reply("short_term_memory", hits.await)?;
            hits.retain(|h| reader.may_read(&h.id));
            hits.truncate(limit);
            serde_json::json!({ "store": store, "hits": hits })
        }
        (StoreKind::Short, None) => {
            let s = actor(&a.short_term_memory, "ShortTermMemory")?;
            let mut windows = reply("short_term_memory", s.send(ListWindows).await)?;
            windows.retain(|w| reader.may_read(&w.conversation));
            windows.truncate(limit);
            serde_json::json!({ "store": store, "items": windows })
        }
    };
    Ok(json(&body))
}

/// `GET /memory/{store}/items/{id}`: one episode or long-term memory by id, or one
/// conversation's short-term window by its name (for its owner: [`Reader`]).
pub(super) async fn memory_item(
    store: String,
    id: String,
    token: Option<String>,
    st: AppState,
) -> Resp {
    use crate::actors::episodic_memory::GetEpisode;
    use crate::actors::long_term_memory::GetMemory;
    use crate::actors::short_term_memory::{GetWindow, ListWindows};
    use crate::memory::StoreKind;
    let a = &st.rt.addrs;
    let body = match store_kind(&store)? {
        StoreKind::Episodic => {
            let e = actor(&a.episodic_memory, "EpisodicMemory")?;
            let episode = reply("episodic_memory", e.send(GetEpisode(parse_id(&id)?)).await)?;
            if !Reader::of(&st, token.as_deref()).may_see(&episode) {
                return Err(ApiError::not_found(format!("no episode {id}")).into());
            }
            serde_json::to_value(episode)
        }
        StoreKind::Long => {
            let l = actor(&a.long_term_memory, "LongTermMemory")?;
            let mut p = reply("long_term_memory", l.send(GetMemory(parse_id(&id)?)).await)?;
            // The vector is hundreds of numbers no reader wants.
            p.vector.clear();
            serde_json::to_value(p)
        }
        StoreKind::Short => {
            let s = actor(&a.short_term_memory, "ShortTermMemory")?;
            let known = reply("short_term_memory", s.send(ListWindows).await)?;
            let reader = Reader::of(&st, token.as_deref());
            if !known.iter().any(|w| w.conversation == id) || !reader.may_read(&id) {
                return Err(no_conversation(&id).into());
            }
            let w = reply("short_term_memory", s.send(GetWindow(id.clone())).await)?;
            Ok(serde_json::json!({ "conversation": id, "turns": w.messages() }))
        }
    }
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(json(&body))
}

/// `DELETE /memory/{store}/items/{id}` (API key): forgets one episode, long-term memory or
/// conversation window for good (a window: for its owner, [`Reader`]; its name is freed).
pub(super) async fn memory_forget(
    store: String,
    id: String,
    token: Option<String>,
    st: AppState,
) -> Resp {
    use crate::actors::episodic_memory::ForgetEpisode;
    use crate::actors::long_term_memory::ForgetMemory;
    use crate::actors::short_term_memory::ForgetWindow;
    use crate::memory::StoreKind;
    let a = &st.rt.addrs;
    match store_kind(&store)? {
        StoreKind::Episodic => {
            use crate::actors::episodic_memory::GetEpisode;
            let e = actor(&a.episodic_memory, "EpisodicMemory")?;
            let id = parse_id(&id)?;
            let episode = reply("episodic_memory", e.send(GetEpisode(id)).await)?;
            if !Reader::of(&st, token.as_deref()).may_see(&episode) {
                return Err(ApiError::not_found(format!("no episode {id}")).into());
            }
            reply("episodic_memory", e.send(ForgetEpisode(id)).await)?;
        }
        StoreKind::Long => {
            let l = actor(&a.long_term_memory, "LongTermMemory")?;
            reply(
                "long_term_memory",
                l.send(ForgetMemory(parse_id(&id)?)).await,
            )?;
        }
        StoreKind::Short => {
            if !Reader::of(&st, token.as_deref()).may_read(&id) {
                return Err(no_conversation(&id).into());
            }
            let s = actor(&a.short_term_memory, "ShortTermMemory")?;
            reply("short_term_memory", s.send(ForgetWindow(id.clone())).await)?;
            st.owners.release(&id);
        }
    }
    Ok(json(
        &serde_json::json!({ "store": store, "forgotten": id }),
    ))
}

/// `GET /memory/stats`: the episodic and long-term stores' figures.
pub(super) async fn memory_stats(st: AppState) -> Resp {
    let a = &st.rt.addrs;
    let episodic = match &a.episodic_memory {
        Some(e) => serde_json::to_value(reply(
            "episodic_memory",
            e.send(EpisodicStatsRequest).await,
        )?)
        .unwrap_or_default(),
        None => serde_json::Value::Null,
    };
    let long = match &a.long_term_memory {
        Some(l) => serde_json::to_value(reply("long_term_memory", l.send(LongStatsRequest).await)?)
            .unwrap_or_default(),
        None => serde_json::Value::Null,
    };
    Ok(json(
        &serde_json::json!({ "episodic": episodic, "long_term": long }),
    ))
}
