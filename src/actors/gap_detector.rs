//! GapDetector: measures what the model does not know from its own per-token loss (scoring arrives with the self-learning loop).
//!
//! Receives the common messages ([`crate::actors::Ping`], [`crate::actors::Flush`],
//! [`crate::actors::InjectFault`]); runs on its own async arbiter under a `Supervisor`.

use crate::actors::{ActorBase, ThauActor};
use crate::runtime::agents::AgentSpec;

/// The GapDetector actor's state.
pub struct GapDetector {
    base: ActorBase,
}

impl GapDetector {
    pub fn new(base: ActorBase, _spec: &AgentSpec) -> Self {
        GapDetector { base }
    }
}

impl ThauActor for GapDetector {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        "idle: gap scoring arrives with the self-learning loop".into()
    }
}

crate::supervised_actor!(GapDetector);
