//! The actor runtime: [`Runtime`] starts the actors configured in `agents/*.toml`, hands
//! out their addresses ([`Addrs`]), reports their health and shuts them down gracefully.
//!
//! Async actors each get their own arbiter under an actix `Supervisor`; CPU-heavy actors
//! (inference, learner, image tool) run on `SyncArbiter` threads. A panic inside any
//! handler is caught by [`crate::actors::guarded`]: the caller gets an error, the actor is
//! rebuilt at the same address, the restart is logged and published on the [`EventBus`].

pub mod agents;
pub mod events;
mod start;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use crate::actors::{
    ask_within, episodic_memory::EpisodicMemory, gap_detector::GapDetector, image_tool::ImageTool,
    inference::Inference, learner::Learner, long_term_memory::LongTermMemory,
    questioner::Questioner, reply, short_term_memory::ShortTermMemory, tool_router::ToolRouter,
    tuner::Tuner, ActorBase, ActorError, ActorStats, AskError, Flush, InjectFault, Ping, Pong,
    Reply,
};
use crate::config::ThauConfig;
use crate::error::{Result, ThauError};
use crate::home::Home;
use agents::{load_agents, ActorKind, AgentSpec};
use events::EventBus;

/// How long a health check or a flush may take before the actor is reported unresponsive.
pub const ACTOR_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Addresses of the running actors (`None` when disabled in `agents/`).
#[derive(Clone, Default)]
pub struct Addrs {
    pub inference: Option<Addr<Inference>>,
    pub learner: Option<Addr<Learner>>,
    pub image_tool: Option<Addr<ImageTool>>,
    pub questioner: Option<Addr<Questioner>>,
    pub gap_detector: Option<Addr<GapDetector>>,
    pub tool_router: Option<Addr<ToolRouter>>,
    pub short_term_memory: Option<Addr<ShortTermMemory>>,
    pub episodic_memory: Option<Addr<EpisodicMemory>>,
    pub long_term_memory: Option<Addr<LongTermMemory>>,
    pub tuner: Option<Addr<Tuner>>,
}

/// What the runtime keeps for every running actor: its counters and the type-erased
/// handles of its common messages.
struct Handle {
    stats: Arc<ActorStats>,
    common: start::Common,
}

/// Health of one actor, as `thau status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ActorStatus {
    pub name: String,
    pub enabled: bool,
    pub running: bool,
    pub restarts: u64,
    pub handled: u64,
    pub note: String,
}

/// The running actor system.
pub struct Runtime {
    pub home: Home,
    pub config: ThauConfig,
    pub events: EventBus,
    pub addrs: Addrs,
    specs: BTreeMap<ActorKind, AgentSpec>,
    /// `agents/inference.toml`'s sampling settings, read once ([`Runtime::sampling`]).
    sampling: crate::model::generate::SamplingParams,
    handles: BTreeMap<ActorKind, Handle>,
    /// The async actors' arbiters, stopped (dropping the actors and closing their stores)
    /// by [`Runtime::shutdown`].
    arbiters: Vec<Arbiter>,
    /// What the Inference threads share (weights swapped in, the decode thread).
    inference_cell: Option<Arc<crate::actors::inference::WeightsCell>>,
}

/// The actors' settings for a data directory: the configured agents directory, else
/// `<home>/agents`, else the built-in defaults.
pub fn agent_specs(home: &Home, config: &ThauConfig) -> Result<BTreeMap<ActorKind, AgentSpec>> {
    let dir = if !config.paths.agents_dir.is_empty() {
        Some(std::path::PathBuf::from(&config.paths.agents_dir))
    } else if home.agents().is_dir() {
        Some(home.agents())
    } else {
        None
    };
    load_agents(dir.as_deref())
}

impl Runtime {
    /// Starts every enabled actor of the agents directory (the configured one, else
    /// `<home>/agents`, else the built-in defaults). Must run inside an actix `System`.
    pub fn start(home: Home, config: ThauConfig) -> Result<Runtime> {
        let specs = agent_specs(&home, &config)?;
        // Every actor's own parameters are read first, so a typo fails the start, not a
        // request (disabled actors' files too, but the Tuner's only when it runs).
        for (&kind, spec) in &specs {
            start::check_params(kind, spec, &specs)?;
        }
        let events = EventBus::new();
        let mut rt = Runtime {
            home,
            config,
            events,
            addrs: Addrs::default(),
            sampling: specs
                .get(&ActorKind::Inference)
                .and_then(|s| s.params.clone().try_into().ok())
                .unwrap_or_default(),
            specs,
            handles: BTreeMap::new(),
            arbiters: Vec::new(),
            inference_cell: None,
        };
        // In ActorKind order: an actor starts after those it sends to (see `start`).
        for (kind, spec) in rt.specs.clone().into_iter().filter(|(_, s)| s.enabled) {
            let stats = Arc::new(ActorStats::default());
            let base = ActorBase {
                name: kind.name(),
                stats: stats.clone(),
                events: rt.events.clone(),
                state_dir: rt.home.runs().join("actors"),
                mailbox: spec.mailbox,
            };
            let common = start::start_fn(kind)(&mut rt, base, spec)?;
            rt.handles.insert(kind, Handle { stats, common });
        }
        start::connect_loop(&rt);
        Ok(rt)
    }

    /// The batching decode thread's counters (steps, rows, prefills), when Inference runs.
    pub fn decode_stats(&self) -> Option<crate::model::decode::batch::EngineStats> {
        self.inference_cell.as_ref()?.engine_stats()
    }

    /// The sampling settings of `agents/inference.toml` (the code's defaults for those it
    /// leaves out): what a request's own settings (a temperature, a token budget) are laid
    /// over, so that they do not drop the configured ones (`copy_bias`, `span_bias`…).
    /// Read when the runtime started, where a bad file already failed the start.
    pub fn sampling(&self) -> crate::model::generate::SamplingParams {
        self.sampling.clone()
    }

    /// Names of the running actors.
    pub fn running(&self) -> Vec<&'static str> {
        self.handles.keys().map(|k| k.name()).collect()
    }

    fn handle(&self, name: &str) -> Result<&Handle> {
        ActorKind::from_name(name)
            .and_then(|k| self.handles.get(&k))
            .ok_or_else(|| ThauError::Invalid(format!("no running actor named `{name}`")))
    }

    /// Sends [`Ping`] to one actor.
    pub async fn ping(&self, name: &str) -> Result<Pong> {
        let h = self.handle(name)?;
        ask_within(name, ACTOR_REPLY_TIMEOUT, h.common.ping.send(Ping))
            .await
            .map_err(unanswered)
    }

    /// Sends [`InjectFault`] to one actor; the actor panics and is restarted.
    pub async fn inject_fault(&self, name: &str) -> Result<()> {
        let h = self.handle(name)?;
        ask_within(name, ACTOR_REPLY_TIMEOUT, h.common.fault.send(InjectFault))
            .await
            .map_err(unanswered)
    }

    /// Recall from every running memory actor, merged into one ranked list
    /// ([`crate::memory::recall::merge`]). A bad query is an error; a store that is
    /// unavailable is left out (and logged) so the others still answer.
    pub async fn recall(
        &self,
        query: &str,
        limit: usize,
    ) -> Result<Vec<crate::memory::recall::RecallHit>> {
        use crate::actors::episodic_memory::SearchEpisodes;
        use crate::actors::long_term_memory::RecallLong;
        use crate::actors::short_term_memory::SearchShort;
        use crate::memory::recall::RecallHit;
        fn take<T>(actor: &str, r: Reply<Vec<T>>) -> Result<Vec<T>> {
            match reply(actor, r) {
                Err(AskError::Actor { error, .. })
                    if !matches!(error, ActorError::BadRequest(_)) =>
                {
                    tracing::warn!(actor, error = %error, "recall: store left out");
                    Ok(Vec::new())
                }
                r => Ok(r?),
            }
        }
        let mut lists = Vec::new();
        if let Some(a) = &self.addrs.short_term_memory {
            let r = a
                .send(SearchShort {
                    query: query.into(),
                    limit,
                })
                .await;
            lists.push(take("short_term_memory", r)?);
        }
        if let Some(a) = &self.addrs.episodic_memory {
            let r = a
                .send(SearchEpisodes {
                    query: query.into(),
                    filter: Default::default(),
                    limit,
                })
                .await;
            lists.push(
                take("episodic_memory", r)?
                    .into_iter()
                    .map(RecallHit::from_episode)
                    .collect(),
            );
        }
        if let Some(a) = &self.addrs.long_term_memory {
            let r = a
                .send(RecallLong {
                    query: query.into(),
                    limit,
                    filter: Default::default(),
                })
                .await;
            lists.push(
                take("long_term_memory", r)?
                    .into_iter()
                    .map(RecallHit::from_point)
                    .collect(),
            );
        }
        Ok(crate::memory::recall::merge(lists, limit))
    }

    /// Health of every configured actor, pinging the running ones.
    pub async fn status(&self) -> Vec<ActorStatus> {
        let mut out = Vec::new();
        for kind in ActorKind::ALL {
            let Some(spec) = self.specs.get(&kind) else {
                continue;
            };
            let mut st = ActorStatus {
                name: kind.name().into(),
                enabled: spec.enabled,
                running: false,
                restarts: 0,
                handled: 0,
                note: "disabled in agents/".into(),
            };
            if let Some(h) = self.handles.get(&kind) {
                st.restarts = h.stats.restarts.load(Ordering::Relaxed);
                match self.ping(kind.name()).await {
                    Ok(p) => {
                        st.running = true;
                        st.handled = p.handled;
                        st.note = p.note;
                    }
                    Err(e) => st.note = format!("not answering: {e}"),
                }
            }
            out.push(st);
        }
        out
    }

    /// Graceful shutdown: every actor saves its state ([`Flush`]), then the actor system
    /// stops. Errors are collected, not fatal: every actor gets its chance to flush.
    pub async fn shutdown(mut self) -> Vec<ThauError> {
        let mut errors = Vec::new();
        for (kind, h) in &self.handles {
            let flushed = ask_within(kind.name(), ACTOR_REPLY_TIMEOUT, h.common.flush.send(Flush));
            if let Err(e) = flushed.await.map_err(unanswered) {
                tracing::warn!(actor = kind.name(), error = %e, "flush failed");
                errors.push(e);
            }
        }
        // Stop the async actors' threads and wait for them, so their stores (the vector
        // shard, the short-term file) are closed and unlocked when this returns.
        let arbiters = std::mem::take(&mut self.arbiters);
        for a in &arbiters {
            a.stop();
        }
        let joined = tokio::task::spawn_blocking(move || {
            for a in arbiters {
                let _ = a.join();
            }
        });
        if tokio::time::timeout(ACTOR_REPLY_TIMEOUT, joined)
            .await
            .is_err()
        {
            tracing::warn!("some actor threads did not stop in time");
        }
        tracing::info!("runtime stopped");
        errors
    }

    /// Waits for Ctrl-C or SIGTERM.
    pub async fn wait_for_signal() {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// How `thau status` and shutdown report an actor that failed a health check, a fault
/// drill or a flush: as that actor's failure (a bad request too, unlike the commands'
/// `From<AskError>`), an undelivered message with a `mailbox:` prefix.
fn unanswered(e: AskError) -> ThauError {
    match e {
        AskError::Actor { actor, error } => ThauError::Actor {
            actor,
            message: error.to_string(),
        },
        AskError::Mailbox { actor, error } => ThauError::Actor {
            actor,
            message: format!("mailbox: {error}"),
        },
        timeout @ AskError::Timeout { .. } => timeout.into(),
    }
}
