//! LongTermMemory: owns the long-term store ([`LongTerm`]: embedded Qdrant or a Qdrant
//! server, the embedder, and the lexical index beside them) — memorises texts and recalls
//! the ones that best match a query, by meaning and by words.
//!
//! Receives [`Memorize`], [`RecallLong`], [`KnownMemories`], [`GetMemory`], [`ForgetMemory`],
//! [`ListMemories`], [`LongStatsRequest`], [`Embed`] and the common messages ([`crate::actors::Flush`] flushes the
//! store). The embedded shard admits one owner per directory, and this actor is it. Runs
//! on its own async arbiter under a `Supervisor`: a restart keeps the open store.

use std::path::Path;

use actix::prelude::*;
use uuid::Uuid;

use crate::actors::{guarded, memory_reply, ActorBase, ActorError, ThauActor};
use crate::memory::vector::{MemoryPoint, PayloadFilter, ScoredPoint, VectorStats};
pub use crate::memory::NewMemory;
use crate::memory::{LongTerm, MemorySection};
use crate::runtime::agents::AgentSpec;

/// Points written between two index builds (HNSW) of the embedded store.
const OPTIMIZE_EVERY: usize = 2_000;

/// Embed and store texts; answers their ids.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<Uuid>, ActorError>")]
pub struct Memorize(pub Vec<NewMemory>);

/// The memories that best match a text (vector and lexical rankings fused, see
/// [`LongTerm::recall`]).
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

/// Which of these ids are stored (to tell new passages from ones already read).
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Vec<bool>, ActorError>")]
pub struct KnownMemories(pub Vec<Uuid>);

/// Counts of the store.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<VectorStats, ActorError>")]
pub struct LongStatsRequest;

/// The vectors the store's embedder gives texts (what the Ollama and OpenAI embedding
/// routes answer): the space recalled memories live in.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Embedded, ActorError>")]
pub struct Embed(pub Vec<String>);

/// The reply to [`Embed`].
#[derive(Debug, Clone)]
pub struct Embedded {
    /// The embedder's name (its vector space).
    pub embedder: String,
    pub vectors: Vec<Vec<f32>>,
}

/// The LongTermMemory actor's state.
pub struct LongTermMemory {
    base: ActorBase,
    open: Result<LongTerm, String>,
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
        let open = LongTerm::open(memory_dir, checkpoints, cfg).map_err(|e| e.to_string());
        if let Err(e) = &open {
            tracing::error!(actor = base.name, error = %e, "long-term store unavailable");
        }
        LongTermMemory {
            base,
            open,
            unindexed: 0,
        }
    }

    fn open(&mut self) -> Result<&mut LongTerm, ActorError> {
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
            Ok(o) => match o.stats() {
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
            Ok(o) => o.flush().map_err(memory_reply),
            Err(_) => Ok(()),
        }
    }
}

crate::supervised_actor!(LongTermMemory);

impl Handler<Memorize> for LongTermMemory {
    type Result = Result<Vec<Uuid>, ActorError>;
    fn handle(&mut self, m: Memorize, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "Memorize", |me| {
            let ids = me.open()?.memorize(&m.0).map_err(memory_reply)?;
            let n = ids.len();
            me.unindexed += n;
            if me.unindexed >= OPTIMIZE_EVERY {
                me.unindexed = 0;
                me.open()?.vectors.optimize().map_err(memory_reply)?;
            }
            Ok(ids)
        })
    }
}

impl Handler<KnownMemories> for LongTermMemory {
    type Result = Result<Vec<bool>, ActorError>;
    fn handle(&mut self, m: KnownMemories, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "KnownMemories", |me| {
            let lt = me.open()?;
            m.0.iter()
                .map(|id| lt.contains(*id).map_err(memory_reply))
                .collect()
        })
    }
}

impl Handler<RecallLong> for LongTermMemory {
    type Result = Result<Vec<ScoredPoint>, ActorError>;
    fn handle(&mut self, m: RecallLong, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "RecallLong", |me| {
            me.open()?
                .recall(&m.query, m.limit, &m.filter)
                .map_err(memory_reply)
        })
    }
}

impl Handler<GetMemory> for LongTermMemory {
    type Result = Result<MemoryPoint, ActorError>;
    fn handle(&mut self, m: GetMemory, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "GetMemory", |me| {
            me.open()?.vectors.get(m.0).map_err(memory_reply)
        })
    }
}

impl Handler<ForgetMemory> for LongTermMemory {
    type Result = Result<(), ActorError>;
    fn handle(&mut self, m: ForgetMemory, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "ForgetMemory", |me| {
            me.open()?.delete(m.0).map_err(memory_reply)
        })
    }
}

impl Handler<Embed> for LongTermMemory {
    type Result = Result<Embedded, ActorError>;
    fn handle(&mut self, m: Embed, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "Embed", |me| {
            let e = &me.open()?.embedder;
            let texts: Vec<&str> = m.0.iter().map(String::as_str).collect();
            Ok(Embedded {
                embedder: e.name(),
                vectors: e.embed(&texts).map_err(memory_reply)?,
            })
        })
    }
}

impl Handler<LongStatsRequest> for LongTermMemory {
    type Result = Result<VectorStats, ActorError>;
    fn handle(&mut self, _: LongStatsRequest, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "LongStats", |me| {
            me.open()?.stats().map_err(memory_reply)
        })
    }
}

impl Handler<ListMemories> for LongTermMemory {
    type Result = Result<(Vec<MemoryPoint>, Option<Uuid>), ActorError>;
    fn handle(&mut self, m: ListMemories, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, "ListMemories", |me| {
            me.open()?
                .vectors
                .scroll(m.after, m.limit, false)
                .map_err(memory_reply)
        })
    }
}
