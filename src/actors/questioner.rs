//! Questioner: asks the model questions per age and topic, steered by open gaps (the self-learning loop fills in question generation).
//!
//! Receives the common messages ([`crate::actors::Ping`], [`crate::actors::Flush`],
//! [`crate::actors::InjectFault`]); runs on its own async arbiter under a `Supervisor`.

use crate::actors::{ActorBase, ThauActor};
use crate::runtime::agents::AgentSpec;

/// The Questioner actor's state.
pub struct Questioner {
    base: ActorBase,
}

impl Questioner {
    pub fn new(base: ActorBase, _spec: &AgentSpec) -> Self {
        Questioner { base }
    }
}

impl ThauActor for Questioner {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        "idle: question generation arrives with the self-learning loop".into()
    }
}

crate::supervised_actor!(Questioner);
