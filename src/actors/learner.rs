//! Learner: trains its own copy of the weights on gaps with replay, checkpoints, and
//! decides growth. This part: the growth decision ([`ShouldGrow`]) under the
//! [`GrowthPolicy`] of `agents/learner.toml`; the training loop arrives with the
//! self-learning issue. Runs on a sync arbiter (CPU-heavy work).

use actix::prelude::*;

use crate::actors::{guarded, ActorBase, ActorError, ThauActor};
use crate::model::policy::{Decision, GrowthPolicy};
use crate::runtime::agents::AgentSpec;

/// Should a model at `age` grow now?
#[derive(Message, Debug, Clone)]
#[rtype(result = "Result<Decision, ActorError>")]
pub struct ShouldGrow {
    pub age: u32,
    /// Held-out losses of the evaluations at this age, oldest first.
    pub heldout: Vec<f64>,
    pub examples_seen: u64,
    /// Mean token F1 on the age's held-out probe questions, if measured.
    pub probe_accuracy: Option<f64>,
}

/// The Learner actor's state.
pub struct Learner {
    base: ActorBase,
    policy: GrowthPolicy,
}

impl Learner {
    pub fn new(base: ActorBase, spec: &AgentSpec) -> Self {
        // Validated by `Runtime::start`, so the fallback only guards direct construction.
        let policy = spec
            .params
            .clone()
            .try_into::<GrowthPolicy>()
            .unwrap_or_default();
        Learner { base, policy }
    }
}

impl ThauActor for Learner {
    fn base(&self) -> &ActorBase {
        &self.base
    }
    fn note(&self) -> String {
        format!(
            "growth policy: plateau over {} evaluations (< {} relative); training arrives with the self-learning loop",
            self.policy.plateau_window, self.policy.plateau_threshold
        )
    }
}

crate::sync_actor!(Learner);

impl Handler<ShouldGrow> for Learner {
    type Result = Result<Decision, ActorError>;
    fn handle(&mut self, m: ShouldGrow, ctx: &mut SyncContext<Self>) -> Self::Result {
        guarded(self, ctx, "ShouldGrow", |me| {
            Ok(me
                .policy
                .decide(m.age, &m.heldout, m.examples_seen, m.probe_accuracy))
        })
    }
}
