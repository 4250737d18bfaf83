//! LongTermMemory: owns the vector store (embedded Qdrant, or a Qdrant server) and the
//! embedder — memorises texts as vectors and recalls the nearest ones.
//!
//! Receives [`Memorize`], [`RecallLong`], [`GetMemory`], [`ForgetMemory`],
//! [`ListMemories`], [`LongStatsRequest`] and the common messages ([`crate::actors::Flush`] flushes the
//! store). The embedded shard admits one owner per directory, and this actor is it. Runs
//! on its own async arbiter under a `Supervisor`: a restart keeps the open store.

use std::path::Path;

use actix::prelude::*;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::actors::{guarded, memory_reply, ActorBase, ActorError, ThauActor};
use crate::memory::embed::Embedder;
use crate::memory::vector::{
    MemoryPoint, PayloadFilter, PointPayload, ScoredPoint, VectorStats, VectorStore,
};
use crate::memory::MemorySection;
use crate::runtime::agents::AgentSpec;

/// Points written between two index builds (HNSW) of the embedded store.
const OPTIMIZE_EVERY: usize = 2_000;

/// A text to remember.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMemory {
    pub text: String,
    pub source: String,
    pub importance: f32,
}

/// Embed and store texts; answers their ids.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<Uuid>, ActorError>")]
pub struct Memorize(pub Vec<NewMemory>);

/// The memories nearest to a text.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<ScoredPoint>, ActorError>")]
pub struct RecallLong {
    pub query: String,
    pub limit: usize,
    pub filter: PayloadFilter,
}

/// A page of memories in id order (without vectors), starting after `after`; answers the
/// page and the cursor of the next one.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(Vec<MemoryPoint>, Option<Uuid>), ActorError>")]
pub struct ListMemories {
    pub after: Option<Uuid>,
    pub limit: usize,
}

/// One memory with its vector.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<MemoryPoint, ActorError>")]
pub struct GetMemory(pub Uuid);

/// Delete one memory.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), ActorError>")]
pub struct ForgetMemory(pub Uuid);

/// Counts of the store.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<VectorStats, ActorError>")]
pub struct LongStatsRequest;

struct Open {
    store: Box<dyn VectorStore>,
    embedder: Box<dyn Embedder>,
}

/// The LongTermMemory actor's state.
pub struct LongTermMemory {
    base: ActorBase,
    open: Result<Open, String>,
    /// Points written since the last index build.
    unindexed: usize,
}

impl LongTermMemory {
    pub fn new(
        base: ActorBase,
        _spec: &AgentSpec,
        memory_dir: &Path,
        checkpoints: &Path,
        cfg: &MemorySection,
    ) -> Self {
        let open = crate::memory::open_long_term(memory_dir, checkpoints, cfg)
            .map(|(store, embedder)| Open { store, embedder })
            .map_err(|e| e.to_string());
        if let Err(e) = &open {
            tracing::error!(actor = base.name, error = %e, "long-term store unavailable");
        }
        LongTermMemory {
            base,
            open,
            unindexed: 0,
        }
    }

    fn open(&mut self) -> Result<&mut Open, ActorError> {
        self.open
            .as_mut()
            .map_err(|e| ActorError::Unavailable(format!("long-term store: {e}")))
    }
}

impl ThauActor for LongTermMemory {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        match &self.open {
            Ok(o) => match o.store.stats() {
                Ok(s) => format!(
                    "{} memories in {} ({}), embedder {}",
                    s.points,
                    s.backend,
                    s.location,
                    o.embedder.name()
                ),
                Err(e) => format!("store error: {e}"),
            },
            Err(e) => format!("unavailable: {e}"),
        }
    }
    fn flush_state(&mut self) -> Result<(), ActorError> {
        match &mut self.open {
            Ok(o) => o.store.flush().map_err(memory_reply),
            Err(_) => Ok(()),
        }
    }
}

crate::supervised_actor!(LongTermMemory);

impl Handler<Memorize> for LongTermMemory {
    type Result = Result<Vec<Uuid>, ActorError>;
    fn handle(&mut self, m: Memorize, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "Memorize", |me| {
            let o = me.open()?;
            let texts: Vec<&str> = m.0.iter().map(|n| n.text.as_str()).collect();
            let vectors = o.embedder.embed(&texts).map_err(memory_reply)?;
            let now = Utc::now();
            let points: Vec<MemoryPoint> =
                m.0.iter()
                    .zip(vectors)
                    .map(|(n, vector)| MemoryPoint {
                        id: Uuid::new_v4(),
                        payload: PointPayload {
                            text: n.text.clone(),
                            source: n.source.clone(),
                            importance: n.importance,
                            created_at: now,
                        },
                        vector,
                    })
                    .collect();
            let ids = points.iter().map(|p| p.id).collect();
            let n = points.len();
            o.store.upsert(points).map_err(memory_reply)?;
            me.unindexed += n;
            if me.unindexed >= OPTIMIZE_EVERY {
                me.unindexed = 0;
                me.open()?.store.optimize().map_err(memory_reply)?;
            }
            Ok(ids)
        })
    }
}

impl Handler<RecallLong> for LongTermMemory {
    type Result = Result<Vec<ScoredPoint>, ActorError>;
    fn handle(&mut self, m: RecallLong, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "RecallLong", |me| {
            let o = me.open()?;
            let v = o.embedder.embed_one(&m.query).map_err(memory_reply)?;
            o.store
                .search(&v, m.limit, &m.filter, false)
                .map_err(memory_reply)
        })
    }
}

impl Handler<GetMemory> for LongTermMemory {
    type Result = Result<MemoryPoint, ActorError>;
    fn handle(&mut self, m: GetMemory, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "GetMemory", |me| {
            me.open()?.store.get(m.0).map_err(memory_reply)
        })
    }
}

impl Handler<ForgetMemory> for LongTermMemory {
    type Result = Result<(), ActorError>;
    fn handle(&mut self, m: ForgetMemory, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "ForgetMemory", |me| {
            me.open()?.store.delete(m.0).map_err(memory_reply)
        })
    }
}

impl Handler<LongStatsRequest> for LongTermMemory {
    type Result = Result<VectorStats, ActorError>;
    fn handle(&mut self, _: LongStatsRequest, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "LongStats", |me| {
            me.open()?.store.stats().map_err(memory_reply)
        })
    }
}

impl Handler<ListMemories> for LongTermMemory {
    type Result = Result<(Vec<MemoryPoint>, Option<Uuid>), ActorError>;
    fn handle(&mut self, m: ListMemories, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "ListMemories", |me| {
            me.open()?
                .store
                .scroll(m.after, m.limit, false)
                .map_err(memory_reply)
        })
    }
}
