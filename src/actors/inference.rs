//! Inference: the one owner of the THAU model; serves [`Generate`] requests from the other
//! actors and the front ends. Runs on a sync arbiter: decoding is CPU-heavy and must never
//! block the async arbiters that serve I/O.

use actix::prelude::*;
use serde::Serialize;

use crate::actors::{guarded, ActorBase, ActorError, ThauActor};
use crate::runtime::agents::AgentSpec;

/// Generate a continuation of `prompt`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Generated, ActorError>")]
pub struct Generate {
    pub prompt: String,
    pub max_new_tokens: Option<usize>,
}

/// The reply to [`Generate`].
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    pub text: String,
    pub tokens: usize,
}

/// The Inference actor's state: the loaded model, if any.
pub struct Inference {
    base: ActorBase,
}

impl Inference {
    pub fn new(base: ActorBase, _spec: &AgentSpec) -> Self {
        Inference { base }
    }
}

impl ThauActor for Inference {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        "no model loaded".into()
    }
}

crate::sync_actor!(Inference);

impl Handler<Generate> for Inference {
    type Result = Result<Generated, ActorError>;
    fn handle(&mut self, _msg: Generate, ctx: &mut SyncContext<Self>) -> Self::Result {
        guarded(self, ctx, "Generate", |_| {
            Err(ActorError::Unavailable(
                "no model loaded: train one with `thau train`".into(),
            ))
        })
    }
}
