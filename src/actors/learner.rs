//! Learner: trains its own copy of the weights on gaps with replay, checkpoints, and decides growth (training arrives with the model issue).
//!
//! Receives the common messages ([`crate::actors::Ping`], [`crate::actors::Flush`],
//! [`crate::actors::InjectFault`]); runs on a sync arbiter (CPU-heavy work).

use crate::actors::{ActorBase, ThauActor};
use crate::runtime::agents::AgentSpec;

/// The Learner actor's state.
pub struct Learner {
    base: ActorBase,
}

impl Learner {
    pub fn new(base: ActorBase, _spec: &AgentSpec) -> Self {
        Learner { base }
    }
}

impl ThauActor for Learner {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        "idle: training arrives with the model issue".into()
    }
}

crate::sync_actor!(Learner);
