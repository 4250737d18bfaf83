//! EpisodicMemory: stores episodes in SQLite with full-text search (the store arrives with the memory issue).
//!
//! Receives the common messages ([`crate::actors::Ping`], [`crate::actors::Flush`],
//! [`crate::actors::InjectFault`]); runs on its own async arbiter under a `Supervisor`.

use crate::actors::{ActorBase, ThauActor};
use crate::runtime::agents::AgentSpec;

/// The EpisodicMemory actor's state.
pub struct EpisodicMemory {
    base: ActorBase,
}

impl EpisodicMemory {
    pub fn new(base: ActorBase, _spec: &AgentSpec) -> Self {
        EpisodicMemory { base }
    }
}

impl ThauActor for EpisodicMemory {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        "idle: the SQLite store arrives with the memory issue".into()
    }
}

crate::supervised_actor!(EpisodicMemory);
