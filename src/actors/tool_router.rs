//! ToolRouter: parses `<TOOL:name>{json}</TOOL>` in model output, validates and dispatches (parsing arrives with the tool-calling issue).
//!
//! Receives the common messages ([`crate::actors::Ping`], [`crate::actors::Flush`],
//! [`crate::actors::InjectFault`]); runs on its own async arbiter under a `Supervisor`.

use crate::actors::{ActorBase, ThauActor};
use crate::runtime::agents::AgentSpec;

/// The ToolRouter actor's state.
pub struct ToolRouter {
    base: ActorBase,
}

impl ToolRouter {
    pub fn new(base: ActorBase, _spec: &AgentSpec) -> Self {
        ToolRouter { base }
    }
}

impl ThauActor for ToolRouter {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        "idle: tool parsing arrives with the tool-calling issue".into()
    }
}

crate::supervised_actor!(ToolRouter);
