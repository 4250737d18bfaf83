//! EpisodicMemory: owns the SQLite episode store ([`EpisodicStore`]) — records what happened
//! and finds it again by full-text search.
//!
//! Receives [`Remember`], [`SearchEpisodes`], [`GetEpisode`], [`ListEpisodes`],
//! [`ForgetEpisode`], [`EpisodicStatsRequest`] and the common messages; runs on its own
//! async arbiter under a `Supervisor` (SQLite calls are short and only block this arbiter).

use std::path::Path;

use actix::prelude::*;
use uuid::Uuid;

use crate::actors::{guarded, memory_reply, ActorBase, ActorError, ThauActor};
use crate::memory::episodic::{EpisodeFilter, EpisodeHit, EpisodicStats, EpisodicStore};
use crate::memory::Episode;
use crate::runtime::agents::AgentSpec;

/// Store episodes (all or none); answers how many.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<usize, ActorError>")]
pub struct Remember(pub Vec<Episode>);

/// Full-text search, best first.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<EpisodeHit>, ActorError>")]
pub struct SearchEpisodes {
    pub query: String,
    pub filter: EpisodeFilter,
    pub limit: usize,
}

/// One episode by id.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<Episode, ActorError>")]
pub struct GetEpisode(pub Uuid);

/// The newest episodes.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<Episode>, ActorError>")]
pub struct ListEpisodes {
    pub filter: EpisodeFilter,
    pub limit: usize,
    pub offset: usize,
}

/// Delete one episode.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), ActorError>")]
pub struct ForgetEpisode(pub Uuid);

/// Counts of the store.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<EpisodicStats, ActorError>")]
pub struct EpisodicStatsRequest;

/// The EpisodicMemory actor's state.
pub struct EpisodicMemory {
    base: ActorBase,
    /// The open store, or why it could not be opened (reported by every request).
    store: Result<EpisodicStore, String>,
}

impl EpisodicMemory {
    /// Opens `<memory_dir>/episodic.sqlite`.
    pub fn new(base: ActorBase, _spec: &AgentSpec, memory_dir: &Path) -> Self {
        let store = EpisodicStore::open(&memory_dir.join(crate::memory::EPISODIC_DB))
            .map_err(|e| e.to_string());
        if let Err(e) = &store {
            tracing::error!(actor = base.name, error = %e, "episodic store unavailable");
        }
        EpisodicMemory { base, store }
    }

    fn store(&mut self) -> Result<&mut EpisodicStore, ActorError> {
        self.store
            .as_mut()
            .map_err(|e| ActorError::Unavailable(format!("episodic store: {e}")))
    }
}

impl ThauActor for EpisodicMemory {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        match &self.store {
            Ok(s) => match s.count() {
                Ok(n) => format!("{n} episodes in {}", s.path().display()),
                Err(e) => format!("store error: {e}"),
            },
            Err(e) => format!("unavailable: {e}"),
        }
    }
}

crate::supervised_actor!(EpisodicMemory);

impl Handler<Remember> for EpisodicMemory {
    type Result = Result<usize, ActorError>;
    fn handle(&mut self, m: Remember, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "Remember", |me| {
            me.store()?.put_many(&m.0).map_err(memory_reply)?;
            Ok(m.0.len())
        })
    }
}

impl Handler<SearchEpisodes> for EpisodicMemory {
    type Result = Result<Vec<EpisodeHit>, ActorError>;
    fn handle(&mut self, m: SearchEpisodes, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "SearchEpisodes", |me| {
            me.store()?
                .search(&m.query, &m.filter, m.limit)
                .map_err(memory_reply)
        })
    }
}

impl Handler<GetEpisode> for EpisodicMemory {
    type Result = Result<Episode, ActorError>;
    fn handle(&mut self, m: GetEpisode, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "GetEpisode", |me| {
            me.store()?.get(m.0).map_err(memory_reply)
        })
    }
}

impl Handler<ListEpisodes> for EpisodicMemory {
    type Result = Result<Vec<Episode>, ActorError>;
    fn handle(&mut self, m: ListEpisodes, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "ListEpisodes", |me| {
            me.store()?
                .list(&m.filter, m.limit, m.offset)
                .map_err(memory_reply)
        })
    }
}

impl Handler<ForgetEpisode> for EpisodicMemory {
    type Result = Result<(), ActorError>;
    fn handle(&mut self, m: ForgetEpisode, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "ForgetEpisode", |me| {
            me.store()?.forget(m.0).map_err(memory_reply)
        })
    }
}

impl Handler<EpisodicStatsRequest> for EpisodicMemory {
    type Result = Result<EpisodicStats, ActorError>;
    fn handle(&mut self, _: EpisodicStatsRequest, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "EpisodicStats", |me| {
            me.store()?.stats().map_err(memory_reply)
        })
    }
}
