//! ShortTermMemory: keeps one window of recent turns per conversation (windows arrive with the memory issue).
//!
//! Receives the common messages ([`crate::actors::Ping`], [`crate::actors::Flush`],
//! [`crate::actors::InjectFault`]); runs on its own async arbiter under a `Supervisor`.

use crate::actors::{ActorBase, ThauActor};
use crate::runtime::agents::AgentSpec;

/// The ShortTermMemory actor's state.
pub struct ShortTermMemory {
    base: ActorBase,
}

impl ShortTermMemory {
    pub fn new(base: ActorBase, _spec: &AgentSpec) -> Self {
        ShortTermMemory { base }
    }
}

impl ThauActor for ShortTermMemory {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        "idle: conversation windows arrive with the memory issue".into()
    }
}

crate::supervised_actor!(ShortTermMemory);
