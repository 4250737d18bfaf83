//! LongTermMemory: owns the vector store (embedded Qdrant, or a server) (the store arrives with the memory issue).
//!
//! Receives the common messages ([`crate::actors::Ping`], [`crate::actors::Flush`],
//! [`crate::actors::InjectFault`]); runs on its own async arbiter under a `Supervisor`.

use crate::actors::{ActorBase, ThauActor};
use crate::runtime::agents::AgentSpec;

/// The LongTermMemory actor's state.
pub struct LongTermMemory {
    base: ActorBase,
}

impl LongTermMemory {
    pub fn new(base: ActorBase, _spec: &AgentSpec) -> Self {
        LongTermMemory { base }
    }
}

impl ThauActor for LongTermMemory {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        "idle: the vector store arrives with the memory issue".into()
    }
}

crate::supervised_actor!(LongTermMemory);
