//! ImageTool: generates pictures for `generate_image` tool calls (backends arrive with the tool-calling issue).
//!
//! Receives the common messages ([`crate::actors::Ping`], [`crate::actors::Flush`],
//! [`crate::actors::InjectFault`]); runs on a sync arbiter (CPU-heavy work).

use crate::actors::{ActorBase, ThauActor};
use crate::runtime::agents::AgentSpec;

/// The ImageTool actor's state.
pub struct ImageTool {
    base: ActorBase,
}

impl ImageTool {
    pub fn new(base: ActorBase, _spec: &AgentSpec) -> Self {
        ImageTool { base }
    }
}

impl ThauActor for ImageTool {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        "idle: image backends arrive with the tool-calling issue".into()
    }
}

crate::sync_actor!(ImageTool);
