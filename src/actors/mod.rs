//! The actors of THAU and what they share.
//!
//! Every actor embeds an [`ActorBase`] (its name, counters, the event bus) and implements
//! [`ThauActor`]. All of them answer three common messages — [`Ping`] (health),
//! [`Flush`] (save state before shutdown) and [`InjectFault`] (a deliberate panic for
//! supervision tests) — and run every handler through [`guarded`], which turns a panic
//! into an [`ActorError::Panicked`] reply and restarts the actor at the same address
//! (actix's `Supervisor` for async actors, the `SyncArbiter` factory for sync ones).
//!
//! Where a message is defined: a request lives in the module of the actor that handles it
//! (`Score` in `inference`, `LearnItems` in `learner`); a message several actors handle
//! lives here ([`Ping`], [`Flush`], [`InjectFault`], [`ApplyTuning`]). The two
//! notifications that travel back up the learning loop — `Trained` (the Learner finished a
//! round) and `GapsChanged` (the GapDetector's open gaps) — live with the actor that
//! publishes them, so the modules import each other only down the loop's request path
//! (questioner → gap_detector → learner → inference) and never in a cycle. Actors hold a
//! [`Recipient`] of each message they send, not the other actor's address.
//!
//! Asking an actor: `reply("inference", addr.send(m).await)?` turns the two-level answer
//! of `send` ([`Reply`]) into one [`AskError`] naming the actor, which converts into the
//! error type of each front end (`ThauError` here, `ChatError`, the API's `ApiError`).

pub mod episodic_memory;
pub mod gap_detector;
pub mod image_tool;
pub mod inference;
pub mod learner;
pub mod long_term_memory;
pub mod questioner;
pub mod short_term_memory;
pub mod tool_router;
pub mod tuner;

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use crate::error::ThauError;
use crate::learn::tuning::Knob;
use crate::memory::MemoryError;
use crate::runtime::events::{EventBus, EventKind};

/// What an actor answers when a request cannot be served.
#[derive(Debug, Clone, Serialize, thiserror::Error, PartialEq)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum ActorError {
    /// The actor panicked while handling the request; it has been restarted.
    #[error("actor `{actor}` panicked and was restarted: {panic}")]
    Panicked { actor: String, panic: String },
    /// The actor cannot serve this yet (for example: no model loaded).
    #[error("{0}")]
    Unavailable(String),
    /// The request was understood but failed.
    #[error("{0}")]
    Failed(String),
    /// The request itself is invalid.
    #[error("invalid request: {0}")]
    BadRequest(String),
    /// The request names something that does not exist.
    #[error("{0}")]
    NotFound(String),
}

/// Live counters of one actor, shared with the runtime (they survive restarts).
#[derive(Debug, Default)]
pub struct ActorStats {
    pub running: AtomicBool,
    pub handled: AtomicU64,
    pub restarts: AtomicU64,
}

/// What every actor carries: identity, counters, event bus and where to save state.
#[derive(Debug, Clone)]
pub struct ActorBase {
    pub name: &'static str,
    pub stats: Arc<ActorStats>,
    pub events: EventBus,
    /// Directory where the actor saves its state on [`Flush`] (`<home>/runs/actors`).
    pub state_dir: PathBuf,
    /// Mailbox capacity of an async actor.
    pub mailbox: usize,
}

impl ActorBase {
    /// Marks the actor as running and announces it.
    pub fn started(&self) {
        self.stats.running.store(true, Ordering::SeqCst);
        self.events.emit(self.name, EventKind::ActorStarted);
        tracing::info!(actor = self.name, "started");
    }

    pub fn stopped(&self) {
        self.stats.running.store(false, Ordering::SeqCst);
    }
}

/// Behaviour every THAU actor provides on top of its own messages.
pub trait ThauActor {
    fn base(&self) -> &ActorBase;
    /// One line on what the actor is doing, for `thau status`.
    fn note(&self) -> String;
    /// A JSON snapshot of the state worth keeping across runs, saved on [`Flush`].
    fn snapshot(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Drops the state a panic may have left inconsistent (called before a restart).
    fn reset(&mut self) {}
    /// Makes the actor's own store durable (called on [`Flush`], before the snapshot).
    fn flush_state(&mut self) -> Result<(), ActorError> {
        Ok(())
    }
}

/// Health check; every actor answers it.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<Pong, ActorError>")]
pub struct Ping;

/// The answer to [`Ping`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Pong {
    pub actor: String,
    pub handled: u64,
    pub restarts: u64,
    pub note: String,
}

/// Save state now (sent to every actor during graceful shutdown).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), ActorError>")]
pub struct Flush;

/// Panic inside the handler: used by supervision tests and fault-injection drills.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), ActorError>")]
pub struct InjectFault;

/// Set a knob's value (sent by the Tuner to the actor that owns the knob: the Learner,
/// Inference or the GapDetector; each applies it through [`Tunable`]).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), ActorError>")]
pub struct ApplyTuning {
    pub knob: Knob,
    pub value: f64,
}

/// An actor that owns tuning knobs: it states which knobs it applies and how, and
/// [`tunable_actor!`](crate::tunable_actor) gives it the one [`ApplyTuning`] handler.
pub trait Tunable: ThauActor {
    /// How a "has no knob" reply names the actor (`the Learner`, `Inference`).
    const TITLE: &'static str;

    /// Sets `knob` to `value`; [`Tunable::no_knob`] for a knob the actor does not own.
    fn tune(&mut self, knob: Knob, value: f64) -> Result<(), ActorError>;

    /// The reply to a knob this actor does not own.
    fn no_knob(knob: Knob) -> ActorError {
        ActorError::BadRequest(format!("{} has no knob {}", Self::TITLE, knob.name()))
    }
}

/// A request's answer as `send` returns it: the actor's own reply, or the mailbox failing.
pub type Reply<T> = Result<Result<T, ActorError>, MailboxError>;

/// Why asking an actor gave no value; every variant names the actor.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// The actor answered with an error.
    #[error("{actor}: {error}")]
    Actor { actor: String, error: ActorError },
    /// The request never reached the actor, or its answer never came back.
    #[error("{actor} is not answering: {error}")]
    Mailbox { actor: String, error: MailboxError },
    /// No answer within the time the caller allowed ([`ask_within`]).
    #[error("{actor}: no reply within {after:?}")]
    Timeout { actor: String, after: Duration },
}

/// An actor's answer as one result: `reply("inference", addr.send(m).await)?`.
pub fn reply<T>(actor: &str, r: Reply<T>) -> Result<T, AskError> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(error)) => Err(AskError::Actor {
            actor: actor.to_string(),
            error,
        }),
        Err(error) => Err(AskError::Mailbox {
            actor: actor.to_string(),
            error,
        }),
    }
}

/// [`reply`] to a request that must be answered within `within`.
pub async fn ask_within<T>(
    actor: &str,
    within: Duration,
    request: impl Future<Output = Reply<T>>,
) -> Result<T, AskError> {
    match tokio::time::timeout(within, request).await {
        Ok(r) => reply(actor, r),
        Err(_) => Err(AskError::Timeout {
            actor: actor.to_string(),
            after: within,
        }),
    }
}

/// For the commands: a bad request is the user's mistake ([`ThauError::Invalid`], the
/// actor's message alone); anything else is that actor's failure.
impl From<AskError> for ThauError {
    fn from(e: AskError) -> Self {
        match e {
            AskError::Actor {
                error: ActorError::BadRequest(m),
                ..
            } => ThauError::Invalid(m),
            AskError::Actor { actor, error } => ThauError::Actor {
                actor,
                message: error.to_string(),
            },
            AskError::Mailbox { actor, error } => ThauError::Actor {
                actor,
                message: error.to_string(),
            },
            AskError::Timeout { actor, after } => ThauError::Actor {
                actor,
                message: format!("no reply within {after:?}"),
            },
        }
    }
}

/// Turns a store error into a memory actor's reply: bad input stays a bad request.
pub(crate) fn memory_reply(e: MemoryError) -> ActorError {
    if matches!(e, MemoryError::NotFound { .. }) {
        ActorError::NotFound(e.to_string())
    } else if e.is_user_error() {
        ActorError::BadRequest(e.to_string())
    } else {
        ActorError::Failed(e.to_string())
    }
}

/// Runs one handler body under supervision: counts and traces the message, publishes it on
/// the event bus, and if the body panics, reports the panic, asks the context to stop (the
/// supervisor then restarts the actor with fresh state at the same address) and answers
/// [`ActorError::Panicked`].
pub fn guarded<A, C, R>(
    act: &mut A,
    ctx: &mut C,
    message: &'static str,
    body: impl FnOnce(&mut A) -> Result<R, ActorError>,
) -> Result<R, ActorError>
where
    A: ThauActor,
    C: ActorContext,
{
    let base = act.base().clone();
    let _span = tracing::info_span!("actor", actor = base.name, message).entered();
    base.stats.handled.fetch_add(1, Ordering::Relaxed);
    base.events.emit(
        base.name,
        EventKind::Message {
            message: message.to_string(),
            from: None,
        },
    );
    match catch_unwind(AssertUnwindSafe(|| body(act))) {
        Ok(r) => r,
        Err(payload) => {
            let panic = panic_text(payload.as_ref());
            let restarts = base.stats.restarts.fetch_add(1, Ordering::SeqCst) + 1;
            tracing::error!(actor = base.name, message, %panic, restarts, "actor panicked; restarting");
            base.events.emit(
                base.name,
                EventKind::ActorRestarted {
                    message: message.to_string(),
                    panic: panic.clone(),
                    restarts,
                },
            );
            ctx.stop();
            Err(ActorError::Panicked {
                actor: base.name.to_string(),
                panic,
            })
        }
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

/// Answers [`Ping`] from the actor's counters.
pub fn pong<A: ThauActor>(act: &A) -> Pong {
    let s = &act.base().stats;
    Pong {
        actor: act.base().name.to_string(),
        handled: s.handled.load(Ordering::Relaxed),
        restarts: s.restarts.load(Ordering::Relaxed),
        note: act.note(),
    }
}

/// Saves the actor's snapshot to `<state_dir>/<name>.json` (atomically).
pub fn save_snapshot<A: ThauActor>(act: &A) -> Result<(), ActorError> {
    let base = act.base();
    let doc = serde_json::json!({
        "actor": base.name,
        "saved_at": chrono::Utc::now(),
        "handled": base.stats.handled.load(Ordering::Relaxed),
        "restarts": base.stats.restarts.load(Ordering::Relaxed),
        "state": act.snapshot(),
    });
    let path = base.state_dir.join(format!("{}.json", base.name));
    let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| ActorError::Failed(e.to_string()))?;
    crate::fsutil::atomic_write(&path, &bytes).map_err(|e| ActorError::Failed(e.to_string()))?;
    base.events.emit(base.name, EventKind::ActorFlushed);
    Ok(())
}

/// Implements the three common messages ([`Ping`], [`Flush`], [`InjectFault`]) for an
/// actor type whose context is `$ctx` (`Context<Self>` or `SyncContext<Self>`).
#[macro_export]
macro_rules! common_handlers {
    ($actor:ty, $ctx:ty) => {
        impl actix::Handler<$crate::actors::Ping> for $actor {
            type Result = Result<$crate::actors::Pong, $crate::actors::ActorError>;
            fn handle(&mut self, _: $crate::actors::Ping, ctx: &mut $ctx) -> Self::Result {
                $crate::actors::guarded(self, ctx, "Ping", |a| Ok($crate::actors::pong(a)))
            }
        }
        impl actix::Handler<$crate::actors::Flush> for $actor {
            type Result = Result<(), $crate::actors::ActorError>;
            fn handle(&mut self, _: $crate::actors::Flush, ctx: &mut $ctx) -> Self::Result {
                $crate::actors::guarded(self, ctx, "Flush", |a| {
                    $crate::actors::ThauActor::flush_state(a)?;
                    $crate::actors::save_snapshot(a)
                })
            }
        }
        impl actix::Handler<$crate::actors::InjectFault> for $actor {
            type Result = Result<(), $crate::actors::ActorError>;
            fn handle(&mut self, _: $crate::actors::InjectFault, ctx: &mut $ctx) -> Self::Result {
                $crate::actors::guarded(self, ctx, "InjectFault", |_| -> Result<(), _> {
                    panic!("injected fault")
                })
            }
        }
    };
}

/// Makes `$actor` an async actor on an actix `Context`, restarted in place by actix's
/// `Supervisor` after a panic (its [`ThauActor::reset`] runs first), with the common messages.
#[macro_export]
macro_rules! supervised_actor {
    ($actor:ty) => {
        impl actix::Actor for $actor {
            type Context = actix::Context<Self>;
            fn started(&mut self, ctx: &mut Self::Context) {
                let base = $crate::actors::ThauActor::base(self);
                ctx.set_mailbox_capacity(base.mailbox);
                base.started();
            }
            fn stopped(&mut self, _: &mut Self::Context) {
                $crate::actors::ThauActor::base(self).stopped();
            }
        }
        impl actix::Supervised for $actor {
            fn restarting(&mut self, _: &mut Self::Context) {
                $crate::actors::ThauActor::reset(self);
            }
        }
        $crate::common_handlers!($actor, actix::Context<$actor>);
    };
}

/// Makes `$actor` a sync-arbiter actor (CPU-heavy work on its own threads); after a panic
/// the arbiter builds a fresh one from the factory the runtime gave it.
#[macro_export]
macro_rules! sync_actor {
    ($actor:ty) => {
        impl actix::Actor for $actor {
            type Context = actix::SyncContext<Self>;
            fn started(&mut self, _: &mut Self::Context) {
                $crate::actors::ThauActor::base(self).started();
            }
            fn stopped(&mut self, _: &mut Self::Context) {
                $crate::actors::ThauActor::base(self).stopped();
            }
        }
        $crate::common_handlers!($actor, actix::SyncContext<$actor>);
    };
}

/// Gives a [`Tunable`] actor its [`ApplyTuning`] handler (under [`guarded`], like every
/// other handler), for either kind of context.
#[macro_export]
macro_rules! tunable_actor {
    ($actor:ty) => {
        impl actix::Handler<$crate::actors::ApplyTuning> for $actor {
            type Result = Result<(), $crate::actors::ActorError>;
            fn handle(
                &mut self,
                m: $crate::actors::ApplyTuning,
                ctx: &mut <Self as actix::Actor>::Context,
            ) -> Self::Result {
                $crate::actors::guarded(self, ctx, "ApplyTuning", |a| {
                    $crate::actors::Tunable::tune(a, m.knob, m.value)
                })
            }
        }
    };
}
